package protocol

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// streamingServer answers each stream request with n items {"i": k},
// sending only while it holds credit, then an end envelope; it reports
// each credit and cancel it reads on events.
func streamingServer(n int, events chan<- Request) func(net.Conn, *Writer, <-chan Request) {
	return func(_ net.Conn, w *Writer, reqs <-chan Request) {
		var id ID
		credit, sent := 0, 0
		for {
			for credit > 0 && sent < n {
				payload, _ := EncodePayload(map[string]any{"i": sent})
				if w.WriteResponse(Response{ID: id, Payload: payload, Item: true}) != nil {
					return
				}
				credit--
				sent++
				if sent == n {
					_ = w.WriteResponse(Response{ID: id, End: true})
				}
			}
			req, ok := <-reqs
			if !ok {
				return
			}
			switch {
			case req.Stream > 0:
				id, credit = req.ID, req.Stream
			case req.Credit > 0:
				credit += req.Credit
			}
			if events != nil && (req.Credit > 0 || req.Cancel) {
				events <- req
			}
		}
	}
}

func itemIndex(t *testing.T, item []byte) int64 {
	t.Helper()
	v, err := DecodePayload(item)
	if err != nil {
		t.Fatal(err)
	}
	return v["i"].(int64)
}

func TestStreamItemsInOrderUnderCredit(t *testing.T) {
	const n = 1000
	srv := startServer(t, streamingServer(n, nil))
	c := dial(t, srv.path)
	s, err := c.Stream(t.Context(), []byte{0x80}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for k := range n {
		item, err := s.Next(t.Context())
		if err != nil {
			t.Fatalf("item %d: %v", k, err)
		}
		if got := itemIndex(t, item); got != int64(k) {
			t.Fatalf("item %d is %d", k, got)
		}
		if items, _ := s.Buffered(); items > 4 {
			t.Fatalf("%d items buffered, beyond the window of 4", items)
		}
	}
	if _, err := s.Next(t.Context()); err != io.EOF {
		t.Fatalf("after the last item: %v, want io.EOF", err)
	}
	if c.InFlight() != 0 {
		t.Fatalf("%d requests in flight after the end", c.InFlight())
	}
}

func TestStreamConsumerThatStopsHoldsTheServer(t *testing.T) {
	events := make(chan Request, 64)
	srv := startServer(t, streamingServer(1_000_000, events))
	c := dial(t, srv.path)
	const window = 8
	s, err := c.Stream(t.Context(), []byte{0x80}, window)
	if err != nil {
		t.Fatal(err)
	}
	// Taking half the window grants it back, once.
	for range window / 2 {
		if _, err := s.Next(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if ev := <-events; ev.Credit != window/2 {
		t.Fatalf("got %+v, want a credit of %d", ev, window/2)
	}
	// Then the consumer stops: the server, out of credit, sends the rest
	// of the window and no more (an item beyond it would end the
	// connection), and the client grants nothing more.
	for {
		items, bytes := s.Buffered()
		if items == window {
			if want := window * len(mustPayload(t, map[string]any{"i": 0})); bytes != want {
				t.Fatalf("%d bytes buffered for %d items, want %d", bytes, items, want)
			}
			break
		}
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case ev := <-events:
		t.Fatalf("got %+v while the consumer took nothing", ev)
	default:
	}
	s.Close()
	if ev := <-events; !ev.Cancel || ev.ID != s.ID() {
		t.Fatalf("got %+v after Close, want a cancel", ev)
	}
	if items, _ := s.Buffered(); items != 0 {
		t.Fatalf("%d items kept after Close", items)
	}
	if _, err := s.Next(t.Context()); !errors.Is(err, errStreamClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

func TestStreamEnds(t *testing.T) {
	item := func(i int) Response {
		p, _ := EncodePayload(map[string]any{"i": i})
		return Response{Payload: p, Item: true}
	}
	appErr := EncodeError(&AppError{Type: "StreamFailed", Message: "failed at 2"})
	unary, _ := EncodePayload(map[string]any{"i": 0})
	tests := []struct {
		name  string
		sends []Response // IDs filled in
		items int
		check func(error) bool
	}{
		{"end", []Response{item(0), item(1), {End: true}}, 2, func(err error) bool { return err == io.EOF }},
		{"error after items", []Response{item(0), item(1), {Error: appErr}}, 2, func(err error) bool {
			var ae *AppError
			return errors.As(err, &ae) && ae.Type == "StreamFailed"
		}},
		{"one response from a handler that does not stream", []Response{{Payload: unary}}, 1, func(err error) bool { return err == io.EOF }},
		{"item beyond the credit", []Response{item(0), item(1), item(2)}, 2, func(err error) bool { return errors.Is(err, ErrConnectionClosed) }},
		{"server gone", []Response{item(0)}, 1, func(err error) bool { return errors.Is(err, ErrConnectionClosed) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, func(_ net.Conn, w *Writer, reqs <-chan Request) {
				req := <-reqs
				for _, r := range tt.sends {
					r.ID = req.ID
					_ = w.WriteResponse(r)
				}
			})
			c := dial(t, srv.path)
			s, err := c.Stream(t.Context(), []byte{0x80}, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// Taking nothing until the items are in keeps the credit at 2.
			for k := range tt.items {
				for {
					if items, _ := s.Buffered(); items > k || c.Err() != nil {
						break
					}
					time.Sleep(time.Millisecond)
				}
			}
			for k := range tt.items {
				item, err := s.Next(t.Context())
				if err != nil {
					t.Fatalf("item %d: %v", k, err)
				}
				if got := itemIndex(t, item); got != int64(k) {
					t.Fatalf("item %d is %d", k, got)
				}
			}
			if _, err := s.Next(t.Context()); !tt.check(err) {
				t.Fatalf("after the items: %v", err)
			}
		})
	}
}

func TestStreamContextEndCancelsIt(t *testing.T) {
	events := make(chan Request, 4)
	srv := startServer(t, func(_ net.Conn, _ *Writer, reqs <-chan Request) {
		for req := range reqs {
			events <- req
		}
	})
	c := dial(t, srv.path, WithDeadlines())
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	s, err := c.Stream(ctx, []byte{0x80}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if req := <-events; req.Stream != DefaultStreamWindow || req.Deadline <= 59*time.Minute {
		t.Fatalf("request %+v, want the default window and the deadline", req)
	}
	cancel()
	if req := <-events; !req.Cancel || req.ID != s.ID() {
		t.Fatalf("got %+v, want a cancel", req)
	}
	if _, err := s.Next(t.Context()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next: %v, want context.Canceled", err)
	}
	if c.InFlight() != 0 {
		t.Fatalf("%d in flight after the cancel", c.InFlight())
	}
}
