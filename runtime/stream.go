package runtime

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync"

	"github.com/ociapp/ociapp/protocol"
)

// streamSession is a session that can ask for a response as a stream;
// *protocol.Client is one.
type streamSession interface {
	Stream(ctx context.Context, payload []byte, window int) (*protocol.Stream, error)
}

// streamRegistry tracks the streams in progress, for Stats.
type streamRegistry struct {
	mu   sync.Mutex
	open map[*protocol.Stream]struct{}
}

func (g *streamRegistry) add(s *protocol.Stream) {
	g.mu.Lock()
	if g.open == nil {
		g.open = make(map[*protocol.Stream]struct{})
	}
	g.open[s] = struct{}{}
	g.mu.Unlock()
}

func (g *streamRegistry) remove(s *protocol.Stream) {
	g.mu.Lock()
	delete(g.open, s)
	g.mu.Unlock()
}

// buffered returns the streams in progress and the bytes of the items
// they hold, received from containers and not yet taken.
func (g *streamRegistry) buffered() (streams int, bytes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := range g.open {
		_, n := s.Buffered()
		bytes += int64(n)
	}
	return len(g.open), bytes
}

// Stream sends request to the application in the artifact at artifactPath
// and returns its response items as they come (docs/runtime.md,
// Streams). A handler that streams (an artifact declaring the stream
// capability) gives its items; any other gives its one response as the
// only item. The iterator's error, if any, comes after the items before it
// and ends the iteration: the errors of Execute, and the items' decoding
// errors.
//
// Items flow under the container's credit: the runtime holds at most
// protocol.DefaultStreamWindow items a consumer has not taken, and a
// consumer that stops taking them stops the handler. Breaking out of the
// loop, or ctx ending, cancels the handler. The request timeout bounds
// each wait for the next item, not the whole stream; the handler's
// deadline is ctx's, if it has one.
func (r *Runtime) Stream(ctx context.Context, artifactPath string, request any) iter.Seq2[map[string]any, error] {
	return func(yield func(map[string]any, error) bool) {
		payload, err := EncodeRequest(request)
		if err != nil {
			yield(nil, err)
			return
		}
		for out, err := range r.StreamPayload(ctx, artifactPath, payload) {
			var item map[string]any
			if err == nil {
				item, err = DecodeResponse(artifactPath, out)
			}
			if !yield(item, err) || err != nil {
				return
			}
		}
	}
}

// StreamPayload is Stream for an already encoded request payload; it
// yields the encoded items.
func (r *Runtime) StreamPayload(ctx context.Context, artifactPath string, payload []byte) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		r.requests.Begin()
		defer r.requests.End()
		p, art, err := r.pool(ctx, artifactPath, nil)
		if err != nil {
			yield(nil, r.countFailure(err))
			return
		}
		w, err := p.acquire(ctx, art)
		if err != nil {
			yield(nil, r.countFailure(err))
			return
		}
		ss, ok := w.sess.(streamSession)
		if !art.caps.stream || !ok {
			out, err := r.call(ctx, p, w, payload)
			yield(out, err)
			return
		}
		defer p.release(w)
		s, err := ss.Stream(ctx, payload, protocol.DefaultStreamWindow)
		if err != nil {
			yield(nil, r.countFailure(r.callError(ctx, p, w, err, false)))
			return
		}
		defer s.Close()
		r.streams.add(s)
		defer r.streams.remove(s)
		for {
			var item []byte
			var err error
			timedOut := false
			if items, _ := s.Buffered(); items > 0 {
				// An item is here: no wait for the timeout to bound, and
				// no timer to arm for it.
				item, err = s.Next(ctx)
			} else {
				nextCtx, cancel := context.WithTimeoutCause(ctx, r.cfg.requestTimeout, errRequestTimeout)
				item, err = s.Next(nextCtx)
				timedOut = context.Cause(nextCtx) == errRequestTimeout && errors.Is(err, context.DeadlineExceeded)
				cancel()
			}
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, r.countFailure(r.callError(ctx, p, w, err, timedOut)))
				return
			}
			if !yield(item, nil) {
				return
			}
		}
	}
}
