package protocol

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scriptedServer accepts one connection and hands each decoded request to
// handle, which may answer through the writer in any order.
type scriptedServer struct {
	ln   net.Listener
	path string
	wg   sync.WaitGroup
}

func startServer(t *testing.T, handle func(conn net.Conn, w *Writer, reqs <-chan Request)) *scriptedServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{ln: ln, path: path}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		reqs := make(chan Request, 64)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(reqs)
			r := bufio.NewReader(conn)
			for {
				body, err := ReadFrame(r, 0)
				if err != nil {
					return
				}
				req, err := DecodeRequest(body)
				if err != nil {
					return
				}
				reqs <- req
			}
		}()
		handle(conn, NewWriter(conn), reqs)
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func dial(t *testing.T, path string, opts ...ClientOption) *Client {
	t.Helper()
	c, err := Dial(context.Background(), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echoHandler(conn net.Conn, w *Writer, reqs <-chan Request) {
	for req := range reqs {
		if w.WriteResponse(Response{ID: req.ID, Payload: req.Payload}) != nil {
			return
		}
	}
}

func TestCallRoundTrip(t *testing.T) {
	s := startServer(t, echoHandler)
	c := dial(t, s.path)
	payload := mustPayload(t, map[string]any{"value": "hi"})
	got, err := c.Call(context.Background(), payload)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodePayload(got)
	if err != nil || m["value"] != "hi" {
		t.Fatalf("got %v, %v", m, err)
	}
}

func TestCallResponsesOutOfOrder(t *testing.T) {
	// The server holds the first request until the second has been answered.
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		first, ok := <-reqs
		if !ok {
			return
		}
		second, ok := <-reqs
		if !ok {
			return
		}
		_ = w.WriteResponse(Response{ID: second.ID, Payload: second.Payload})
		_ = w.WriteResponse(Response{ID: first.ID, Payload: first.Payload})
		echoHandler(conn, w, reqs)
	})
	c := dial(t, s.path)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Call(context.Background(), mustPayload(t, map[string]any{"n": i}))
			if err != nil {
				t.Error(err)
				return
			}
			m, _ := DecodePayload(got)
			if m["n"] != int64(i) {
				t.Errorf("call %d got response %v", i, m)
			}
		}()
	}
	wg.Wait()
}

func TestCallAppError(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for req := range reqs {
			_ = w.WriteResponse(Response{ID: req.ID, Error: EncodeError(&AppError{Type: "KeyError", Message: "missing", Details: map[string]any{"key": "x"}})})
		}
	})
	c := dial(t, s.path)
	_, err := c.Call(context.Background(), mustPayload(t, map[string]any{}))
	var appErr *AppError
	if !errors.As(err, &appErr) || appErr.Type != "KeyError" || appErr.Message != "missing" {
		t.Fatalf("err = %v", err)
	}
	if d, ok := appErr.Details.(map[string]any); !ok || d["key"] != "x" {
		t.Errorf("details = %#v", appErr.Details)
	}
	if _, err := c.Call(context.Background(), mustPayload(t, map[string]any{})); !errors.As(err, &appErr) {
		t.Fatalf("connection unusable after an app error: %v", err)
	}
}

func TestCallTimeoutDropsLateReply(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(c *Client, payload []byte) ([]byte, error)
		want error
	}{
		{"ctx deadline", func(c *Client, payload []byte) ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			return c.Call(ctx, payload)
		}, context.DeadlineExceeded},
		{"time limit", func(c *Client, payload []byte) ([]byte, error) {
			return c.CallWithin(context.Background(), payload, 20*time.Millisecond)
		}, ErrCallTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
				slow, ok := <-reqs
				if !ok {
					return
				}
				<-release
				_ = w.WriteResponse(Response{ID: slow.ID, Payload: slow.Payload}) // late: must be dropped
				echoHandler(conn, w, reqs)
			})
			c := dial(t, s.path)
			_, err := tc.call(c, mustPayload(t, map[string]any{"slow": true}))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n := c.InFlight(); n != 0 {
				t.Errorf("in flight after timeout = %d", n)
			}
			close(release)
			got, err := c.Call(context.Background(), mustPayload(t, map[string]any{"fast": true}))
			if err != nil {
				t.Fatal(err)
			}
			if m, _ := DecodePayload(got); m["fast"] != true {
				t.Errorf("got the late reply instead of our own: %v", m)
			}
		})
	}
}

// TestCallWithinDeadlineAndCancel checks what a server that declared the
// deadline and cancel capabilities receives: the earlier of the caller's
// deadline and the call's time limit, and a cancel when the limit passes.
func TestCallWithinDeadlineAndCancel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ctxTimeout time.Duration // 0: none
		limit      time.Duration // 0: none
		wantMax    time.Duration // the deadline sent is at most this, and more than half of it
		wantErr    error
	}{
		{"limit only", 0, 50 * time.Millisecond, 50 * time.Millisecond, ErrCallTimeout},
		{"limit first", time.Hour, 50 * time.Millisecond, 50 * time.Millisecond, ErrCallTimeout},
		{"ctx first", 50 * time.Millisecond, time.Hour, 50 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan Request, 2)
			s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
				for req := range reqs {
					got <- req // never answered
				}
			})
			c := dial(t, s.path, WithDeadlines(), WithCancel())
			ctx := context.Background()
			if tc.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxTimeout)
				defer cancel()
			}
			if _, err := c.CallWithin(ctx, mustPayload(t, map[string]any{}), tc.limit); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			req := <-got
			if req.Deadline > tc.wantMax || req.Deadline <= tc.wantMax/2 {
				t.Errorf("deadline sent = %v, want at most %v", req.Deadline, tc.wantMax)
			}
			if cancel := <-got; !cancel.Cancel || cancel.ID != req.ID {
				t.Errorf("after the timeout the server got %+v, want a cancel of %s", cancel, req.ID)
			}
		})
	}
}

func TestMalformedResponseFailsEveryPendingCall(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for range 3 {
			if _, ok := <-reqs; !ok {
				return
			}
		}
		_, _ = conn.Write([]byte{0, 0, 0, 2, 0x92, 0x01}) // an array, not an envelope
		for range reqs {
		}
	})
	c := dial(t, s.path)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Call(context.Background(), mustPayload(t, map[string]any{}))
			if !errors.Is(err, ErrConnectionClosed) || !IsMalformed(err) {
				t.Errorf("err = %v, want a connection error caused by a malformed envelope", err)
			}
		}()
	}
	wg.Wait()
	<-c.Done()
	if _, err := c.Call(context.Background(), mustPayload(t, map[string]any{})); !errors.Is(err, ErrConnectionClosed) {
		t.Errorf("call after failure: %v", err)
	}
}

func TestOversizedResponseFailsConnection(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		req, ok := <-reqs
		if !ok {
			return
		}
		_ = w.WriteResponse(Response{ID: req.ID, Payload: make([]byte, 2048)})
		for range reqs {
		}
	})
	c, err := Dial(context.Background(), s.path, WithMaxFrameSize(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Call(context.Background(), mustPayload(t, map[string]any{}))
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Fault != FaultTooLarge {
		t.Fatalf("err = %v, want a too-large frame error", err)
	}
}

func TestServerGoneFailsPendingCall(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		<-reqs
		conn.Close()
	})
	c := dial(t, s.path)
	_, err := c.Call(context.Background(), mustPayload(t, map[string]any{}))
	if !errors.Is(err, ErrConnectionClosed) {
		t.Fatalf("err = %v", err)
	}
}

func TestCloseFailsPendingCallPromptly(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for range reqs { // never answers
		}
	})
	c := dial(t, s.path)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), mustPayload(t, map[string]any{}))
		errc <- err
	}()
	for c.InFlight() == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	if err := <-errc; !errors.Is(err, ErrConnectionClosed) {
		t.Fatalf("err = %v", err)
	}
}

func TestUnknownResponseIsDropped(t *testing.T) {
	s := startServer(t, func(conn net.Conn, w *Writer, reqs <-chan Request) {
		for req := range reqs {
			_ = w.WriteResponse(Response{ID: ID{1}, Payload: req.Payload})
			_ = w.WriteResponse(Response{ID: req.ID, Payload: req.Payload})
		}
	})
	c := dial(t, s.path)
	for range 3 {
		if _, err := c.Call(context.Background(), mustPayload(t, map[string]any{})); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIDsAreCanonicalUUIDs(t *testing.T) {
	src := newIDSource()
	seen := map[ID]bool{}
	for range 1000 {
		id := src.id()
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
		s := id.String()
		back, err := ParseID(s)
		if err != nil || back != id || s[14] != '4' || (s[19] != '8' && s[19] != '9' && s[19] != 'a' && s[19] != 'b') {
			t.Fatalf("id %s is not a canonical v4 UUID (%v)", s, err)
		}
	}
}

func TestOversizedRequestFailsAloneWithoutSending(t *testing.T) {
	s := startServer(t, echoHandler)
	c, err := Dial(context.Background(), s.path, WithMaxFrameSize(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := mustPayload(t, map[string]any{"blob": make([]byte, 2048)})
	_, err = c.Call(context.Background(), big)
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Fault != FaultTooLarge || errors.Is(err, ErrConnectionClosed) {
		t.Fatalf("err = %v, want a too-large frame error that leaves the connection open", err)
	}
	if _, err := c.Call(context.Background(), mustPayload(t, map[string]any{"small": true})); err != nil {
		t.Fatalf("connection unusable after refusing a large request: %v", err)
	}
}

func TestFrameBuffered(t *testing.T) {
	whole, _ := AppendFrame(nil, []byte("abc"))
	for _, tt := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"nothing", nil, false},
		{"part of a header", whole[:2], false},
		{"a header without its body", whole[:HeaderSize], false},
		{"part of the body", whole[:len(whole)-1], false},
		{"a whole frame", whole, true},
		{"a frame and part of the next", append(append([]byte{}, whole...), whole[:3]...), true},
		{"a header claiming 4 GiB", []byte{0xff, 0xff, 0xff, 0xff, 1}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(tt.in))
			_, _ = r.Peek(len(tt.in)) // fill the buffer
			if got := FrameBuffered(r); got != tt.want {
				t.Errorf("FrameBuffered = %v, want %v", got, tt.want)
			}
		})
	}
}

// countingWriter counts the writes it is given.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestWriterQueuesResponsesUntilFlushed(t *testing.T) {
	var out countingWriter
	w := NewWriter(&out)
	for i := range 3 {
		if err := w.QueueResponse(Response{ID: ID{byte(i)}, Payload: []byte{0x80}}); err != nil {
			t.Fatal(err)
		}
	}
	if out.writes != 0 {
		t.Fatalf("%d writes before a flush", out.writes)
	}
	if err := w.WriteResponse(Response{ID: ID{3}, Payload: []byte{0x80}}); err != nil {
		t.Fatal(err)
	}
	if out.writes != 1 {
		t.Fatalf("four responses took %d writes, want 1", out.writes)
	}
	for i := range 4 {
		body, err := ReadFrame(&out, 0)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := DecodeResponse(body)
		if err != nil || resp.ID != (ID{byte(i)}) {
			t.Fatalf("frame %d: %+v, %v", i, resp, err)
		}
	}
	// A large queue goes out by itself; Flush writes the rest.
	big := Response{ID: ID{9}, Payload: append([]byte{0xc4, 0xff}, make([]byte, 255)...)}
	for out.writes == 1 {
		if err := w.QueueResponse(big); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.QueueResponse(big)
	before := out.writes
	if err := w.Flush(); err != nil || out.writes != before+1 {
		t.Fatalf("Flush: %v, %d writes after %d", err, out.writes, before)
	}
}

func TestWriterGathersRequestsOfGoroutinesRunnableTogether(t *testing.T) {
	// On one processor, goroutines released at once run one after the
	// other: the first to gather yields to the rest, and their frames go
	// out with its own.
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(1))
	var out countingWriter
	var mu sync.Mutex
	w := NewWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}))
	const n = 32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			if err := w.PutRequest(Request{ID: ID{byte(i)}, Payload: []byte{0x80}}, WriteGathered); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if out.writes > n/4 {
		t.Errorf("%d requests gathered at once took %d writes", n, out.writes)
	}
	seen := map[ID]bool{}
	for range n {
		body, err := ReadFrame(&out, 0)
		if err != nil {
			t.Fatal(err)
		}
		req, err := DecodeRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		seen[req.ID] = true
	}
	if len(seen) != n || out.Len() != 0 {
		t.Fatalf("%d distinct requests and %d bytes more, want %d and none", len(seen), out.Len(), n)
	}
	// Alone, a gatherer writes its own frame before it returns.
	if err := w.PutRequest(Request{ID: ID{200}, Payload: []byte{0x80}}, WriteGathered); err != nil || out.Len() == 0 {
		t.Fatalf("a lone gatherer: %v, %d bytes written", err, out.Len())
	}
}

func TestWriterGatherReportsAFailedWrite(t *testing.T) {
	broken := errors.New("broken pipe")
	w := NewWriter(writerFunc(func([]byte) (int, error) { return 0, broken }))
	if err := w.PutRequest(Request{ID: ID{1}, Payload: []byte{0x80}}, WriteGathered); !errors.Is(err, broken) {
		t.Fatalf("first: %v", err)
	}
	if err := w.PutRequest(Request{ID: ID{2}, Payload: []byte{0x80}}, WriteGathered); !errors.Is(err, broken) {
		t.Fatalf("after: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestCallWithinExpiresEachCallAtItsLimit checks the client's one expiry
// timer: each call fails at its own limit, a later call with an earlier
// limit than the one the timer is armed for fails on time, calls without
// a limit are left alone, and an answered call is not failed later.
func TestCallWithinExpiresEachCallAtItsLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clientEnd, serverEnd := net.Pipe()
		answer := make(chan ID)
		go func() { // answers only the requests it is told to
			defer serverEnd.Close()
			w, r := NewWriter(serverEnd), bufio.NewReader(serverEnd)
			go func() {
				for id := range answer {
					_ = w.WriteResponse(Response{ID: id, Payload: mustPayload(t, map[string]any{})})
				}
			}()
			for {
				body, err := ReadFrame(r, 0)
				if err != nil {
					close(answer)
					return
				}
				if req, err := DecodeRequest(body); err == nil && !req.Cancel {
					if m, _ := DecodePayload(req.Payload); m["answer"] == true {
						answer <- req.ID
					}
				}
			}
		}()
		c := NewClient(clientEnd)
		defer c.Close()
		start := time.Now()
		type result struct {
			name    string
			elapsed time.Duration
			err     error
		}
		results := make(chan result, 5)
		call := func(name string, after, limit time.Duration, answered bool) {
			time.Sleep(after)
			_, err := c.CallWithin(context.Background(), mustPayload(t, map[string]any{"answer": answered}), limit)
			results <- result{name, time.Since(start), err}
		}
		go call("3s limit", 0, 3*time.Second, false)
		go call("answered, 1s limit", 0, time.Second, true)
		go call("5s limit", 0, 5*time.Second, false)
		go call("1s limit, started at 1.5s", 1500*time.Millisecond, time.Second, false)
		go call("no limit", 0, 0, false)
		want := map[string]time.Duration{
			"answered, 1s limit":        0,
			"1s limit, started at 1.5s": 2500 * time.Millisecond,
			"3s limit":                  3 * time.Second,
			"5s limit":                  5 * time.Second,
		}
		for range want {
			r := <-results
			w, ok := want[r.name]
			switch {
			case !ok:
				t.Errorf("%s: ended at %v with %v", r.name, r.elapsed, r.err)
			case w == 0 && r.err != nil:
				t.Errorf("%s: %v", r.name, r.err)
			case w != 0 && (!errors.Is(r.err, ErrCallTimeout) || r.elapsed != w):
				t.Errorf("%s: ended at %v with %v, want ErrCallTimeout at %v", r.name, r.elapsed, r.err, w)
			}
		}
		c.Close() // fails the call without a limit
		if r := <-results; r.name != "no limit" || !errors.Is(r.err, ErrConnectionClosed) {
			t.Errorf("%s: %v, want the connection closed", r.name, r.err)
		}
	})
}
