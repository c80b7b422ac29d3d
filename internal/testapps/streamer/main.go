// Command streamer exercises the stream capability. {"op": "", "count": N,
// "size": S} sends N items {"i": 0..N-1, "pad": S times "x"} (count -1:
// until cancelled); with "fail_at": K (K >= 0; absent or -1: never) it
// fails with StreamFailed "failed at K" after K items instead of going on.
// {"op": "produced"} sends one item whose i is the number of items the
// current or last stream produced (counted just before each send), and
// {"op": "cancelled"} one whose i is the number of streams that ended
// because their request was cancelled, timed out or lost its connection.
package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/ociapp/ociapp"
)

type request struct {
	Op     string `msgpack:"op,omitempty"`
	Count  int    `msgpack:"count,omitempty"`
	Size   int    `msgpack:"size,omitempty"`
	FailAt *int   `msgpack:"fail_at,omitempty"`
}

type item struct {
	I   int64  `msgpack:"i"`
	Pad string `msgpack:"pad"`
}

func main() {
	var produced, cancelled atomic.Int64
	ociapp.MainStream(ociapp.StreamFunc[request, item](func(ctx context.Context, req request, send func(item) error) error {
		switch req.Op {
		case "produced":
			return send(item{I: produced.Load()})
		case "cancelled":
			return send(item{I: cancelled.Load()})
		case "":
		default:
			return &ociapp.Error{Type: "UnknownOp", Message: req.Op}
		}
		if req.Count < -1 || req.Size < 0 {
			return &ociapp.Error{Type: "BadRequest", Message: fmt.Sprintf("count %d, size %d: count must be -1 (forever) or more, size 0 or more", req.Count, req.Size)}
		}
		failAt := -1
		if req.FailAt != nil {
			failAt = *req.FailAt
		}
		pad := strings.Repeat("x", req.Size)
		produced.Store(0)
		i := 0
		for ; (req.Count == -1 || i < req.Count) && i != failAt; i++ {
			produced.Add(1)
			if err := send(item{I: int64(i), Pad: pad}); err != nil {
				if ctx.Err() != nil {
					cancelled.Add(1)
				}
				return err
			}
		}
		if i == failAt {
			return &ociapp.Error{Type: "StreamFailed", Message: fmt.Sprintf("failed at %d", failAt)}
		}
		return nil
	}))
}
