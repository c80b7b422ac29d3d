package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/protocol"
)

// maxMuxResponse bounds a response frame: the largest payload a container
// sends, with room for the envelope.
const maxMuxResponse = protocol.DefaultMaxFrameSize + api.MuxEnvelopeAllowance

// errMuxUnsupported is a daemon without the execute channel: the executor
// uses HTTP requests instead.
var errMuxUnsupported = errors.New("the daemon has no execute channel")

// muxClient is one execute channel to the daemon: requests written as they
// come, answers matched by id as they complete.
type muxClient struct {
	conn      net.Conn
	reader    *protocol.FrameReader
	done      chan struct{} // closed when the reader has stopped
	cancels   bool          // the daemon takes cancel frames
	streams   bool          // the daemon takes stream requests
	deadlines bool          // the daemon applies a request's deadline_ms

	w *protocol.Writer

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan api.MuxResponse
	open    map[uint64]*muxStream // streams in progress
	err     error                 // why the channel ended
}

// dialMux opens an execute channel: it connects as the HTTP client does,
// then upgrades.
func (e *Executor) dialMux(ctx context.Context) (*muxClient, error) {
	conn, err := e.dialConn(ctx)
	if err != nil {
		return nil, err
	}
	if e.tlsConf != nil {
		cfg := e.tlsConf.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(e.dialAddr)
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	m, err := e.upgrade(conn)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go m.read()
	return m, nil
}

func (e *Executor) upgrade(conn net.Conn) (*muxClient, error) {
	req := "GET " + api.MuxPath + " HTTP/1.1\r\nHost: ociapp-runtime\r\nConnection: Upgrade\r\nUpgrade: " + api.MuxProtocol + "\r\n"
	if e.token != "" {
		req += "Authorization: Bearer " + e.token + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode < 300:
			// A daemon from before the channel, or something between
			// that does not pass upgrades.
			return nil, errMuxUnsupported
		}
		return nil, decodeError(resp, body)
	}
	m := &muxClient{
		conn: conn, done: make(chan struct{}), w: protocol.NewWriter(conn),
		pending:   make(map[uint64]chan api.MuxResponse),
		open:      make(map[uint64]*muxStream),
		cancels:   api.HeaderHas(resp.Header, api.MuxFeaturesHeader, api.MuxFeatureCancel),
		streams:   api.HeaderHas(resp.Header, api.MuxFeaturesHeader, api.MuxFeatureStream),
		deadlines: api.HeaderHas(resp.Header, api.MuxFeaturesHeader, api.MuxFeatureDeadline),
	}
	// Callers do not poll for their answers, as a protocol.Client's do:
	// the daemon already polls its container for the same request, and a
	// second poller on the path leaves the container waiting for a CPU.
	// BenchmarkRemoteOverhead/daemon/c1 on 2 CPUs on 2026-11-29: 61-77 µs
	// p50 with the caller polling, 25-34 µs without.
	m.reader = protocol.NewFrameReader(conn, maxMuxResponse, m.deliverFrame, func(error) { conn.Close() })
	return m, nil
}

// read runs the channel's reader until the channel ends, then fails the
// requests still waiting.
func (m *muxClient) read() {
	defer close(m.done)
	err := m.reader.Run()
	if errors.Is(err, io.EOF) {
		err = errors.New("the daemon closed the execute channel")
	}
	m.mu.Lock()
	m.err = err
	for id, ch := range m.pending {
		delete(m.pending, id)
		close(ch)
	}
	open := m.open
	m.open = make(map[uint64]*muxStream)
	m.mu.Unlock()
	for _, st := range open {
		st.win.Finish(err)
	}
	m.conn.Close()
}

// deliverFrame hands one answer to the request or stream it belongs to.
func (m *muxClient) deliverFrame(body []byte) error {
	resp, err := api.DecodeMuxResponse(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if st := m.open[resp.ID]; st != nil {
		m.mu.Unlock()
		return m.deliver(st, resp)
	}
	ch := m.pending[resp.ID]
	delete(m.pending, resp.ID)
	m.mu.Unlock()
	if ch != nil {
		ch <- resp // buffered
	}
	return nil
}

// broken reports why the channel ended, or nil.
func (m *muxClient) broken() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// call sends req and waits for its answer. A nil response and nil error
// never happen; a channel that ended before the answer is an error.
func (m *muxClient) call(ctx context.Context, req api.MuxRequest) (api.MuxResponse, error) {
	ch := make(chan api.MuxResponse, 1)
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return api.MuxResponse{}, m.err
	}
	m.next++
	req.ID = m.next
	m.pending[req.ID] = ch
	// Under load, callers woken together gather their requests into one
	// write, as a protocol.Client's do.
	mode := protocol.ModeFor(len(m.pending))
	m.mu.Unlock()

	req.Deadline = m.timeLeft(ctx)
	if err := m.put(req, mode); err != nil {
		m.conn.Close() // the reader fails the others
		m.forget(req.ID)
		return api.MuxResponse{}, err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return api.MuxResponse{}, m.broken()
		}
		return resp, nil
	case <-ctx.Done():
		// A daemon that takes cancel frames cancels the request in its
		// container; another finishes it. Either way its answer, should
		// it come, is dropped.
		m.forget(req.ID)
		if m.cancels {
			if err := m.write(api.MuxRequest{ID: req.ID, Cancel: true}); err != nil {
				m.conn.Close() // the reader fails the others
			}
		}
		return api.MuxResponse{}, ctx.Err()
	}
}

// write sends one frame.
func (m *muxClient) write(req api.MuxRequest) error { return m.put(req, protocol.WriteNow) }

// put sends one frame, when mode says.
func (m *muxClient) put(req api.MuxRequest, mode protocol.WriteMode) error {
	return m.w.Put(func(b []byte) []byte { return api.AppendMuxRequest(b, req) }, mode)
}

// timeLeft is a request's Deadline under ctx: its time left for a daemon
// that applies it, else none (a daemon from before deadlines would ignore
// the key; it is sent only to one that says it applies it).
func (m *muxClient) timeLeft(ctx context.Context) time.Duration {
	if !m.deadlines {
		return 0
	}
	return api.TimeLeft(ctx)
}

func (m *muxClient) forget(id uint64) {
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
}

func (m *muxClient) close() {
	m.conn.Close()
	<-m.done
}

// executeMux runs req on the execute channel, opening it when needed. It
// returns errMuxUnsupported when the daemon has none.
func (e *Executor) executeMux(ctx context.Context, path string, req api.MuxRequest) ([]byte, error) {
	m, err := e.openMux(ctx, path)
	if err != nil {
		return nil, err
	}
	resp, err := m.call(ctx, req)
	if err != nil {
		return nil, e.transportError(ctx, path, err)
	}
	if resp.Error != nil {
		return nil, decodeMuxError(resp.Error).Err(path)
	}
	return resp.Payload, nil
}

// openMux returns the execute channel, opening it when needed, or
// errMuxUnsupported when the daemon has none; path is the caller's
// artifact, for errors.
func (e *Executor) openMux(ctx context.Context, path string) (*muxClient, error) {
	m, err := e.muxChannel(ctx)
	if err != nil {
		if errors.Is(err, errMuxUnsupported) {
			return nil, err
		}
		var apiErr *api.Error
		if errors.As(err, &apiErr) {
			return nil, apiErr.Err(path)
		}
		return nil, e.transportError(ctx, path, err)
	}
	return m, nil
}

// decodeMuxError decodes the error body of an error frame.
func decodeMuxError(body []byte) *api.Error {
	apiErr, err := api.DecodeError(api.MediaMsgpack, body)
	if err != nil {
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the daemon sent an undecodable error: %v", err)}
	}
	apiErr.Status = apiErr.Code.Status()
	return apiErr
}

// muxChannel returns the open execute channel, opening one if there is
// none or the last one ended.
func (e *Executor) muxChannel(ctx context.Context) (*muxClient, error) {
	e.muxMu.Lock()
	defer e.muxMu.Unlock()
	if e.muxClosed {
		return nil, errors.New("the executor is closed")
	}
	if e.mux != nil && e.mux.broken() == nil {
		return e.mux, nil
	}
	if e.mux != nil {
		e.mux.close()
		e.mux = nil
	}
	m, err := e.dialMux(ctx)
	if err != nil {
		if errors.Is(err, errMuxUnsupported) {
			e.muxOff.Store(true)
		}
		return nil, err
	}
	e.mux = m
	return m, nil
}
