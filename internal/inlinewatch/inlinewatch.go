// Package inlinewatch passes on the reader role of a connection whose
// reader runs a request itself (instead of handing it to another goroutine,
// which costs a thread wake-up) once the request has run for long, so that
// the connection's later requests are read and run meanwhile. The Go SDK's
// server and the daemon's execute channel use it.
package inlinewatch

import (
	"sync"
	"sync/atomic"
	"time"
)

// CheckInterval is how often a Watch looks for requests that a
// connection's reader has been running itself for too long: such a request
// has its reader role passed on after one to two intervals.
//
// One watcher per server (or channel) looks at every connection on a ticker, instead of
// each request arming a timer: a timer armed while the process's threads
// sleep wakes one of them (Go's runtime interrupts its network poller to
// account for the new timer), and that wake-up, on every request, cost more
// than the request itself on virtual machines (docs/protocol.md).
const CheckInterval = 500 * time.Microsecond

// idleChecks is how many checks the watcher makes without seeing a
// request run inline before it stops its ticker and sleeps until the next
// one; an idle server does not wake up.
const idleChecks = 20

// Watch passes on the reader role of connections whose reader has been
// running a request itself for longer than CheckInterval.
type Watch struct {
	mu    sync.Mutex
	conns map[*Slot]struct{}

	starts   atomic.Uint64 // requests begun inline, so far
	sleeping atomic.Bool   // the watcher waits for wake instead of ticking
	wake     chan struct{} // a token wakes the sleeping watcher
}

// An Slot is one connection's inline request, if any: since holds
// when it began (Unix nanoseconds), 0 while none runs. Each request's value
// is unique, so that a reader whose role was passed on cannot mistake the
// next reader's request for its own.
type Slot struct {
	since    atomic.Int64
	last     int64  // the latest value of since; the reader's own
	PassRole func() // hands the reader role on; called at most once per request
}

func New() *Watch {
	return &Watch{conns: map[*Slot]struct{}{}, wake: make(chan struct{}, 1)}
}

func (w *Watch) Add(s *Slot) {
	w.mu.Lock()
	w.conns[s] = struct{}{}
	w.mu.Unlock()
}

func (w *Watch) Remove(s *Slot) {
	w.mu.Lock()
	delete(w.conns, s)
	w.mu.Unlock()
}

// Begin records that s's reader runs a request itself from now on; End
// takes what it returns.
func (w *Watch) Begin(s *Slot) int64 {
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

// End reports whether the reader keeps its role after its request run
// (Begin's result): false when the watcher has passed the role on meanwhile.
func (s *Slot) End(run int64) bool {
	return s.since.CompareAndSwap(run, 0)
}

// Run watches until stop is closed.
func (w *Watch) Run(stop <-chan struct{}) {
	t := time.NewTicker(CheckInterval)
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
			} else if idle++; idle >= idleChecks {
				if !w.sleep(stop) {
					return
				}
				seen, idle = w.starts.Load(), 0
				t.Reset(CheckInterval)
			}
		}
	}
}

// check passes on the role of every reader whose request has run inline for
// at least an interval, and reports whether any request runs inline.
func (w *Watch) check(now time.Time) (busy bool) {
	limit := now.Add(-CheckInterval).UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.conns {
		since := s.since.Load()
		if since == 0 {
			continue
		}
		busy = true
		if since <= limit && s.since.CompareAndSwap(since, 0) {
			s.PassRole()
		}
	}
	return busy
}

// sleep waits for a request to begin inline; false when stop closed first.
func (w *Watch) sleep(stop <-chan struct{}) bool {
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

func (w *Watch) anyInline() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.conns {
		if s.since.Load() != 0 {
			return true
		}
	}
	return false
}
