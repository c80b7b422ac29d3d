package daemontest

import (
	"context"
	"iter"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/internal/mpwire"
)

// Producer is a runtime's stream for a Runner's StreamFn: it yields n
// items {"i": i, "pad": size bytes} (forever when n < 0), then fails with
// err if set, and counts the items it yielded. It serves one stream.
type Producer struct {
	n    int
	size int
	err  error

	pulled  atomic.Int64
	stopped chan struct{} // closed when the iteration returns
}

// NewProducer returns a producer of n items of size bytes of padding,
// ending with err.
func NewProducer(n, size int, err error) *Producer {
	return &Producer{n: n, size: size, err: err, stopped: make(chan struct{})}
}

func (p *Producer) item(i int) []byte {
	b := mpwire.AppendMapHeader(nil, 2)
	b = mpwire.AppendInt(mpwire.AppendStr(b, "i"), int64(i))
	return mpwire.AppendStr(mpwire.AppendStr(b, "pad"), strings.Repeat("x", p.size))
}

// Stream is the StreamFn: it yields the items until the consumer stops
// or ctx ends, whose error is then the last result.
func (p *Producer) Stream(ctx context.Context, _ []byte) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		defer close(p.stopped)
		for i := 0; p.n < 0 || i < p.n; i++ {
			if ctx.Err() != nil {
				yield(nil, ctx.Err())
				return
			}
			p.pulled.Add(1)
			if !yield(p.item(i), nil) {
				return
			}
		}
		if p.err != nil {
			yield(nil, p.err)
		}
	}
}

// Pulled is how many items the producer has yielded so far.
func (p *Producer) Pulled() int64 { return p.pulled.Load() }

// WaitStopped waits for the producer's iteration to return.
func (p *Producer) WaitStopped(tb testing.TB) {
	tb.Helper()
	select {
	case <-p.stopped:
	case <-time.After(10 * time.Second):
		tb.Fatalf("the producer still runs after %d items", p.pulled.Load())
	}
}

// WaitPulled polls until the producer has yielded n items, and fails if
// it yields more.
func (p *Producer) WaitPulled(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.pulled.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := p.pulled.Load(); got != n {
		tb.Fatalf("the producer yielded %d items, want %d", got, n)
	}
}
