// Command crasher is a test application that exits in the middle of a
// request when asked to, failing every request in flight on it.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct {
	Crash  bool `msgpack:"crash,omitempty"`
	Millis int  `msgpack:"millis,omitempty"`
}

type response struct {
	Hostname string `msgpack:"hostname"`
}

func main() {
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		host, _ := os.Hostname()
		if req.Crash {
			time.Sleep(time.Duration(req.Millis) * time.Millisecond)
			fmt.Fprintln(os.Stderr, "crasher: crashing as asked")
			os.Exit(3)
		}
		select {
		case <-time.After(time.Duration(req.Millis) * time.Millisecond):
			return response{Hostname: host}, nil
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	}))
}
