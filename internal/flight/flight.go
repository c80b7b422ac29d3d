// Package flight coalesces concurrent calls for one key into one call.
package flight

import (
	"context"
	"errors"
	"sync"
)

// Group runs at most one call per key at a time: a caller asking for a key
// whose call is under way waits for that call and shares its result. It
// caches nothing; a call's result goes to the callers waiting on it. The
// zero value is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done chan struct{} // closed once val and err are set
	val  V
	err  error
}

// ErrPanicked is what waiters get when the call they waited on panicked
// (the panic goes on in the caller that ran it).
var ErrPanicked = errors.New("the shared call panicked")

// Do returns the result of fn, run for key by this caller or by the caller
// whose call for key is under way.
//
// fn runs with the context of the caller that runs it, so a waiter does
// not let that caller's end decide its own: when the call ends with
// context.Canceled or context.DeadlineExceeded while ctx has not ended,
// Do tries again (runs fn itself or joins a newer call). A waiter whose
// ctx ends returns ctx.Err() and leaves the call running.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func() (V, error)) (V, error) {
	for {
		g.mu.Lock()
		c, waiting := g.calls[key]
		if !waiting {
			if g.calls == nil {
				g.calls = make(map[K]*call[V])
			}
			c = &call[V]{done: make(chan struct{})}
			g.calls[key] = c
		}
		g.mu.Unlock()
		if !waiting {
			return g.run(key, c, fn)
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
		if ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
			continue
		}
		return c.val, c.err
	}
}

func (g *Group[K, V]) run(key K, c *call[V], fn func() (V, error)) (V, error) {
	c.err = ErrPanicked // unless fn returns
	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = fn()
	return c.val, c.err
}
