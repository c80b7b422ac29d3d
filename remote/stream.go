package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/flow"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// Stream sends request to the application in the artifact at artifactPath,
// on the daemon, and yields its response items as they come, as
// runtime.Runtime.Stream does (docs/runtime.md, Streams): a handler that
// streams gives its items, any other its one response as the only item.
// The iterator's error, if any, comes after the items before it and ends
// the iteration. Items flow under credit on the execute channel: at most
// protocol.DefaultStreamWindow items wait here untaken, and a consumer
// that stops taking them stops the handler. Breaking out of the loop, or
// ctx ending, cancels the handler. A daemon without streams on its
// execute channel (or WithHTTPExecute) is sent an execute, whose response
// is the only item.
func (e *Executor) Stream(ctx context.Context, artifactPath string, request any) iter.Seq2[map[string]any, error] {
	return func(yield func(map[string]any, error) bool) {
		payload, err := runtime.EncodeRequest(request)
		if err != nil {
			yield(nil, err)
			return
		}
		for out, err := range e.StreamPayload(ctx, artifactPath, payload) {
			var item map[string]any
			if err == nil {
				item, err = runtime.DecodeResponse(artifactPath, out)
			}
			if !yield(item, err) || err != nil {
				return
			}
		}
	}
}

// StreamPayload is Stream for an encoded request payload (a msgpack map);
// it yields the encoded items.
func (e *Executor) StreamPayload(ctx context.Context, artifactPath string, payload []byte) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		var st *muxStream
		var only []byte
		err := e.locate(ctx, artifactPath, func(mreq api.MuxRequest) error {
			var err error
			st, only, err = e.openStream(ctx, artifactPath, mreq, payload)
			return err
		})
		if err != nil {
			yield(nil, err)
			return
		}
		if st == nil {
			yield(only, nil)
			return
		}
		defer st.close()
		for {
			item, err := st.next(ctx)
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, e.streamError(ctx, artifactPath, err))
				return
			}
			if !yield(item, nil) {
				return
			}
		}
	}
}

// openStream starts a stream of mreq with payload on the execute channel
// and waits for its first item or its end, so that an error before any
// item (the daemon cannot see the file, has lost the upload) lets locate
// try the next way. A daemon without streams is sent an execute instead,
// whose response is returned as only.
func (e *Executor) openStream(ctx context.Context, path string, mreq api.MuxRequest, payload []byte) (st *muxStream, only []byte, err error) {
	if !e.muxOff.Load() {
		m, err := e.openMux(ctx, path)
		switch {
		case err == nil && m.streams:
			// The whole stream is bounded by ctx, as in process.
			mreq.Payload, mreq.Stream, mreq.Deadline = payload, protocol.DefaultStreamWindow, m.timeLeft(ctx)
			st, err := m.startStream(mreq)
			if err != nil {
				return nil, nil, e.transportError(ctx, path, err)
			}
			if err := st.wait(ctx); err != nil {
				st.close()
				return nil, nil, e.streamError(ctx, path, err)
			}
			return st, nil, nil
		case err != nil && !errors.Is(err, errMuxUnsupported):
			return nil, nil, err
		}
	}
	only, err = e.post(ctx, mreq, path, payload)
	return nil, only, err
}

// streamError is the error a stream ended with: the daemon's error body
// as the runtime's error, else the channel's failure or ctx's end.
func (e *Executor) streamError(ctx context.Context, path string, err error) error {
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		return apiErr.Err(path)
	}
	return e.transportError(ctx, path, err)
}

// muxStream is a stream in progress on the execute channel: the items
// received and not yet taken, at most its window, under the credit
// granted.
type muxStream struct {
	m   *muxClient
	id  uint64
	win *flow.Window
}

// startStream registers a stream and sends its request.
func (m *muxClient) startStream(req api.MuxRequest) (*muxStream, error) {
	st := &muxStream{m: m, win: flow.NewWindow(int(req.Stream))}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	m.next++
	st.id, req.ID = m.next, m.next
	m.open[st.id] = st
	m.mu.Unlock()
	if err := m.write(req); err != nil {
		m.conn.Close() // the reader fails the others, and this one
		return nil, err
	}
	return st, nil
}

// deliver hands resp, read by the reader, to its stream st. An item beyond
// the credit granted is a protocol error, returned to end the channel.
func (m *muxClient) deliver(st *muxStream, resp api.MuxResponse) error {
	if resp.Item != nil {
		if err := st.win.Receive(resp.Item); err != nil {
			return fmt.Errorf("the daemon sent stream %d %w", st.id, err)
		}
		return nil
	}
	m.mu.Lock()
	delete(m.open, st.id)
	m.mu.Unlock()
	switch {
	case resp.End:
		st.win.Finish(io.EOF)
	case resp.Error != nil:
		st.win.Finish(decodeMuxError(resp.Error))
	default:
		// One response for the whole stream: its only item.
		st.win.Last(resp.Payload)
	}
	return nil
}

// wait waits until the stream has an item or has ended, and returns its
// error if it ended with one before any item.
func (st *muxStream) wait(ctx context.Context) error {
	return st.win.Wait(ctx)
}

// next returns the next item, granting the daemon credit back in half
// windows; io.EOF after the last. When ctx ends first, the stream is
// cancelled.
func (st *muxStream) next(ctx context.Context) ([]byte, error) {
	item, grant, err := st.win.Next(ctx)
	if grant > 0 {
		if err := st.m.write(api.MuxRequest{ID: st.id, Credit: uint64(grant)}); err != nil {
			st.m.conn.Close() // the reader fails the stream
		}
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		st.close()
		return nil, ctx.Err()
	}
	return item, err
}

// close ends the stream: one still running is cancelled in the daemon (a
// cancel frame) and its items dropped.
func (st *muxStream) close() {
	m := st.m
	m.mu.Lock()
	running := m.open[st.id] == st
	delete(m.open, st.id)
	m.mu.Unlock()
	st.win.Abort(errStreamClosed)
	if running && m.cancels {
		if err := m.write(api.MuxRequest{ID: st.id, Cancel: true}); err != nil {
			m.conn.Close()
		}
	}
}

var errStreamClosed = errors.New("stream closed")
