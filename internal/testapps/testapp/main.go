// Command testapp is the daemon tests' application. By default it echoes
// {"value": ...}; the "op" field makes it sleep, crash or fail instead, and
// run as "testapp exitstart" it exits before listening, like an app whose
// import fails.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct {
	Op     string `msgpack:"op,omitempty"` // "" (echo), "sleep", "crash" or "fail"
	Value  string `msgpack:"value,omitempty"`
	Millis int    `msgpack:"millis,omitempty"`
}

type response struct {
	Value string `msgpack:"value"`
}

func handle(ctx context.Context, req request) (response, error) {
	switch req.Op {
	case "sleep":
		select {
		case <-time.After(time.Duration(req.Millis) * time.Millisecond):
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	case "crash":
		fmt.Fprintln(os.Stderr, "app: crashing as asked")
		os.Exit(3)
	case "fail":
		return response{}, &ociapp.Error{Type: "Boom", Message: req.Value, Details: map[string]any{"reason": "asked", "millis": req.Millis}}
	}
	return response{Value: req.Value}, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exitstart" {
		fmt.Fprintln(os.Stderr, "ImportError: cannot import name 'app' from 'exitstart'")
		os.Exit(3)
	}
	ociapp.Main(ociapp.Func[request, response](handle))
}
