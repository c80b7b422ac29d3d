package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/flow"
	"github.com/ociapp/ociapp/internal/inlinewatch"
	"github.com/ociapp/ociapp/protocol"
)

// muxReadBuffer is the read buffer of an execute channel.
const muxReadBuffer = 64 << 10

// serveMux switches the connection to the execute channel (docs/daemon.md,
// "Execute channel") and serves it until the client closes it or the
// daemon drains.
func (s *Server) serveMux(w http.ResponseWriter, r *http.Request) {
	if !api.HeaderHas(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), api.MuxProtocol) {
		w.Header().Set("Upgrade", api.MuxProtocol)
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("%s is an execute channel: send Connection: Upgrade and Upgrade: %s", api.MuxPath, api.MuxProtocol)})
		return
	}
	if s.draining.Load() {
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeClosed, Message: "the daemon is shutting down"})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("switching to the execute channel: %v", err)})
		return
	}
	if rec, ok := w.(*statusRecorder); ok {
		rec.counted = true
	}
	s.metrics.count("mux", http.StatusSwitchingProtocols)
	s.muxConns.Add(1)
	defer s.muxConns.Done()
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.MuxProtocol + "\r\n" + api.MuxFeaturesHeader + ": " + api.MuxFeatureCancel + ", " + api.MuxFeatureStream + ", " + api.MuxFeatureDeadline + "\r\n\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	unix, _ := r.Context().Value(unixListenerKey{}).(bool)
	m := &muxConn{s: s, conn: conn, r: channelReader(conn, brw.Reader), w: protocol.NewWriter(conn), unix: unix}
	ctx, ok := r.Context().Value(baseContextKey{}).(context.Context)
	if !ok {
		// A handler served outside Serve: the request's context.
		ctx = r.Context()
	}
	m.serve(ctx)
}

// channelReader returns the reader of an execute channel's frames: conn
// read with raw system calls (protocol.SocketIO), after what the HTTP
// server had buffered.
func channelReader(conn net.Conn, buffered *bufio.Reader) *bufio.Reader {
	var src io.Reader = protocol.SocketIO(conn)
	if n := buffered.Buffered(); n > 0 {
		rest, _ := buffered.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(rest)), src)
	}
	return bufio.NewReaderSize(src, muxReadBuffer)
}

// muxConn is one execute channel: its goroutines take turns as its
// reader, as the Go SDK server's do (serveConn in the module's root). The
// reader runs a request itself while it is the channel's only one: handing
// it to another goroutine would put a goroutine hand-off, and often a
// thread wake-up, on its path. A request that has others in flight, or
// another already behind it, runs on a goroutine of its own so that
// reading goes on; and should a request the reader runs itself run long,
// watch hands the reader role to a new goroutine. Each request writes its
// response as it completes.
type muxConn struct {
	s    *Server
	conn net.Conn
	r    *bufio.Reader // used only by the goroutine holding the reader role
	// header is the reader's buffer for a frame's length: a local array
	// would escape through r, an allocation per request.
	header [4]byte
	unix   bool
	ctx    context.Context // the requests', ended when the client goes away

	watch       *inlinewatch.Watch
	inline      inlinewatch.Slot // the request the reader runs itself, if any
	goroutines  sync.WaitGroup   // readers and workers
	readingDone chan struct{}    // closed when no more requests will be read

	// tasks hands requests to idle workers; idle counts them.
	tasks chan muxTask
	idle  atomic.Int32

	w *protocol.Writer

	inFlight atomic.Int32 // requests read and not yet answered

	// running holds the cancel functions of the requests read and not yet
	// answered, for cancel frames; streams, the credit of the streams
	// among them, for credit frames.
	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	streams map[uint64]*flow.Credit
}

func (m *muxConn) serve(ctx context.Context) {
	// A client that goes away cancels its requests; a drain lets them
	// finish (within the drain timeout, which ends ctx).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.ctx = ctx
	m.running = make(map[uint64]context.CancelFunc)
	m.streams = make(map[uint64]*flow.Credit)
	m.readingDone = make(chan struct{})
	m.tasks = make(chan muxTask)
	m.watch = inlinewatch.New()
	// The watcher passes the role on only while a request the reader runs
	// counts in m.goroutines, so this never adds to a finished group.
	m.inline.PassRole = func() { m.goroutines.Go(m.read) }
	m.watch.Add(&m.inline)
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		m.watch.Run(stopWatch)
	}()
	m.goroutines.Go(m.read)
	select {
	case <-m.readingDone:
		cancel()
	case <-m.s.drain:
		// Stop reading: requests in flight are answered, then the
		// connection closes; the client sends new ones elsewhere.
		_ = m.conn.SetReadDeadline(time.Now())
		<-m.readingDone
	}
	m.goroutines.Wait()
	close(stopWatch)
	<-watchDone
}

// read holds the reader role: it reads requests and runs or starts them
// until reading ends, or until the role has passed on while it ran one.
func (m *muxConn) read() {
	for {
		req, size, ok := m.next()
		if !ok {
			close(m.readingDone)
			return
		}
		// Counted for busy polling from here, not from when the runtime
		// sees it (runtime.WithPollGroup).
		m.s.cfg.polls.Begin()
		// Registered before the next frame is read, so that a cancel
		// or credit frame behind it finds it.
		var st *flow.Credit
		var ctx context.Context
		var cancel context.CancelFunc
		if req.Stream > 0 {
			st, ctx, cancel = m.openStream(req)
		} else {
			ctx, cancel = context.WithCancel(m.ctx)
		}
		// The caller's time counts from here, where the frame was read.
		ctx, cancel = withCallerDeadline(ctx, cancel, req.Deadline)
		m.mu.Lock()
		m.running[req.ID] = cancel
		m.mu.Unlock()
		// A stream runs on a goroutine of its own: it waits for credit.
		if m.inFlight.Add(1) > 1 || st != nil || m.r.Buffered() > 0 {
			m.start(muxTask{ctx: ctx, req: req, st: st, size: size})
			continue
		}
		run := m.watch.Begin(&m.inline)
		m.run(ctx, req, nil, size)
		if !m.inline.End(run) {
			return // another goroutine reads now
		}
	}
}

// muxTask is a request read from the channel, for a worker to run.
type muxTask struct {
	ctx  context.Context
	req  api.MuxRequest
	st   *flow.Credit
	size int64
}

// maxIdleWorkers bounds how many of a channel's workers wait for its next
// request at once; the others end.
const maxIdleWorkers = 64

// start runs t on an idle worker of the channel, or on a new one. Workers
// stay for the channel's next requests because a new goroutine's stack
// grows while it runs one through the runtime (copied two or three times),
// which cost about a tenth of the daemon's CPU per request at c64.
func (m *muxConn) start(t muxTask) {
	select {
	case m.tasks <- t:
	default:
		m.goroutines.Go(func() { m.work(t) })
	}
}

// work runs t, then the requests start hands it, until reading ends or
// enough other workers wait.
func (m *muxConn) work(t muxTask) {
	for {
		m.run(t.ctx, t.req, t.st, t.size)
		if m.idle.Add(1) > maxIdleWorkers {
			m.idle.Add(-1)
			return
		}
		select {
		case t = <-m.tasks:
			m.idle.Add(-1)
		case <-m.readingDone:
			m.idle.Add(-1)
			return
		}
	}
}

// run executes req, whose body holds size bytes of the body memory, under
// its own ctx, which a cancel frame ends; st is its credit when it is a
// stream.
func (m *muxConn) run(ctx context.Context, req api.MuxRequest, st *flow.Credit, size int64) {
	defer m.inFlight.Add(-1)
	defer m.s.cfg.polls.End()
	m.release(m.execute(ctx, req, st, size))
	m.mu.Lock()
	cancel := m.running[req.ID]
	delete(m.running, req.ID)
	if st != nil && m.streams[req.ID] == st {
		delete(m.streams, req.ID)
	}
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// cancel ends the context of the request id, if it is in flight: the
// client gave up on it, and the runtime cancels it in its container.
func (m *muxConn) cancel(id uint64) {
	m.mu.Lock()
	cancel := m.running[id]
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// next reads request frames until one is a request to run, which it
// returns with the body memory it holds; frames it refuses it answers
// itself. It returns false when the connection ends or breaks the framing
// (which ends it: the stream can no longer be trusted).
func (m *muxConn) next() (api.MuxRequest, int64, bool) {
	limit := m.s.cfg.maxRequestSize + api.MuxEnvelopeAllowance
	header := m.header[:]
	for {
		if _, err := io.ReadFull(m.r, header); err != nil {
			return api.MuxRequest{}, 0, false
		}
		size := int64(binary.BigEndian.Uint32(header))
		if size == 0 {
			return api.MuxRequest{}, 0, false
		}
		if size > limit {
			// Answered by its id, and skipped: the channel stays usable.
			prefix := make([]byte, min(size, api.MuxIDPrefix))
			if _, err := io.ReadFull(m.r, prefix); err != nil {
				return api.MuxRequest{}, 0, false
			}
			id, ok := api.MuxFrameID(prefix)
			if _, err := io.CopyN(io.Discard, m.r, size-int64(len(prefix))); err != nil || !ok {
				return api.MuxRequest{}, 0, false
			}
			m.reply(id, nil, m.s.tooLarge("request", m.s.cfg.maxRequestSize, "request size limit"))
			continue
		}
		// The body waits for room in the body memory before it is read,
		// as an HTTP body does.
		if !m.s.bodies.TryAcquire(size) && !m.waitBodyMemory(m.ctx, size) {
			prefix := make([]byte, min(size, api.MuxIDPrefix))
			if _, err := io.ReadFull(m.r, prefix); err != nil {
				return api.MuxRequest{}, 0, false
			}
			id, ok := api.MuxFrameID(prefix)
			if _, err := io.CopyN(io.Discard, m.r, size-int64(len(prefix))); err != nil || !ok {
				return api.MuxRequest{}, 0, false
			}
			m.reply(id, nil, &api.Error{Code: api.CodeOverloaded, Message: fmt.Sprintf("the daemon holds as many request bodies as its body memory allows (%d bytes); retry shortly", m.s.cfg.maxBodyMemory)})
			continue
		}
		m.s.metrics.bodyBytes.Add(size)
		body := make([]byte, size)
		_, err := io.ReadFull(m.r, body)
		if err != nil {
			m.release(size)
			return api.MuxRequest{}, 0, false
		}
		req, err := api.DecodeMuxRequest(body)
		if err == nil && req.Cancel {
			m.release(size)
			m.cancel(req.ID)
			continue
		}
		if err == nil && req.Credit > 0 {
			m.release(size)
			m.credit(req.ID, req.Credit)
			continue
		}
		if err != nil {
			m.release(size)
			if id, ok := api.MuxFrameID(body); ok {
				m.reply(id, nil, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("malformed request frame: %v", err)})
				continue
			}
			m.s.cfg.log.Debug("execute channel: malformed frame; closing it", "err", boundedErr(err))
			return api.MuxRequest{}, 0, false
		}
		return req, size, true
	}
}

// waitBodyMemory waits up to bodyMemoryWait for size bytes of body memory.
func (m *muxConn) waitBodyMemory(ctx context.Context, size int64) bool {
	waitCtx, cancel := context.WithTimeout(ctx, bodyMemoryWait)
	defer cancel()
	return m.s.bodies.Acquire(waitCtx, size) == nil
}

func (m *muxConn) release(size int64) {
	m.s.metrics.bodyBytes.Add(-size)
	m.s.bodies.Release(size)
}

// execute runs req, or streams it when st is not nil, and returns how much
// of its size bytes of body memory it still holds.
func (m *muxConn) execute(ctx context.Context, req api.MuxRequest, st *flow.Credit, size int64) int64 {
	route := routeMuxExecute
	if st != nil {
		route = routeMuxStream
	}
	fail := func(e *api.Error) int64 {
		m.answer(route, api.MuxResponse{ID: req.ID}, e)
		return size
	}
	if int64(len(req.Payload)) > m.s.cfg.maxRequestSize {
		return fail(m.s.tooLarge("request", m.s.cfg.maxRequestSize, "request size limit"))
	}
	var path string
	if req.Digest != "" {
		if !api.ValidDigest(req.Digest) {
			return fail(&api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("invalid digest %q: expected sha256: and 64 lowercase hex digits", req.Digest)})
		}
		_, stored, release, ok := m.s.store.Acquire(req.Digest)
		if !ok {
			return fail(notStored(req.Digest))
		}
		defer release()
		path = stored
	} else {
		if !m.unix {
			return fail(localRefused())
		}
		if e := m.s.localFile(req.Path, req.File); e != nil {
			return fail(e)
		}
		path = req.Path
	}
	if req.Deadline < 0 {
		// The caller's time was up before it sent the request.
		return fail(deadlineError(req.Deadline))
	}
	if st != nil {
		return m.stream(ctx, req, path, st, size)
	}
	m.executeAt(ctx, req, path)
	return size
}

func (m *muxConn) executeAt(ctx context.Context, req api.MuxRequest, path string) {
	start := time.Now()
	out, err := m.s.rt.ExecutePayload(ctx, path, req.Payload)
	m.s.metrics.executeDuration.observe(time.Since(start))
	if err != nil && ctx.Err() != nil && m.ctx.Err() == nil && deadlinePassed(ctx) == nil {
		// Cancelled by the client, who waits for no answer.
		return
	}
	if err != nil {
		m.reply(req.ID, nil, m.s.runError(ctx, err, path))
		return
	}
	m.reply(req.ID, out, nil)
}

// Routes of the metrics for the channel's requests.
const (
	routeMuxExecute = "mux_execute"
	routeMuxStream  = "mux_stream"
)

// reply answers an execute.
func (m *muxConn) reply(id uint64, payload []byte, e *api.Error) {
	m.answer(routeMuxExecute, api.MuxResponse{ID: id, Payload: payload}, e)
}

// answer writes the last frame of a request, resp or the error e, and
// counts it under route.
func (m *muxConn) answer(route string, resp api.MuxResponse, e *api.Error) {
	status := http.StatusOK
	if e != nil {
		e = boundedError(e)
		resp.Payload, resp.Error, status = nil, e.Encode(api.MediaMsgpack), e.Code.Status()
	}
	m.s.metrics.count(route, status)
	m.write(resp)
}

// write sends a frame; it reports false when the channel is broken, which
// it closes. Under load, responses completed together gather into one
// write (protocol.WriteGathered).
func (m *muxConn) write(resp api.MuxResponse) bool {
	mode := protocol.ModeFor(int(m.inFlight.Load()))
	if err := m.w.Put(func(b []byte) []byte { return api.AppendMuxResponse(b, resp) }, mode); err != nil {
		_ = m.conn.Close()
		return false
	}
	return true
}

// openStream registers the stream req asks for and returns its credit and
// context, which its client's cancel frame or the channel's end cancels,
// and the daemon's drain ends with errDraining.
func (m *muxConn) openStream(req api.MuxRequest) (*flow.Credit, context.Context, context.CancelFunc) {
	st := flow.NewCredit(req.Stream)
	ctx, cancel := m.s.streamContext(m.ctx)
	m.mu.Lock()
	m.streams[req.ID] = st
	m.mu.Unlock()
	return st, ctx, cancel
}

// credit adds n to the credit of the stream id, if it is in flight.
func (m *muxConn) credit(id, n uint64) {
	m.mu.Lock()
	st := m.streams[id]
	m.mu.Unlock()
	if st != nil {
		st.Add(n)
	}
}

// stream sends the items of req's response as item frames, each under a
// unit of credit, then its end or error. The next item is taken from the
// runtime only once the last one is sent, so a stream holds at most one
// item here, and a client that grants no more credit stops the handler.
// It releases the request's size bytes of body memory once the runtime
// has the request (at its first item or end) and returns 0.
func (m *muxConn) stream(ctx context.Context, req api.MuxRequest, path string, st *flow.Credit, size int64) int64 {
	var failed error
	for item, err := range m.s.rt.StreamPayload(ctx, path, req.Payload) {
		if size > 0 {
			m.release(size)
			size = 0
		}
		if err != nil {
			failed = err
			break
		}
		if st.Take(ctx, nil) != nil || !m.write(api.MuxResponse{ID: req.ID, Item: item}) {
			break
		}
	}
	if e, answer := m.s.streamEnd(ctx, failed, path); answer {
		m.answer(routeMuxStream, api.MuxResponse{ID: req.ID, End: e == nil}, e)
	}
	return size
}
