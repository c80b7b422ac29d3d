package protocol

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// neverCrowded keeps a client's polls going however busy the machine, for
// tests that count what polls find.
func neverCrowded(c *clientConfig) { c.crowded = time.Hour }

// dialPolling connects with the given busy-poll budget and returns the
// client and its poll policy, whose counters may be read between calls.
func dialPolling(t *testing.T, path string, budget time.Duration) (*Client, *pollPolicy) {
	t.Helper()
	c, err := Dial(context.Background(), path, WithBusyPoll(budget), neverCrowded)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c.reader.poll == nil {
		t.Fatal("a Unix socket client with a positive budget does not poll")
	}
	return c, c.reader.poll
}

func callEcho(t *testing.T, c *Client, i int) {
	t.Helper()
	payload := mustPayload(t, map[string]any{"i": i})
	got, err := c.Call(context.Background(), payload)
	if err != nil {
		t.Fatalf("call %d: %v", i, err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("call %d: got %x, want %x", i, got, payload)
	}
}

// slowEcho answers each request after delay: late enough that only a
// poll, or a sleep, can find the response.
func slowEcho(delay time.Duration) func(net.Conn, *Writer, <-chan Request) {
	return func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for req := range reqs {
			time.Sleep(delay)
			if w.WriteResponse(Response{ID: req.ID, Payload: req.Payload}) != nil {
				return
			}
		}
	}
}

func TestBusyPollCallerFindsItsResponse(t *testing.T) {
	s := startServer(t, slowEcho(5*time.Millisecond))
	// A budget no response here outlasts: every call's poll must find its
	// response, whether the caller or the reader goroutine read it.
	c, poll := dialPolling(t, s.path, 10*time.Second)
	const calls = 5
	for i := range calls {
		callEcho(t, c, i)
	}
	if poll.hits != calls || poll.misses != 0 {
		t.Errorf("hits %d, misses %d over %d calls: want every call polled for and found", poll.hits, poll.misses, calls)
	}
}

func TestBusyPollStopsWhenTheCallersContextEnds(t *testing.T) {
	// A server that never answers, and a budget no call outlasts: the
	// caller's context, not the budget, ends the poll.
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for range reqs {
		}
	})
	c, _ := dialPolling(t, s.path, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, mustPayload(t, map[string]any{"i": 0}))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call polled on after its context ended")
	}
}

func TestBusyPollOnlyWhileTheGroupIsLightlyLoaded(t *testing.T) {
	s := startServer(t, slowEcho(2*time.Millisecond))
	var group PollGroup
	c, err := Dial(context.Background(), s.path, WithBusyPoll(10*time.Second), WithPollGroup(&group), neverCrowded)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	poll := c.reader.poll
	for range busyPollMaxInFlight + 1 {
		group.Begin() // requests of the group's owner, elsewhere
	}
	for i := range 3 {
		callEcho(t, c, i)
	}
	if n := group.inFlight.Load(); n != busyPollMaxInFlight+1 {
		t.Errorf("the group counts %d, want %d: a client in a group must leave counting to its owner", n, busyPollMaxInFlight+1)
	}
	group.End()
	for i := 3; i < 6; i++ {
		callEcho(t, c, i)
	}
	if poll.hits != 3 || poll.misses != 0 {
		t.Errorf("hits %d, misses %d: want no polling while the group counted %d requests, then a poll per call",
			poll.hits, poll.misses, busyPollMaxInFlight+1)
	}
}

func TestOwnPollGroupCountsPendingCalls(t *testing.T) {
	answer := make(chan struct{})
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		var held []Request
		for len(held) < 3 {
			req, ok := <-reqs
			if !ok {
				return
			}
			held = append(held, req)
		}
		<-answer
		for _, req := range held[:2] {
			_ = w.WriteResponse(Response{ID: req.ID, Payload: req.Payload})
		}
		conn.Close() // the third fails with the connection
		for range reqs {
		}
	})
	c, _ := dialPolling(t, s.path, DefaultBusyPoll)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { _, _ = c.Call(context.Background(), mustPayload(t, map[string]any{"i": i})) })
	}
	for c.InFlight() < 3 {
		time.Sleep(100 * time.Microsecond)
	}
	if n := c.ownGroup.inFlight.Load(); n != 3 {
		t.Errorf("with 3 calls pending the client's group counts %d", n)
	}
	close(answer)
	wg.Wait()
	<-c.Done()
	if n := c.ownGroup.inFlight.Load(); n != 0 {
		t.Errorf("after every call ended the client's group counts %d", n)
	}
}

func TestBusyPollBacksOffWhenResponsesAreSlow(t *testing.T) {
	s := startServer(t, slowEcho(2*time.Millisecond))
	c, poll := dialPolling(t, s.path, 50*time.Microsecond)
	const calls = 12
	for i := range calls {
		callEcho(t, c, i)
	}
	// Polls for calls 1, 3, 6 and 11 miss; the others are skipped.
	if poll.hits != 0 || poll.misses == 0 || poll.misses >= calls/2 {
		t.Errorf("hits %d, misses %d over %d calls: want a few misses and the rest skipped", poll.hits, poll.misses, calls)
	}
}

func TestBusyPollBackoff(t *testing.T) {
	// Each step is a poll that missed (m), a read that polled and found its
	// data (h), or a read that did not poll (r).
	tests := []struct {
		steps       string
		wantBackoff int
		wantSkip    int
	}{
		{"", 0, 0},
		{"m", 1, 1},
		{"mr", 1, 0},
		{"mrm", 2, 2},
		{"mrmrrm", 4, 4},
		{"mrmrrmrrrrh", 2, 0},
		{"mrmrrmrrrrhh", 1, 0},
		{"mrmrrmrrrrhhh", 0, 0},
		{"mmmmmmmmmm", busyPollMaxBackoff, busyPollMaxBackoff},
		{"hhr", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.steps, func(t *testing.T) {
			var r pollPolicy
			for _, step := range tt.steps {
				switch step {
				case 'm':
					r.miss()
				case 'h':
					r.hit()
				case 'r':
					r.rest()
				}
			}
			if r.backoff != tt.wantBackoff || r.skip != tt.wantSkip || r.resting.Load() != (tt.wantSkip > 0) {
				t.Errorf("backoff %d, skip %d, resting %v; want %d, %d, %v",
					r.backoff, r.skip, r.resting.Load(), tt.wantBackoff, tt.wantSkip, tt.wantSkip > 0)
			}
		})
	}
}

func TestBusyPollConcurrentCalls(t *testing.T) {
	// Two callers poll and the reader goroutine reads, taking the
	// connection from each other in every order; run with the race
	// detector.
	s := startServer(t, echoHandler)
	c, _ := dialPolling(t, s.path, 20*time.Microsecond)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for g := range 2 {
		wg.Go(func() {
			for i := range 300 {
				payload := mustPayload(t, map[string]any{"g": g, "i": i})
				got, err := c.Call(context.Background(), payload)
				if err != nil || !bytes.Equal(got, payload) {
					t.Errorf("caller %d, call %d: %x, %v", g, i, got, err)
					failed.Store(true)
					return
				}
				if failed.Load() {
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestBusyPollIdleConnectionStillSeesTheServerLeave(t *testing.T) {
	closed := make(chan struct{})
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		req := <-reqs
		_ = w.WriteResponse(Response{ID: req.ID, Payload: req.Payload})
		<-closed
		conn.Close()
		for range reqs {
		}
	})
	c, _ := dialPolling(t, s.path, DefaultBusyPoll)
	callEcho(t, c, 0)
	close(closed)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not notice the server closing an idle connection")
	}
}

func TestBusyPollOff(t *testing.T) {
	s := startServer(t, echoHandler)
	c, err := Dial(context.Background(), s.path, WithBusyPoll(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.reader.poll != nil {
		t.Fatal("WithBusyPoll(0) still polls")
	}
	callEcho(t, c, 0)

	client, server := net.Pipe()
	defer server.Close()
	pc := NewClient(client)
	defer pc.Close()
	if pc.reader.poll != nil {
		t.Fatal("a connection without a file descriptor polls")
	}
}

// unixPair returns the two ends of a connected Unix socket.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "pair.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, _ := ln.Accept()
		accepted <- conn
	}()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestServerPollingReaderPollsForTheNextRequest(t *testing.T) {
	server, client := unixPair(t)
	var group PollGroup
	r := NewPollingReader(server, 10*time.Second, &group).(*pollingReader)
	r.crowdedAfter, r.hostBusy = time.Hour, nil // count what polls find, however busy the machine
	buf := make([]byte, 4)
	for i := range 3 {
		go func() {
			time.Sleep(2 * time.Millisecond) // well after the reader found nothing
			_, _ = client.Write([]byte{byte(i), 0, 0, 0})
		}()
		if n, err := r.Read(buf); err != nil || n != 4 || buf[0] != byte(i) {
			t.Fatalf("read %d: %d bytes %x, %v", i, n, buf[:max(n, 0)], err)
		}
	}
	if r.hits != 3 || r.misses != 0 {
		t.Errorf("hits %d, misses %d: want every read to poll and find its data", r.hits, r.misses)
	}
}

func TestServerPollingReaderHonoursItsOwnersDeadline(t *testing.T) {
	// A server stops reading by setting a read deadline: unlike a client's
	// reader, a server's must report it, at once.
	server, _ := unixPair(t)
	r := NewPollingReader(server, 10*time.Millisecond, new(PollGroup))
	if err := server.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 4))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader outlived its owner's read deadline")
	}
	if err := server.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("with a deadline already past: err = %v, want the deadline", err)
	}
}

func TestNewPollingReaderWithoutASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if r := NewPollingReader(a, DefaultBusyPoll, new(PollGroup)); r != a {
		t.Errorf("got %T, want the connection itself", r)
	}
	server, _ := unixPair(t)
	if r, ok := NewPollingReader(server, 0, new(PollGroup)).(rawSocket); !ok {
		t.Errorf("with no budget: got %T, want a reader that does not poll", r)
	}
}

func TestServerPollingReaderStopsWhenTheCPUIsCrowded(t *testing.T) {
	// On one processor, a goroutine that computes for a millisecond at a
	// time takes the processor each time the reader yields between polls:
	// the reader must notice and sleep instead of polling on.
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(1))
	server, client := unixPair(t)
	var group PollGroup
	r := NewPollingReader(server, 10*time.Second, &group).(*pollingReader)
	r.hostBusy = nil // this test is about the yield's length alone
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for start := time.Now(); time.Since(start) < time.Millisecond; {
			}
			goruntime.Gosched()
		}
	}()
	buf := make([]byte, 4)
	for i := range 3 {
		go func() {
			time.Sleep(20 * time.Millisecond)
			_, _ = client.Write([]byte{byte(i), 0, 0, 0})
		}()
		if n, err := r.Read(buf); err != nil || n != 4 || buf[0] != byte(i) {
			t.Fatalf("read %d: %d bytes %x, %v", i, n, buf[:max(n, 0)], err)
		}
	}
	if r.crowded == 0 || r.hits != 0 {
		t.Errorf("hits %d, misses %d, crowded %d: want the polls to find the CPU crowded and stop", r.hits, r.misses, r.crowded)
	}
}

func TestServerPollingReaderLeavesACrowdedHostAlone(t *testing.T) {
	server, client := unixPair(t)
	var group PollGroup
	r := NewPollingReader(server, 10*time.Second, &group).(*pollingReader)
	r.crowdedAfter = time.Hour
	looks := 0
	r.hostBusy = func() bool { looks++; return true } // more runnable tasks than CPUs
	buf := make([]byte, 4)
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = client.Write([]byte{1, 0, 0, 0})
	}()
	if n, err := r.Read(buf); err != nil || n != 4 {
		t.Fatalf("read: %d bytes, %v", n, err)
	}
	if looks != 1 || r.crowded != 1 || r.hits != 0 {
		t.Errorf("looked at the host %d times; hits %d, crowded %d: want one look, then sleep", looks, r.hits, r.crowded)
	}
}

func TestParseRunnable(t *testing.T) {
	for _, tt := range []struct {
		line string
		want int
		ok   bool
	}{
		{"0.38 1.77 2.04 3/312 19273\n", 3, true},
		{"6.55 7.66 6.56 17/291 19334", 17, true},
		{"0.38 1.77 2.04", 0, false},
		{"0.38 1.77 2.04 x/312 1", 0, false},
		{"0.38 1.77 2.04 3 1", 0, false},
	} {
		if got, ok := parseRunnable(tt.line); got != tt.want || ok != tt.ok {
			t.Errorf("parseRunnable(%q) = %d, %v; want %d, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
	// On Linux the real file parses.
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if _, ok := parseRunnable(string(data)); !ok {
			t.Errorf("/proc/loadavg %q does not parse", data)
		}
	}
}

func TestPollGroupLooksAtTheHostOnceAMillisecond(t *testing.T) {
	var g PollGroup
	// What the group saw a moment ago stands, whatever the host is now.
	g.hostLooked.Store(time.Now().UnixNano())
	g.hostCrowdedLooks.Store(hostCrowdedAfter)
	if !g.hostCrowded() {
		t.Error("the group looked again within the interval")
	}
	// Older than the interval: it looks again and counts what it sees.
	old := time.Now().Add(-2 * hostLookInterval).UnixNano()
	g.hostLooked.Store(old)
	g.hostCrowdedLooks.Store(0)
	g.hostCrowded()
	if g.hostLooked.Load() == old {
		t.Error("the group did not note when it looked")
	}
	if n := g.hostCrowdedLooks.Load(); n != 0 && n != 1 {
		t.Errorf("after one look the group counts %d crowded looks in a row", n)
	}
}

func TestPollGroupTakesTheHostAsCrowdedAfterTwoLooksInARow(t *testing.T) {
	for _, tt := range []struct {
		looks string // c: a look found the host crowded; q: quiet
		want  bool
	}{
		{"c", false},
		{"cc", true},
		{"ccc", true},
		{"cqc", false},
		{"ccq", false},
		{"qcc", true},
	} {
		var g PollGroup
		var got bool
		for _, l := range tt.looks {
			got = g.noteLook(l == 'c')
		}
		if got != tt.want {
			t.Errorf("looks %s: crowded %v, want %v", tt.looks, got, tt.want)
		}
	}
}

func TestBusyPollResponsesInPieces(t *testing.T) {
	// The server writes each response, and the next one's start, in pieces
	// at odd boundaries while two callers poll and the reader goroutine
	// waits: every byte must reach the inbox, whichever goroutine reads
	// it, and no response may be left unread. Run with the race detector.
	s := startServer(t, func(conn net.Conn, _ *Writer, reqs <-chan Request) {
		var out []byte
		for req := range reqs {
			frame := AppendResponseFrame(nil, Response{ID: req.ID, Payload: req.Payload})
			out = append(out, frame...)
			// Send all but a few bytes, in pieces; the rest goes with the
			// next response, or when no request follows soon.
			keep := len(frame) % 3
			for len(out) > keep {
				n := min(len(out)-keep, 1+len(out)%7)
				if _, err := conn.Write(out[:n]); err != nil {
					return
				}
				out = out[n:]
				time.Sleep(time.Duration(n) * time.Microsecond)
			}
			if len(reqs) == 0 && len(out) > 0 {
				time.Sleep(50 * time.Microsecond)
				if len(reqs) == 0 {
					if _, err := conn.Write(out); err != nil {
						return
					}
					out = out[:0]
				}
			}
		}
	})
	// A budget about as long as the pieces take: callers often stop
	// polling halfway through a response and leave the rest to the reader
	// goroutine.
	c, _ := dialPolling(t, s.path, 30*time.Microsecond)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range 200 {
				payload := mustPayload(t, map[string]any{"g": g, "i": i, "pad": bytes.Repeat([]byte{'x'}, i%37)})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := c.Call(ctx, payload)
				cancel()
				if err != nil || !bytes.Equal(got, payload) {
					t.Errorf("caller %d, call %d: %x, %v", g, i, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
