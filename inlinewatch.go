package ociapp

import (
	"sync"
	"sync/atomic"
	"time"
)

// inlineCheckInterval is how often the server looks for requests that a
// connection's reader has been running itself for too long: such a request
// has its reader role passed on after one to two intervals.
//
// One watcher per server looks at every connection on a ticker, instead of
// each request arming a timer: a timer armed while the process's threads
// sleep wakes one of them (Go's runtime interrupts its network poller to
// account for the new timer), and that wake-up, on every request, cost more
// than the request itself on virtual machines (docs/protocol.md).
const inlineCheckInterval = 500 * time.Microsecond

// inlineIdleChecks is how many checks the watcher makes without seeing a
// request run inline before it stops its ticker and sleeps until the next
// one; an idle server does not wake up.
const inlineIdleChecks = 20

// inlineWatch passes on the reader role of connections whose reader has been
// running a request itself for longer than inlineCheckInterval.
type inlineWatch struct {
	mu    sync.Mutex
	conns map[*inlineSlot]struct{}

	starts   atomic.Uint64 // requests begun inline, so far
	sleeping atomic.Bool   // the watcher waits for wake instead of ticking
	wake     chan struct{} // a token wakes the sleeping watcher
}

// An inlineSlot is one connection's inline request, if any: since holds
// when it began (Unix nanoseconds), 0 while none runs. Each request's value
// is unique, so that a reader whose role was passed on cannot mistake the
// next reader's request for its own.
type inlineSlot struct {
	since    atomic.Int64
	last     int64  // the latest value of since; the reader's own
	passRole func() // hands the reader role on; called at most once per request
}

func newInlineWatch() *inlineWatch {
	return &inlineWatch{conns: map[*inlineSlot]struct{}{}, wake: make(chan struct{}, 1)}
}

func (w *inlineWatch) add(s *inlineSlot) {
	w.mu.Lock()
	w.conns[s] = struct{}{}
	w.mu.Unlock()
}

func (w *inlineWatch) remove(s *inlineSlot) {
	w.mu.Lock()
	delete(w.conns, s)
	w.mu.Unlock()
}

// begin records that s's reader runs a request itself from now on; end
// takes what it returns.
func (w *inlineWatch) begin(s *inlineSlot) int64 {
	run := max(time.Now().UnixNano(), s.last+1)
	s.last = run
	s.since.Store(run)
	w.starts.Add(1)
	if w.sleeping.Load() {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return run
}

// end reports whether the reader keeps its role after its request run
// (begin's result): false when the watcher has passed the role on meanwhile.
func (s *inlineSlot) end(run int64) bool {
	return s.since.CompareAndSwap(run, 0)
}

// run watches until stop is closed.
func (w *inlineWatch) run(stop <-chan struct{}) {
	t := time.NewTicker(inlineCheckInterval)
	defer t.Stop()
	seen := w.starts.Load()
	idle := 0
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if w.check(now) {
				idle = 0
			} else if starts := w.starts.Load(); starts != seen {
				seen, idle = starts, 0
			} else if idle++; idle >= inlineIdleChecks {
				if !w.sleep(stop) {
					return
				}
				seen, idle = w.starts.Load(), 0
				t.Reset(inlineCheckInterval)
			}
		}
	}
}

// check passes on the role of every reader whose request has run inline for
// at least an interval, and reports whether any request runs inline.
func (w *inlineWatch) check(now time.Time) (busy bool) {
	limit := now.Add(-inlineCheckInterval).UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.conns {
		since := s.since.Load()
		if since == 0 {
			continue
		}
		busy = true
		if since <= limit && s.since.CompareAndSwap(since, 0) {
			s.passRole()
		}
	}
	return busy
}

// sleep waits for a request to begin inline; false when stop closed first.
func (w *inlineWatch) sleep(stop <-chan struct{}) bool {
	w.sleeping.Store(true)
	defer w.sleeping.Store(false)
	// A request that began before the flag was visible did not send a token.
	if w.anyInline() {
		return true
	}
	select {
	case <-w.wake:
		return true
	case <-stop:
		return false
	}
}

func (w *inlineWatch) anyInline() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.conns {
		if s.since.Load() != 0 {
			return true
		}
	}
	return false
}
