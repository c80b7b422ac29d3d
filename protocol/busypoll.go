package protocol

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultBusyPoll is how long a client polls its socket for an awaited
// response before it sleeps in the network poller.
//
// Waking a sleeping thread costs tens of microseconds on virtual machines
// (the idle virtual CPU has to be woken by the hypervisor), several times
// what a small request costs to serve. Polling for a short while after
// sending a request keeps that cost off requests answered within the
// budget; a response that takes longer is waited for the usual way.
const DefaultBusyPoll = 100 * time.Microsecond

// busyPollMaxInFlight is how many requests a PollGroup may count for its
// clients to poll. Under more load the callers and the servers have better
// use for the processors: responses arrive in batches, and polling would
// only take time from them.
const busyPollMaxInFlight = 2

// A PollGroup counts the requests in progress in a process whose clients
// poll, so that they poll only while the process as a whole is lightly
// loaded: while it counts at most two. A client made without WithPollGroup
// has a group of its own and counts its calls in it. Clients given a group
// leave the counting to its owner, which knows when a request begins and
// ends beyond the call itself (a runtime counts each request from Execute
// to its return, waiting for a container included). The zero value is ready
// to use.
type PollGroup struct {
	inFlight atomic.Int32
	// hostLooked is when the group last looked at the host's runnable
	// tasks (Unix nanoseconds, 0 never), hostBusy what it saw.
	hostLooked atomic.Int64
	hostBusy   atomic.Bool
}

// hostLookInterval is how long what a group saw of the host's runnable
// tasks stands, so that a process looks at most a thousand times a
// second, whatever its request rate.
const hostLookInterval = time.Millisecond

// hostCrowded is hostCrowded as the group last saw it, looking again when
// that is older than hostLookInterval.
func (g *PollGroup) hostCrowded() bool {
	now := time.Now().UnixNano()
	last := g.hostLooked.Load()
	if (last != 0 && now-last < int64(hostLookInterval)) || !g.hostLooked.CompareAndSwap(last, now) {
		return g.hostBusy.Load()
	}
	busy := hostCrowded()
	g.hostBusy.Store(busy)
	return busy
}

// Begin counts a request that has started.
func (g *PollGroup) Begin() { g.inFlight.Add(1) }

// End counts a request that has ended.
func (g *PollGroup) End() { g.inFlight.Add(-1) }

// busyPollCrowded is the longest a poll may take, one non-blocking read and
// a yield to the process's other goroutines, before the reader concludes
// that something else needs the CPU and stops polling. A poll alone takes a
// microsecond or two; a longer one means that the yield ran other
// goroutines of the process for that long, or that the kernel gave the
// thread's CPU to another process (or the hypervisor the virtual CPU to
// another machine). Either way, polling on would take time from work that
// is waiting for it, so the poll counts as a miss.
const busyPollCrowded = 50 * time.Microsecond

// busyPollHostCheckEvery is how many polls pass between looks at the
// host's runnable tasks (hostCrowded), the first one made before polling.
const busyPollHostCheckEvery = 32

// hostCrowded reports whether the host has more runnable tasks than this
// process has CPUs, counting the caller itself: then a task is waiting for
// a CPU, and polling would take the CPU from it. The count is the fourth
// field of /proc/loadavg ("runnable/total"), which containers see too;
// where it cannot be read, the host is taken as not crowded.
func hostCrowded() bool {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return false
	}
	runnable, ok := parseRunnable(string(data))
	return ok && runnable > runtime.NumCPU()
}

// parseRunnable reads the runnable tasks from a /proc/loadavg line.
func parseRunnable(loadavg string) (int, bool) {
	fields := strings.Fields(loadavg)
	if len(fields) < 4 {
		return 0, false
	}
	r, _, ok := strings.Cut(fields[3], "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(r)
	return n, err == nil
}

// busyPollMaxBackoff bounds how many reads the reader makes without polling
// after polls that came back empty-handed. At the bound, a connection whose
// responses never arrive within the budget (a slow application, or a
// server in the same process, which the Go scheduler serves best when the
// client sleeps) spends one budget per this many reads.
const busyPollMaxBackoff = 64

// pollingReader reads a Unix socket for a client's reader goroutine, or for
// a server's (see NewPollingReader). While data is awaited it polls the
// socket without blocking for up to its budget, yielding to other
// goroutines between attempts; otherwise, and once the budget is spent, it
// waits in the network poller. On a client, a call sent while the reader
// waits there interrupts the wait (with an expired read deadline), so the
// reader polls for that call's response too.
//
// Polling adapts: a poll that ends without data, or that finds the CPU
// crowded (busyPollCrowded), makes the reader skip polling for a number of
// reads that doubles with each such miss, up to busyPollMaxBackoff, and
// halves with each poll that finds its data.
type pollingReader struct {
	conn   net.Conn
	raw    syscall.RawConn
	budget time.Duration
	// crowdedAfter is busyPollCrowded, or what a test sets.
	crowdedAfter time.Duration
	// hostBusy is the group's hostCrowded; nil (in tests) never finds the
	// host busy.
	hostBusy func() bool
	// wakeable: calls interrupt the reader's sleep with an expired read
	// deadline (wake), so a deadline error means a call, not the end of
	// reading. A server's reader is not woken, and its owner's deadlines
	// pass through.
	wakeable bool
	awaiting *atomic.Int32 // calls waiting for a response on this connection
	inFlight *atomic.Int32 // requests in progress, as the PollGroup counts them

	sent     atomic.Uint64 // calls sent so far: each one restarts the budget
	sleeping atomic.Bool   // in a blocking read that a new call should interrupt
	resting  atomic.Bool   // skipping polls after misses; see backoff

	// Owned by the reading goroutine.
	backoff int    // reads to skip after the next miss, before doubling
	skip    int    // reads left to make without polling
	hits    uint64 // polls that found data, for tests
	misses  uint64 // polls that spent the budget or found the CPU crowded, for tests
	crowded uint64 // polls that found the CPU crowded, for tests
}

// newPollingReader returns a reader for conn that polls for up to budget,
// or nil when conn is not a socket it can poll or budget is not positive.
func newPollingReader(conn net.Conn, budget time.Duration, wakeable bool, awaiting *atomic.Int32, group *PollGroup) *pollingReader {
	sc, ok := conn.(syscall.Conn)
	if !ok || budget <= 0 {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &pollingReader{conn: conn, raw: raw, budget: budget, crowdedAfter: busyPollCrowded, hostBusy: group.hostCrowded, wakeable: wakeable, awaiting: awaiting, inFlight: &group.inFlight}
}

// NewPollingReader returns a reader of conn for a server's connection: when
// conn has nothing to read, it polls conn for up to budget before it sleeps
// in the network poller, as long as g counts at most two requests in
// progress, and it backs off as a Client's reader does when polls come back
// empty-handed. A server that polls for the next request after answering
// one spares that request the wake-up of its sleeping thread. It returns
// conn itself when budget is not positive or conn is not a socket that can
// be polled.
func NewPollingReader(conn net.Conn, budget time.Duration, g *PollGroup) io.Reader {
	always := new(atomic.Int32) // a server always awaits its next request
	always.Store(1)
	if r := newPollingReader(conn, budget, false, always, g); r != nil {
		return r
	}
	return conn
}

// wantPoll reports whether a response is awaited on a connection that
// polling has been paying off for, in a lightly loaded group.
func (r *pollingReader) wantPoll() bool {
	return r.awaiting.Load() > 0 && r.inFlight.Load() <= busyPollMaxInFlight && !r.resting.Load()
}

// Read reads what the socket holds, polling or waiting for it.
func (r *pollingReader) Read(p []byte) (int, error) {
	var began, last time.Time // when polling began and last yielded; zero while not polling
	polls := 0
	missed := false
	seen := r.sent.Load()
	for {
		n, err, empty := r.tryRead(p)
		if !empty {
			switch {
			case !began.IsZero():
				r.hit()
			case !missed:
				r.rest()
			}
			return n, err
		}
		if sent := r.sent.Load(); sent != seen {
			seen, began = sent, time.Time{} // a new call: a new budget
		}
		if r.wantPoll() {
			now := time.Now()
			if began.IsZero() {
				began, last = now, now
			}
			crowded := now.Sub(last) > r.crowdedAfter
			if !crowded && polls%busyPollHostCheckEvery == 0 && r.hostBusy != nil {
				crowded = r.hostBusy()
			}
			polls++
			if !crowded && now.Sub(began) < r.budget {
				last = now
				runtime.Gosched()
				continue
			}
			if crowded {
				r.crowded++
			}
			r.miss()
			began, missed = time.Time{}, true
		}
		n, err, interrupted := r.sleep(p, seen)
		if !interrupted {
			if !missed {
				r.rest()
			}
			return n, err
		}
	}
}

// hit accounts for a read that polled and found its data.
func (r *pollingReader) hit() {
	r.hits++
	r.backoff /= 2
}

// miss accounts for a poll that spent its budget without data.
func (r *pollingReader) miss() {
	r.misses++
	r.backoff = min(max(2*r.backoff, 1), busyPollMaxBackoff)
	r.skip = r.backoff
	r.resting.Store(true)
}

// rest accounts for a read made without polling: one fewer to skip.
func (r *pollingReader) rest() {
	if r.skip > 0 {
		r.skip--
		if r.skip == 0 {
			r.resting.Store(false)
		}
	}
}

// tryRead reads without blocking; empty reports that there was nothing to
// read.
func (r *pollingReader) tryRead(p []byte) (n int, err error, empty bool) {
	var readErr error
	err = r.raw.Read(func(fd uintptr) bool {
		for {
			n, readErr = syscall.Read(int(fd), p)
			if readErr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case r.wakeable && errors.Is(err, os.ErrDeadlineExceeded):
		// A call's interruption that arrived after the wait it was meant
		// for had already ended: it has nothing left to interrupt.
		if err := r.conn.SetReadDeadline(time.Time{}); err != nil {
			return 0, err, false
		}
		return 0, nil, true
	case err != nil:
		return 0, err, false
	case readErr == syscall.EAGAIN:
		return 0, nil, true
	case readErr != nil:
		return 0, os.NewSyscallError("read", readErr), false
	case n == 0 && len(p) > 0:
		return 0, io.EOF, false
	}
	return n, nil, false
}

// sleep reads through the network poller, blocking until there is data, the
// connection ends, or a new call interrupts it. seen is the number of calls
// sent that the reader has accounted for.
func (r *pollingReader) sleep(p []byte, seen uint64) (n int, err error, interrupted bool) {
	r.sleeping.Store(true)
	if r.sent.Load() != seen && r.wantPoll() && r.sleeping.CompareAndSwap(true, false) {
		// A call arrived while the reader was deciding to sleep, perhaps
		// too early to see the flag: poll for it instead.
		return 0, nil, true
	}
	n, err = r.conn.Read(p)
	r.sleeping.Store(false)
	if r.wakeable && errors.Is(err, os.ErrDeadlineExceeded) {
		// The client sets no deadlines of its own: this is wake's.
		if err := r.conn.SetReadDeadline(time.Time{}); err != nil {
			return 0, err, false
		}
		return 0, nil, true
	}
	return n, err, false
}

// wake records a call just sent and, when the reader should poll for its
// response, interrupts the reader's blocking read.
func (r *pollingReader) wake() {
	r.sent.Add(1)
	if r.wantPoll() && r.sleeping.Load() && r.sleeping.CompareAndSwap(true, false) {
		_ = r.conn.SetReadDeadline(time.Unix(1, 0))
	}
}
