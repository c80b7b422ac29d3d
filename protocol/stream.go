package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ociapp/ociapp/internal/flow"
)

// DefaultStreamWindow is how many items a stream holds received and not
// yet taken, unless Client.Stream is given another window: the initial
// credit, and the most the client buffers.
const DefaultStreamWindow = 16

// Stream is the response of a request asked for as a stream (the stream
// capability, docs/protocol.md): its items, in order, as the server sends
// them. The client grants the server credit as items are taken, so it
// holds at most its window of items; a consumer that stops calling Next
// stops the producer.
type Stream struct {
	c   *Client
	id  ID
	win *flow.Window

	mu sync.Mutex
	// stopWatch releases the watch on the request's context, once the
	// stream is over.
	stopWatch func() bool
}

// Stream sends one request payload asking for its response as a stream of
// at most window items in flight (DefaultStreamWindow when window < 1) and
// returns the stream; read it with Next, and Close it when done. Only a
// server whose artifact declares the stream capability may be sent one.
// ctx bounds the request: its deadline is sent with WithDeadlines, and
// when it ends the stream is cancelled.
func (c *Client) Stream(ctx context.Context, payload []byte, window int) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if size := len(payload) + requestOverhead; size > c.maxFrame {
		return nil, &FrameError{Fault: FaultTooLarge, Length: size, Max: c.maxFrame}
	}
	if window < 1 {
		window = DefaultStreamWindow
	}
	s := &Stream{c: c, id: c.ids.id(), win: flow.NewWindow(window)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.streams[s.id] = s
	c.countPendingLocked()
	c.mu.Unlock()

	req := Request{ID: s.id, Payload: payload, Stream: window}
	if dl, ok := ctx.Deadline(); ok && c.deadlines {
		req.Deadline = max(time.Until(dl), time.Millisecond)
	}
	if err := c.writer.WriteRequest(req); err != nil {
		c.fail(fmt.Errorf("writing request: %w", err))
	}
	if ctx.Done() != nil {
		s.mu.Lock()
		s.stopWatch = context.AfterFunc(ctx, func() { s.cancel(ctx.Err()) })
		s.mu.Unlock()
		if !s.running() {
			s.over()
		}
	}
	return s, nil
}

// ID returns the request id of the stream.
func (s *Stream) ID() ID { return s.id }

// Next returns the next item, waiting for it until ctx ends. After the
// last item it returns io.EOF; a stream that failed returns its error
// after the items sent before it: an *AppError, or an error matching
// ErrConnectionClosed. When ctx ends first, the stream is cancelled and
// Next returns an error wrapping ctx.Err().
func (s *Stream) Next(ctx context.Context) ([]byte, error) {
	item, grant, err := s.win.Next(ctx)
	if grant > 0 {
		if err := s.c.writer.WriteRequest(Request{ID: s.id, Credit: grant}); err != nil {
			s.c.fail(fmt.Errorf("writing a credit: %w", err))
		}
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		s.cancel(ctx.Err())
		return nil, fmt.Errorf("request %s: %w", s.id, ctx.Err())
	}
	return item, err
}

// Buffered returns the items received and not yet taken, and their total
// size in bytes.
func (s *Stream) Buffered() (items, bytes int) { return s.win.Buffered() }

// errStreamClosed ends a stream its consumer closed.
var errStreamClosed = errors.New("stream closed")

// Close ends the stream: a stream still running is cancelled in the server
// (a cancel envelope) and its items dropped. Close after the end is a no-op.
func (s *Stream) Close() { s.cancel(errStreamClosed) }

func (s *Stream) running() bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.c.streams[s.id] == s
}

// forget removes the stream from the client's, reporting whether it was
// running.
func (s *Stream) forget() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[s.id] != s {
		return false
	}
	delete(c.streams, s.id)
	c.countPendingLocked()
	return true
}

// over releases what watches a stream that has ended.
func (s *Stream) over() {
	s.mu.Lock()
	stop := s.stopWatch
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// cancel ends a running stream with cause, tells the server, and drops
// what it buffered.
func (s *Stream) cancel(cause error) {
	if !s.forget() {
		return
	}
	s.win.Abort(fmt.Errorf("request %s: %w", s.id, cause))
	s.over()
	// Best effort: a connection that fails here fails every call on it.
	if err := s.c.writer.WriteRequest(Request{ID: s.id, Cancel: true}); err != nil {
		s.c.fail(fmt.Errorf("writing a cancel: %w", err))
	}
}

// fail ends the stream with the connection's failure, keeping the items
// received before it.
func (s *Stream) fail(err error) {
	s.win.Finish(err)
	s.over()
}

// deliver hands resp, read by the reader goroutine, to its stream s. An
// item beyond the credit granted is a protocol error, returned to end the
// connection.
func (c *Client) deliver(s *Stream, resp Response) error {
	if resp.Item {
		if err := s.win.Receive(resp.Payload); err != nil {
			return fmt.Errorf("the server sent request %s %w", s.id, err)
		}
		return nil
	}
	// The stream's last envelope: its end, its error, or the one response
	// of a handler that does not stream, which is then the only item.
	s.forget()
	defer s.over()
	switch {
	case resp.End:
		s.win.Finish(io.EOF)
	case resp.Payload != nil:
		s.win.Last(resp.Payload)
	default:
		appErr, err := DecodeError(resp.Error)
		if err != nil {
			s.win.Finish(err)
			return err
		}
		s.win.Finish(appErr)
	}
	return nil
}

func streamEnvelopeName(resp Response) string {
	if resp.Item {
		return "item"
	}
	return "end"
}
