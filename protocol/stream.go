package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
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
	c      *Client
	id     ID
	window int

	mu     sync.Mutex
	items  [][]byte // received and not yet taken
	bytes  int      // their total size
	credit int      // items the server may still send
	taken  int      // items taken and not yet granted back as credit
	end    error    // io.EOF, the stream's error, or nil while it runs
	ready  chan struct{}
	// stopWatch releases the watch on the request's context.
	stopWatch func()
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
	s := &Stream{c: c, id: c.ids.id(), window: window, credit: window, ready: make(chan struct{}, 1)}
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
	if c.poller != nil {
		c.poller.wake()
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { s.cancel(ctx.Err()) })
		s.mu.Lock()
		s.stopWatch = func() { stop() }
		ended := s.end != nil
		s.mu.Unlock()
		if ended {
			stop()
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
	for {
		s.mu.Lock()
		if len(s.items) > 0 {
			item := s.items[0]
			s.items[0] = nil
			s.items = s.items[1:]
			s.bytes -= len(item)
			grant := 0
			if s.end == nil {
				s.taken++
				// Credit goes back in batches of half the window, so a
				// steady stream costs one credit envelope per half window.
				if s.taken >= max(s.window/2, 1) {
					grant, s.taken = s.taken, 0
					s.credit += grant
				}
			}
			s.mu.Unlock()
			if grant > 0 {
				if err := s.c.writer.WriteRequest(Request{ID: s.id, Credit: grant}); err != nil {
					s.c.fail(fmt.Errorf("writing a credit: %w", err))
				}
			}
			return item, nil
		}
		if s.end != nil {
			err := s.end
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			s.cancel(ctx.Err())
			return nil, fmt.Errorf("request %s: %w", s.id, ctx.Err())
		}
	}
}

// Buffered returns the items received and not yet taken, and their total
// size in bytes.
func (s *Stream) Buffered() (items, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items), s.bytes
}

// errStreamClosed ends a stream its consumer closed.
var errStreamClosed = errors.New("stream closed")

// Close ends the stream: a stream still running is cancelled in the server
// (a cancel envelope) and its items dropped. Close after the end is a no-op.
func (s *Stream) Close() { s.cancel(errStreamClosed) }

// cancel ends a running stream with cause, tells the server, and drops
// what it buffered.
func (s *Stream) cancel(cause error) {
	c := s.c
	c.mu.Lock()
	running := c.streams[s.id] == s
	if running {
		delete(c.streams, s.id)
		c.countPendingLocked()
	}
	c.mu.Unlock()
	if !running {
		return
	}
	s.mu.Lock()
	s.items, s.bytes = nil, 0
	s.mu.Unlock()
	s.finish(fmt.Errorf("request %s: %w", s.id, cause))
	// Best effort: a connection that fails here fails every call on it.
	if err := c.writer.WriteRequest(Request{ID: s.id, Cancel: true}); err != nil {
		c.fail(fmt.Errorf("writing a cancel: %w", err))
	}
}

// finish records the end of the stream, unless it has one, and wakes Next.
func (s *Stream) finish(end error) {
	s.mu.Lock()
	first := s.end == nil
	if first {
		s.end = end
	}
	stop := s.stopWatch
	s.mu.Unlock()
	if first && stop != nil {
		stop()
	}
	s.signal()
}

func (s *Stream) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// deliver hands resp, read by the reader goroutine, to its stream s. An
// item beyond the credit granted is a protocol error, returned to end the
// connection.
func (c *Client) deliver(s *Stream, resp Response) error {
	if resp.Item {
		s.mu.Lock()
		if s.credit == 0 {
			s.mu.Unlock()
			return fmt.Errorf("the server sent an item for request %s beyond the credit it was granted", s.id)
		}
		s.credit--
		s.items = append(s.items, resp.Payload)
		s.bytes += len(resp.Payload)
		s.mu.Unlock()
		s.signal()
		return nil
	}
	// The stream's last envelope: its end, its error, or the one response
	// of a handler that does not stream, which is then the only item.
	c.mu.Lock()
	delete(c.streams, s.id)
	c.countPendingLocked()
	c.mu.Unlock()
	switch {
	case resp.End:
		s.finish(io.EOF)
	case resp.Payload != nil:
		s.mu.Lock()
		s.items = append(s.items, resp.Payload)
		s.bytes += len(resp.Payload)
		s.mu.Unlock()
		s.finish(io.EOF)
	default:
		appErr, err := DecodeError(resp.Error)
		if err != nil {
			s.finish(err)
			return err
		}
		s.finish(appErr)
	}
	return nil
}

func streamEnvelopeName(resp Response) string {
	if resp.Item {
		return "item"
	}
	return "end"
}
