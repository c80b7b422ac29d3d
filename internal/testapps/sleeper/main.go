// Command sleeper is a test application that sleeps as long as it is told
// before answering, to run past request timeouts.
package main

import (
	"context"
	"os"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct {
	Millis int `msgpack:"millis,omitempty"`
}

type response struct {
	Slept    int    `msgpack:"slept"`
	Hostname string `msgpack:"hostname"`
}

func main() {
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		host, _ := os.Hostname()
		select {
		case <-time.After(time.Duration(req.Millis) * time.Millisecond):
			return response{Slept: req.Millis, Hostname: host}, nil
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	}))
}
