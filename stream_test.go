package ociapp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp"
	"github.com/ociapp/ociapp/protocol"
)

type streamRequest struct {
	// Count is how many items to send; -1 sends until cancelled.
	Count int `msgpack:"count"`
	// Then, after the items: "" ends the stream, "fail" returns an error,
	// "panic" panics.
	Then string `msgpack:"then,omitempty"`
}

type streamItem struct {
	I int64 `msgpack:"i"`
}

// streamRecord is what the test stream handler reports: the items it
// produced (counted before each send) and how its streams ended.
type streamRecord struct {
	produced atomic.Int64
	ended    chan error // the error send returned, for streams that ended by one
}

func newStreamHandler(rec *streamRecord) ociapp.Handler {
	return ociapp.NewStreamHandler[streamRequest, streamItem](ociapp.StreamFunc[streamRequest, streamItem](
		func(ctx context.Context, req streamRequest, send func(streamItem) error) error {
			for i := int64(0); req.Count < 0 || i < int64(req.Count); i++ {
				rec.produced.Add(1)
				if err := send(streamItem{I: i}); err != nil {
					if ctx.Err() == nil {
						return errors.New("send failed, but the request's context has not ended")
					}
					rec.ended <- err
					return err
				}
			}
			switch req.Then {
			case "fail":
				return &ociapp.Error{Type: "StreamFailed", Message: "failed after the items"}
			case "panic":
				panic("mid-stream")
			}
			return nil
		}))
}

func serveStreams(t *testing.T) (*protocol.Client, *streamRecord, string) {
	t.Helper()
	rec := &streamRecord{ended: make(chan error, 64)}
	path := serve(t, newStreamHandler(rec))
	return dial(t, path), rec, path
}

func openStream(t *testing.T, ctx context.Context, c *protocol.Client, req any, window int) *protocol.Stream {
	t.Helper()
	payload, err := protocol.EncodePayload(req)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Stream(ctx, payload, window)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// drain takes the items of s until its end, returning their indexes and
// the error that ended it (io.EOF after the last item).
func drain(ctx context.Context, s *protocol.Stream) ([]int64, error) {
	var got []int64
	for {
		item, err := s.Next(ctx)
		if err != nil {
			return got, err
		}
		m, err := protocol.DecodePayload(item)
		if err != nil {
			return got, err
		}
		i, ok := m["i"].(int64)
		if !ok {
			return got, errors.New("an item without its index")
		}
		got = append(got, i)
	}
}

func checkSequence(t *testing.T, got []int64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d items, want %d", len(got), n)
	}
	for k, i := range got {
		if i != int64(k) {
			t.Fatalf("item %d is %d", k, i)
		}
	}
}

// waitBuffered polls until s holds n items received and not taken.
func waitBuffered(t *testing.T, s *protocol.Stream, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		items, _ := s.Buffered()
		if items == n {
			return
		}
		if items > n || time.Now().After(deadline) {
			t.Fatalf("%d items buffered, waiting for %d", items, n)
		}
	}
}

func waitEnded(t *testing.T, rec *streamRecord) error {
	t.Helper()
	select {
	case err := <-rec.ended:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the handler's context did not end")
		return nil
	}
}

func TestStreamItemsArriveCompleteAndInOrder(t *testing.T) {
	c, _, _ := serveStreams(t)
	const n = 10_000
	s := openStream(t, t.Context(), c, streamRequest{Count: n}, 0)
	got, err := drain(t.Context(), s)
	if err != io.EOF {
		t.Fatalf("the stream ended with %v, want io.EOF", err)
	}
	checkSequence(t, got, n)
}

// A consumer that stops taking items stops the producer: it holds at most
// the credit it was granted, and one more item waits in send.
func TestStreamConsumerHoldsTheProducer(t *testing.T) {
	c, rec, _ := serveStreams(t)
	const window = 8
	s := openStream(t, t.Context(), c, streamRequest{Count: -1}, window)
	waitBuffered(t, s, window)
	if produced := rec.produced.Load(); produced > window+1 {
		t.Fatalf("the handler produced %d items for a window of %d", produced, window)
	}
	// Taking half the window grants that much credit back, and no more.
	for range window / 2 {
		if _, err := s.Next(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitBuffered(t, s, window)
	if produced := rec.produced.Load(); produced > window+window/2+1 {
		t.Fatalf("the handler produced %d items after %d were taken from a window of %d", produced, window/2, window)
	}
	s.Close()
	if err := waitEnded(t, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("send returned %v, want context.Canceled", err)
	}
}

// A stream that fails or panics after k items delivers the k items, then
// its error.
func TestStreamErrorAfterItems(t *testing.T) {
	c, _, _ := serveStreams(t)
	for _, tt := range []struct {
		then string
		want protocol.AppError
	}{
		{"fail", protocol.AppError{Type: "StreamFailed", Message: "failed after the items"}},
		{"panic", protocol.AppError{Type: "Panic", Message: "mid-stream"}},
	} {
		t.Run(tt.then, func(t *testing.T) {
			const k = 5
			s := openStream(t, t.Context(), c, streamRequest{Count: k, Then: tt.then}, 2)
			got, err := drain(t.Context(), s)
			checkSequence(t, got, k)
			var appErr *protocol.AppError
			if !errors.As(err, &appErr) || appErr.Type != tt.want.Type || appErr.Message != tt.want.Message {
				t.Fatalf("the stream ended with %v, want %s: %s", err, tt.want.Type, tt.want.Message)
			}
		})
	}
	// The connection survives.
	got, err := drain(t.Context(), openStream(t, t.Context(), c, streamRequest{Count: 3}, 0))
	if err != io.EOF {
		t.Fatal(err)
	}
	checkSequence(t, got, 3)
}

// A stream blocked in send waiting for credit holds up neither the
// connection nor the server; Close cancels it.
func TestStreamCloseCancelsBlockedSend(t *testing.T) {
	c, rec, _ := serveStreams(t)
	blocked := openStream(t, t.Context(), c, streamRequest{Count: -1}, 1)
	waitBuffered(t, blocked, 1)
	// The connection serves other streams meanwhile.
	got, err := drain(t.Context(), openStream(t, t.Context(), c, streamRequest{Count: 100}, 4))
	if err != io.EOF {
		t.Fatal(err)
	}
	checkSequence(t, got, 100)
	blocked.Close()
	if err := waitEnded(t, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("send returned %v, want context.Canceled", err)
	}
	if _, err := blocked.Next(t.Context()); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Next after Close: %v, want the close", err)
	}
	got, err = drain(t.Context(), openStream(t, t.Context(), c, streamRequest{Count: 10}, 0))
	if err != io.EOF {
		t.Fatal(err)
	}
	checkSequence(t, got, 10)
}

// A stream blocked in send when its client's connection ends is
// cancelled: no credit can come any more.
func TestStreamConnectionEndCancelsBlockedSend(t *testing.T) {
	_, rec, path := serveStreams(t)
	c, err := protocol.Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s := openStream(t, t.Context(), c, streamRequest{Count: -1}, 2)
	waitBuffered(t, s, 2)
	c.Close()
	if err := waitEnded(t, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("send returned %v, want context.Canceled", err)
	}
}

// A stream whose deadline passes while it waits for credit ends with
// context.DeadlineExceeded, and nothing more is written for it.
func TestStreamDeadlineWhileBlockedInSend(t *testing.T) {
	_, rec, path := serveStreams(t)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := protocol.NewWriter(conn)
	first, second := protocol.ID{0x40, 1}, protocol.ID{0x40, 2}
	forever, err := protocol.EncodePayload(streamRequest{Count: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRequest(protocol.Request{ID: first, Payload: forever, Deadline: 50 * time.Millisecond, Stream: 1}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	read := func() protocol.Response {
		t.Helper()
		body, err := protocol.ReadFrame(conn, 0)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := protocol.DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := read(); resp.ID != first || !resp.Item {
		t.Fatalf("got %+v, want the first item", resp)
	}
	if err := waitEnded(t, rec); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send returned %v, want context.DeadlineExceeded", err)
	}
	two, err := protocol.EncodePayload(streamRequest{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRequest(protocol.Request{ID: second, Payload: two, Stream: 4}); err != nil {
		t.Fatal(err)
	}
	for items := 0; ; {
		resp := read()
		if resp.ID != second {
			t.Fatalf("got %+v for the stream past its deadline", resp)
		}
		if resp.End {
			if items != 2 {
				t.Fatalf("%d items, want 2", items)
			}
			return
		}
		if !resp.Item {
			t.Fatalf("got %+v, want an item or the end", resp)
		}
		items++
	}
}

// Credit envelopes for no request in progress, or for one that is not a
// stream, are ignored; the connection goes on. The three frames arrive
// together, so the unary response waits to go out with the next request's
// (Writer.QueueResponse): the credit envelope after it must not hold it
// back while the server waits for more.
func TestStreamCreditForNoStreamIsIgnored(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	unary := protocol.ID{0x40, 3}
	echo, err := protocol.EncodePayload(map[string]any{"mode": "echo"})
	if err != nil {
		t.Fatal(err)
	}
	var frames []byte
	for _, req := range []protocol.Request{
		{ID: protocol.ID{0x40, 9}, Credit: 5},
		{ID: unary, Payload: echo},
		{ID: unary, Credit: 5},
	} {
		frames = protocol.AppendRequestFrame(frames, req)
	}
	if _, err := conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	body, err := protocol.ReadFrame(conn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := protocol.DecodeResponse(body); err != nil || resp.ID != unary || resp.Payload == nil || resp.Item || resp.End {
		t.Fatalf("got %+v, %v; want the unary response", resp, err)
	}
}

func TestStreamRequired(t *testing.T) {
	c, _, _ := serveStreams(t)
	_, err := call(t, c, streamRequest{Count: 1})
	var appErr *protocol.AppError
	if !errors.As(err, &appErr) || appErr.Type != "StreamRequired" ||
		appErr.Message != "this application streams its responses: call it as a stream" {
		t.Fatalf("a unary call to a stream handler: %v", err)
	}
}

// A stream handler validates its request as a unary one does.
func TestStreamValidatesTheRequest(t *testing.T) {
	c, rec, _ := serveStreams(t)
	_, err := drain(t.Context(), openStream(t, t.Context(), c, map[string]any{"count": "many"}, 0))
	var appErr *protocol.AppError
	if !errors.As(err, &appErr) || appErr.Type != protocol.ErrorTypeValidation {
		t.Fatalf("the stream ended with %v, want a ValidationError", err)
	}
	if produced := rec.produced.Load(); produced != 0 {
		t.Fatalf("the handler ran on an invalid request: %d items", produced)
	}
}

// A unary handler asked for a stream answers its one response: the
// stream's only item, or its error.
func TestUnaryHandlerAskedForAStream(t *testing.T) {
	c := dial(t, serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{})))
	s := openStream(t, t.Context(), c, map[string]any{"mode": "echo", "count": 7}, 0)
	item, err := s.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := protocol.DecodePayload(item); err != nil || m["count"] != int64(7) {
		t.Fatalf("item %v, %v", m, err)
	}
	if _, err := s.Next(t.Context()); err != io.EOF {
		t.Fatalf("after the one item: %v, want io.EOF", err)
	}
	_, err = drain(t.Context(), openStream(t, t.Context(), c, map[string]any{"mode": "typed-error"}, 0))
	var appErr *protocol.AppError
	if !errors.As(err, &appErr) || appErr.Type != "QuotaExceeded" {
		t.Fatalf("the stream ended with %v, want QuotaExceeded", err)
	}
}

// Many streams at once on one connection, each under a small window.
func TestManyStreamsOnOneConnection(t *testing.T) {
	c, _, _ := serveStreams(t)
	const streams, n = 16, 300
	var wg sync.WaitGroup
	for k := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload, err := protocol.EncodePayload(streamRequest{Count: n})
			if err != nil {
				t.Error(err)
				return
			}
			s, err := c.Stream(t.Context(), payload, 1+k%3)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			got, err := drain(t.Context(), s)
			if err != io.EOF || len(got) != n {
				t.Errorf("stream %d: %d items, then %v", k, len(got), err)
				return
			}
			for j, i := range got {
				if i != int64(j) {
					t.Errorf("stream %d: item %d is %d", k, j, i)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestStreamSchemaCommand(t *testing.T) {
	var out, errOut strings.Builder
	code := ociapp.Run(context.Background(), newStreamHandler(&streamRecord{}), []string{"schema"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{`"title": "streamRequest"`, `"response": {`, `"title": "streamItem"`, `"stream": true`, `"capabilities": [`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("schema lacks %s:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := ociapp.Run(context.Background(), ociapp.NewHandler[testRequest, testResponse](testApp{}), []string{"schema"}, &out, &errOut); code != 0 || strings.Contains(out.String(), `"stream": true`) {
		t.Errorf("a unary app's schema (exit %d) says it streams:\n%s", code, out.String())
	}
}
