// Package flow is the credit-based flow control of streamed responses
// (docs/protocol.md, stream): a sender spends a unit of credit per item
// (Credit), a receiver holds what it received until its consumer takes it
// and grants the credit back (Window).
package flow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// ErrStopped is what Credit.Take returns when its stop channel closes
// first: no credit can come any more.
var ErrStopped = errors.New("no more credit can come")

// Credit is a sender's allowance of items. The zero value holds none.
type Credit struct {
	mu   sync.Mutex
	n    uint64
	more chan struct{} // a token wakes a Take waiting for credit
}

// NewCredit returns an allowance of n items.
func NewCredit(n uint64) *Credit { return &Credit{n: n, more: make(chan struct{}, 1)} }

// Add grants n more items. Credits add up; they do not wrap.
func (c *Credit) Add(n uint64) {
	c.mu.Lock()
	c.n += n
	if c.n < n {
		c.n = math.MaxUint64
	}
	c.mu.Unlock()
	c.wake()
}

func (c *Credit) wake() {
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// Take uses one unit of credit, waiting for it until ctx ends (its error)
// or stop closes (ErrStopped); a nil stop never closes.
func (c *Credit) Take(ctx context.Context, stop <-chan struct{}) error {
	for {
		c.mu.Lock()
		if c.n > 0 {
			c.n--
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.more:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrStopped
		}
	}
}

// Window is a receiver's side of a stream: the items received under the
// credit it granted and not yet taken, at most its size. Its consumer
// takes them with Next, which says when to grant credit back.
type Window struct {
	size int

	mu     sync.Mutex
	items  [][]byte
	bytes  int
	credit int   // items the sender may still send
	taken  int   // items taken and not yet granted back
	end    error // why the stream ended (io.EOF after its last item); nil while it runs
	ready  chan struct{}
}

// NewWindow returns a window of size items, all granted as the initial
// credit.
func NewWindow(size int) *Window {
	return &Window{size: size, credit: size, ready: make(chan struct{}, 1)}
}

// Receive adds an item the sender sent under credit. An item beyond the
// credit granted is an error: the sender broke the protocol.
func (w *Window) Receive(item []byte) error {
	w.mu.Lock()
	if w.credit == 0 {
		w.mu.Unlock()
		return fmt.Errorf("an item beyond the credit of %d it was granted", w.size)
	}
	w.credit--
	w.items = append(w.items, item)
	w.bytes += len(item)
	w.mu.Unlock()
	w.signal()
	return nil
}

// Last ends the stream with item as its last item, sent without credit:
// the one response of a handler that does not stream.
func (w *Window) Last(item []byte) {
	w.mu.Lock()
	if w.end == nil {
		w.items = append(w.items, item)
		w.bytes += len(item)
	}
	w.mu.Unlock()
	w.Finish(io.EOF)
}

// Finish records why the stream ended (io.EOF for a stream that ended
// after its last item, or its error), unless it has ended, keeping the
// items received for Next. It reports whether it ended the stream.
func (w *Window) Finish(end error) bool {
	w.mu.Lock()
	first := w.end == nil
	if first {
		w.end = end
	}
	w.mu.Unlock()
	w.signal()
	return first
}

// Abort is Finish dropping the items not yet taken: the consumer gave up.
func (w *Window) Abort(end error) bool {
	w.mu.Lock()
	first := w.end == nil
	if first {
		w.end = end
		w.items, w.bytes = nil, 0
	}
	w.mu.Unlock()
	w.signal()
	return first
}

// Next returns the next item, waiting for it until ctx ends. grant, when
// positive, is credit the caller must send back to the sender: taken items
// are granted back in half windows, so a steady stream costs one credit
// message per half window. After the items, Next returns the stream's end
// (io.EOF for a stream that ended after its last item); when ctx ends
// first, ctx's error.
func (w *Window) Next(ctx context.Context) (item []byte, grant int, err error) {
	for {
		w.mu.Lock()
		if len(w.items) > 0 {
			item := w.items[0]
			w.items[0] = nil
			w.items = w.items[1:]
			w.bytes -= len(item)
			if w.end == nil {
				w.taken++
				if w.taken >= max(w.size/2, 1) {
					grant, w.taken = w.taken, 0
					w.credit += grant
				}
			}
			w.mu.Unlock()
			return item, grant, nil
		}
		end := w.end
		w.mu.Unlock()
		if end != nil {
			return nil, 0, end
		}
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Wait waits until an item is there or the stream has ended, and returns
// the stream's error if it ended before any item (nil if it ended after
// its last item), or ctx's.
func (w *Window) Wait(ctx context.Context) error {
	for {
		w.mu.Lock()
		has, end := len(w.items) > 0, w.end
		w.mu.Unlock()
		switch {
		case has:
			return nil
		case errors.Is(end, io.EOF):
			return nil
		case end != nil:
			return end
		}
		select {
		case <-w.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Buffered returns the items received and not yet taken, and their total
// size in bytes.
func (w *Window) Buffered() (items, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.items), w.bytes
}

func (w *Window) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}
