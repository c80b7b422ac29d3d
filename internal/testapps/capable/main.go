// Command capable exercises the protocol capabilities. {"op": "deadline"}
// answers the time its handler has ({"n": milliseconds}, -1 without a
// deadline); {"op": "block"} waits until its request is cancelled;
// {"op": "cancelled"} answers how many requests were cancelled so far, and
// {"op": "cancelled_at"} the Unix time in nanoseconds of the last one.
package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp"
)

type request struct {
	Op string `msgpack:"op"`
}

type response struct {
	N int64 `msgpack:"n"`
}

func main() {
	var cancelled, cancelledAt atomic.Int64
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, req request) (response, error) {
		switch req.Op {
		case "deadline":
			dl, ok := ctx.Deadline()
			if !ok {
				return response{N: -1}, nil
			}
			return response{N: time.Until(dl).Milliseconds()}, nil
		case "block":
			<-ctx.Done()
			cancelledAt.Store(time.Now().UnixNano())
			cancelled.Add(1)
			return response{}, ctx.Err()
		case "cancelled":
			return response{N: cancelled.Load()}, nil
		case "cancelled_at":
			return response{N: cancelledAt.Load()}, nil
		}
		return response{}, &ociapp.Error{Type: "UnknownOp", Message: req.Op}
	}))
}
