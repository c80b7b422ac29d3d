package protocol

import (
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
	// tasks (Unix nanoseconds, 0 never); hostCrowdedLooks counts the looks
	// in a row that found it crowded.
	hostLooked       atomic.Int64
	hostCrowdedLooks atomic.Int32
}

// hostLookInterval is how long what a group saw of the host's runnable
// tasks stands, so that a process looks at most a thousand times a
// second, whatever its request rate.
const hostLookInterval = time.Millisecond

// hostCrowdedSlack is how many runnable tasks beyond one per CPU a host
// may show without being crowded. A request's path has a poller at each end
// (this process's and its server's), and the Go runtime of each process
// wakes a thread of its own now and then (its monitor, the network poller
// for a response's arrival), which on a host whose CPUs the two pollers
// fill has to wait for one. Counting that as crowding stopped most polls
// on a 2-CPU host with a caller and its server alone on it: the Go echo's
// c1 p50 was 40-47 µs; with this slack, 18-21 µs (docs/protocol.md, Busy
// polling).
const hostCrowdedSlack = 1

// hostCrowdedAfter is how many looks in a row must find the host crowded
// for a group to take it as crowded. One look finds a task waiting for a
// CPU at a moment; a host on which pollers at both ends of a connection
// already fill the CPUs shows one at many moments, if only the thread the
// network poller wakes for each response, which needs the CPU for a few
// microseconds. Two looks a millisecond apart both finding one mean a task
// that keeps wanting the CPU.
const hostCrowdedAfter = 2

// hostCrowded is hostCrowded as the group last saw it, looking again when
// that is older than hostLookInterval.
func (g *PollGroup) hostCrowded() bool {
	now := time.Now().UnixNano()
	last := g.hostLooked.Load()
	if (last != 0 && now-last < int64(hostLookInterval)) || !g.hostLooked.CompareAndSwap(last, now) {
		return g.hostCrowdedLooks.Load() >= hostCrowdedAfter
	}
	return g.noteLook(hostCrowded())
}

// noteLook records what a look at the host found, and returns what the
// group concludes.
func (g *PollGroup) noteLook(crowded bool) bool {
	if !crowded {
		g.hostCrowdedLooks.Store(0)
		return false
	}
	return g.hostCrowdedLooks.Add(1) >= hostCrowdedAfter
}

// Begin counts a request that has started.
func (g *PollGroup) Begin() { g.inFlight.Add(1) }

// End counts a request that has ended.
func (g *PollGroup) End() { g.inFlight.Add(-1) }

// InFlight returns the requests the group counts in progress.
func (g *PollGroup) InFlight() int { return int(g.inFlight.Load()) }

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
// process has CPUs, plus hostCrowdedSlack, counting the caller itself: then
// a task is waiting for a CPU, and polling would take the CPU from it. The
// count is the fourth field of /proc/loadavg ("runnable/total"), which
// containers see too; where it cannot be read, the host is taken as not
// crowded.
func hostCrowded() bool {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return false
	}
	runnable, ok := parseRunnable(string(data))
	return ok && runnable > runtime.NumCPU()+hostCrowdedSlack
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

// pollPolicy is when to poll and when to stop: the budget, the signs of a
// crowded CPU, and the back-off after polls that came back empty-handed.
// A server's pollingReader and a Client's callers (FrameReader.pollFor)
// share it.
//
// Polling adapts: a poll that ends without data, or that finds the CPU
// crowded (busyPollCrowded), makes the next polls be skipped for a number
// of reads that doubles with each such miss, up to busyPollMaxBackoff, and
// halves with each poll that finds its data.
type pollPolicy struct {
	budget time.Duration
	// crowdedAfter is busyPollCrowded, or what a test sets.
	crowdedAfter time.Duration
	// hostBusy is the group's hostCrowded; nil (in tests) never finds the
	// host busy.
	hostBusy func() bool
	inFlight *atomic.Int32 // requests in progress, as the PollGroup counts them

	resting atomic.Bool // skipping polls after misses; see backoff

	// Owned by the poller (a FrameReader serialises its callers' updates).
	backoff int    // reads to skip after the next miss, before doubling
	skip    int    // reads left to make without polling
	hits    uint64 // polls that found data, for tests
	misses  uint64 // polls that spent the budget or found the CPU crowded, for tests
	crowded uint64 // polls that found the CPU crowded, for tests
}

func newPollPolicy(budget time.Duration, group *PollGroup) *pollPolicy {
	if budget <= 0 {
		return nil
	}
	return &pollPolicy{budget: budget, crowdedAfter: busyPollCrowded, hostBusy: group.hostCrowded, inFlight: &group.inFlight}
}

// wantPoll reports whether polling has been paying off and the group is
// lightly loaded.
func (p *pollPolicy) wantPoll() bool {
	return p.inFlight.Load() <= busyPollMaxInFlight && !p.resting.Load()
}

// A pollRound is one wait polled for: it says when to stop.
type pollRound struct {
	began, last time.Time
	polls       int
}

// goOn reports whether the round should poll once more, after a yield;
// when it should not, it has accounted for the miss.
func (p *pollPolicy) goOn(round *pollRound) bool {
	now := time.Now()
	if round.began.IsZero() {
		round.began, round.last = now, now
	}
	crowded := now.Sub(round.last) > p.crowdedAfter
	if !crowded && round.polls%busyPollHostCheckEvery == 0 && p.hostBusy != nil {
		crowded = p.hostBusy()
	}
	round.polls++
	if !crowded && now.Sub(round.began) < p.budget {
		round.last = now
		return true
	}
	if crowded {
		p.crowded++
	}
	p.miss()
	return false
}

// hit accounts for a wait that polled and found its data.
func (p *pollPolicy) hit() {
	p.hits++
	p.backoff /= 2
}

// miss accounts for a poll that spent its budget without data.
func (p *pollPolicy) miss() {
	p.misses++
	p.backoff = min(max(2*p.backoff, 1), busyPollMaxBackoff)
	p.skip = p.backoff
	p.resting.Store(true)
}

// rest accounts for a wait made without polling: one fewer to skip.
func (p *pollPolicy) rest() {
	if p.skip > 0 {
		p.skip--
		if p.skip == 0 {
			p.resting.Store(false)
		}
	}
}

// pollingReader reads a server's Unix socket (see NewPollingReader). When
// the socket has nothing to read, it polls it without blocking for up to
// its budget, yielding to other goroutines between attempts; otherwise, and
// once the budget is spent, it waits in the network poller.
type pollingReader struct {
	*pollPolicy
	sock rawSocket
}

// NewPollingReader returns a reader of conn for a server's connection: when
// conn has nothing to read, it polls conn for up to budget before it sleeps
// in the network poller, as long as g counts at most two requests in
// progress, and it backs off as a Client's callers do when polls come back
// empty-handed. A server that polls for the next request after answering
// one spares that request the wake-up of its sleeping thread. When budget
// is not positive it only reads, and a conn that is not a socket with a
// file descriptor it reads as it is.
func NewPollingReader(conn net.Conn, budget time.Duration, g *PollGroup) io.Reader {
	raw := rawConn(conn)
	if raw == nil {
		return conn
	}
	sock := rawSocket{raw: raw}
	policy := newPollPolicy(budget, g)
	if policy == nil {
		return sock
	}
	return &pollingReader{pollPolicy: policy, sock: sock}
}

// rawConn returns conn's file descriptor access, or nil when it has none.
func rawConn(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// Read reads what the socket holds, polling or waiting for it.
func (r *pollingReader) Read(p []byte) (int, error) {
	var round pollRound
	polled := false
	for {
		n, err, empty := r.tryRead(p)
		switch {
		case !empty && polled:
			r.hit()
			return n, err
		case !empty:
			r.rest()
			return n, err
		case !r.wantPoll():
			r.rest()
			return r.sock.Read(p)
		case !r.goOn(&round): // the miss is accounted for
			return r.sock.Read(p)
		}
		polled = true
		runtime.Gosched()
	}
}

// tryRead reads without blocking; empty reports that there was nothing to
// read.
func (r *pollingReader) tryRead(p []byte) (n int, err error, empty bool) {
	var readErr error
	err = r.sock.raw.Read(func(fd uintptr) bool {
		n, readErr = readNonblocking(fd, p)
		return true
	})
	if err == nil && readErr == syscall.EAGAIN {
		return 0, nil, true
	}
	n, err = readResult(n, len(p), err, readErr)
	return n, err, false
}
