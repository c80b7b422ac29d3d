package protocol

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A FrameReader reads the frames of a connection on which goroutines await
// answers, and hands each frame to its deliver function. Its own goroutine
// (Run) waits in the network poller and reads whatever arrives. A Client's
// callers may also read in its place for a while (pollFor), which spares
// their answers a hand-off from the reading goroutine to the waiting one:
// across processes that hand-off often wakes a second thread. The Go
// remote executor reads the daemon's execute channel with one too.
type FrameReader struct {
	conn    net.Conn
	raw     syscall.RawConn // nil when conn has no file descriptor
	deliver func(body []byte) error
	fail    func(error)

	// poll is nil when callers do not poll (see pollWith); pollMu
	// serialises their updates of its accounting.
	poll   *pollPolicy
	pollMu sync.Mutex

	// rmu is held by whichever goroutine reads the connection. in is what
	// it reads; broken is the first fault, after which nothing is read;
	// again asks the holder to read once more (see pump).
	rmu    sync.Mutex
	in     inbox
	broken error
	again  atomic.Bool
}

// NewFrameReader returns a reader of conn's frames, of up to maxFrame bytes
// (DefaultMaxFrameSize when not positive; a larger one ends the
// connection), that hands each one to deliver, in the order they arrive,
// never two at once. deliver must not block; an error from it ends the
// connection. fail is called, outside any of the reader's locks and
// perhaps more than once, with the error that ends the connection, by
// whichever goroutine finds it; it should close conn, which ends Run.
func NewFrameReader(conn net.Conn, maxFrame int, deliver func(body []byte) error, fail func(error)) *FrameReader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrameSize
	}
	return &FrameReader{conn: conn, raw: rawConn(conn), deliver: deliver, fail: fail, in: newInbox(maxFrame, inboxSize)}
}

// pollWith lets callers poll (pollFor) for up to budget while group counts
// at most two requests in progress. A zero budget, or a connection without
// a file descriptor, leaves polling off. Call it before Run.
func (r *FrameReader) pollWith(budget time.Duration, group *PollGroup) {
	if r.raw != nil {
		r.poll = newPollPolicy(budget, group)
	}
}

// Run reads the connection until it ends, and returns why: an error
// wrapping io.EOF when the peer closed it between frames. Run it in a
// goroutine of its own: it is what reads when no caller polls, and what
// sees the peer leave an idle connection.
func (r *FrameReader) Run() error {
	if r.raw == nil {
		return r.runBlocking()
	}
	var failure error
	err := r.raw.Read(func(fd uintptr) bool {
		failure = r.pump(fd)
		return failure != nil
	})
	// Failing inside the callback would deadlock: closing the connection
	// waits for the callback to return.
	if failure != nil {
		return failure
	}
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if r.broken != nil { // a polling caller found the end first
		return r.broken
	}
	return err
}

// runBlocking is Run for a connection without a file descriptor (a
// net.Pipe, for one): nothing polls it, so Run alone reads it.
func (r *FrameReader) runBlocking() error {
	for {
		n, err := r.conn.Read(r.in.space())
		r.rmu.Lock()
		r.in.filled(n)
		ferr := r.takeFramesLocked()
		if ferr == nil && err != nil {
			ferr = r.endOfInput(err)
		}
		r.rmu.Unlock()
		if ferr != nil {
			return ferr
		}
	}
}

// pollFor polls r's connection in the calling goroutine for the response
// ch awaits, while r's poll policy lets it: for up to the budget, only
// while the process is lightly loaded, never while the CPU is wanted
// elsewhere (docs/protocol.md, Busy polling). It returns the response and
// true, or false, and then the caller waits for ch the usual way.
func (r *FrameReader) pollFor(ctx context.Context, ch <-chan Response) (Response, bool) {
	p := r.poll
	if p == nil {
		return Response{}, false
	}
	r.pollMu.Lock()
	want := p.wantPoll()
	if !want {
		p.rest()
	}
	r.pollMu.Unlock()
	if !want {
		return Response{}, false
	}
	var round pollRound
	done := ctx.Done()
	for {
		var failure error
		if err := r.raw.Control(func(fd uintptr) { failure = r.pump(fd) }); err != nil {
			failure = err
		}
		select {
		case resp := <-ch:
			r.pollMu.Lock()
			p.hit()
			r.pollMu.Unlock()
			return resp, true
		case <-done:
			return Response{}, false
		default:
		}
		if failure != nil {
			// The owner fails every waiter; this one waits for its share.
			r.fail(failure)
			return Response{}, false
		}
		if p.inFlight.Load() > busyPollMaxInFlight {
			return Response{}, false // the process has better use for the CPU
		}
		r.pollMu.Lock()
		goOn := p.goOn(&round)
		r.pollMu.Unlock()
		if !goOn {
			return Response{}, false
		}
		runtime.Gosched()
	}
}

// pump reads what the socket fd holds and delivers the frames it makes,
// unless another goroutine is reading: then it asks that one to read once
// more before it stops, so that nothing that arrived meanwhile is left
// unread with no reader awake to see it. It returns the error that ends
// the connection.
func (r *FrameReader) pump(fd uintptr) error {
	for {
		if !r.rmu.TryLock() {
			r.again.Store(true)
			if !r.rmu.TryLock() {
				return nil
			}
		}
		r.again.Store(false)
		err := r.drainLocked(fd)
		r.rmu.Unlock()
		if err != nil || !r.again.Load() {
			return err
		}
	}
}

// drainLocked reads fd until it has nothing more to give, delivering each
// whole frame; r.rmu is held. Reading to the end matters: the network
// poller wakes Run only for bytes that arrive later.
func (r *FrameReader) drainLocked(fd uintptr) error {
	if r.broken != nil {
		return r.broken
	}
	for {
		n, err := readNonblocking(fd, r.in.space())
		switch {
		case err == syscall.EAGAIN:
			return nil
		case err != nil:
			r.broken = os.NewSyscallError("read", err)
		case n == 0:
			r.broken = r.endOfInput(io.EOF)
		default:
			r.in.filled(n)
			r.broken = r.takeFramesLocked()
		}
		if r.broken != nil {
			return r.broken
		}
	}
}

// endOfInput is what the connection's end means where the inbox stands:
// io.EOF between frames, a *FrameError inside one.
func (r *FrameReader) endOfInput(err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	return r.in.eof()
}

// takeFramesLocked delivers every whole frame the inbox holds; r.rmu is
// held.
func (r *FrameReader) takeFramesLocked() error {
	for {
		body, err := r.in.next()
		if err != nil || body == nil {
			return err
		}
		if err := r.deliver(body); err != nil {
			return err
		}
	}
}
