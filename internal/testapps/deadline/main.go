// Command deadline answers every request with the time its handler has:
// {"left_ms": N}, or -1 when the request carries no deadline.
package main

import (
	"context"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct{}

type response struct {
	LeftMS int64 `msgpack:"left_ms"`
}

func main() {
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, _ request) (response, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return response{LeftMS: -1}, nil
		}
		return response{LeftMS: time.Until(dl).Milliseconds()}, nil
	}))
}
