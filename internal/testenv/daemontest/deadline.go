package daemontest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// Deadlines is a stand-in runtime's requests that report the deadline of
// the context the daemon runs them under: {"left_ms": ms}, -1 without one.
// Asked {"op": "wait"}, a request waits for its context to end, sends how
// it ended on Ended (when set) and fails as the runtime does; asked
// {"op": "own timeout"}, it fails with the runtime's own request timeout,
// sooner than the caller's.
type Deadlines struct {
	Ended chan<- error
	calls atomic.Int64
}

// Runner returns a Runner answering with d.
func (d *Deadlines) Runner() *Runner { return &Runner{Fn: d.execute} }

// Calls returns how many requests ran.
func (d *Deadlines) Calls() int64 { return d.calls.Load() }

func (d *Deadlines) execute(ctx context.Context, p []byte) ([]byte, error) {
	d.calls.Add(1)
	m, err := protocol.DecodePayload(p)
	if err != nil {
		return nil, err
	}
	switch m["op"] {
	case "wait":
		<-ctx.Done()
		if d.Ended != nil {
			d.Ended <- ctx.Err()
		}
		return nil, fmt.Errorf("executing fake: %w", ctx.Err())
	case "own timeout":
		return nil, &runtime.RequestTimeoutError{Artifact: "fake 1.0", Timeout: time.Millisecond}
	}
	left := int64(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl).Milliseconds()
	}
	return protocol.EncodePayload(map[string]any{"left_ms": left})
}

// Int returns an integer as msgpack decoding gives it (the smallest type
// that holds it), failing tb for anything else.
func Int(tb testing.TB, v any) int64 {
	tb.Helper()
	switch v := v.(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case int64:
		return v
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	}
	tb.Fatalf("%v (%T) is not an integer", v, v)
	return 0
}
