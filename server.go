package ociapp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ociapp/ociapp/internal/flow"
	"github.com/ociapp/ociapp/internal/inlinewatch"
	"github.com/ociapp/ociapp/protocol"
)

// DefaultGracePeriod is how long a stopping server lets in-flight requests
// finish before cancelling them. It stays below the runtime's default
// shutdown timeout of 10 s, after which the container is killed.
const DefaultGracePeriod = 8 * time.Second

// capabilities are the protocol extensions Server supports; ociapp-build
// records them in the artifact (dev.ociapp.capabilities), and the runtime
// uses only those (docs/protocol.md, Capabilities).
func capabilities() []string { return []string{"cancel", "deadline", "stream"} }

// Server serves a Handler over wire protocol v1. The zero value is not
// usable; Handler is required. Other fields have working zero values.
type Server struct {
	Handler Handler
	// MaxFrameSize bounds request frames; 0 means protocol.DefaultMaxFrameSize.
	MaxFrameSize int
	// GracePeriod bounds draining on shutdown; 0 means DefaultGracePeriod.
	GracePeriod time.Duration
	// Logger receives connection faults and panics; nil discards them.
	Logger *slog.Logger
	// BusyPoll is how long a connection is polled for its next request
	// before the goroutine reading it sleeps, while the server has at most
	// two requests in progress (see protocol.NewPollingReader). Zero, as
	// everywhere in this module, turns polling off; serve sets it to
	// protocol.DefaultBusyPoll unless --busy-poll says otherwise.
	BusyPoll time.Duration
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ListenAndServe listens on the Unix socket at path and serves until ctx is
// done, then drains. The socket appears at path only once it accepts
// connections: it is bound under a temporary name, made mode 0666 (the
// runtime connects from outside the container's user), and renamed into
// place. A stale socket at path is replaced; the socket is removed on return.
func (s *Server) ListenAndServe(ctx context.Context, path string) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	return s.Serve(ctx, ln)
}

// Listen binds a Unix socket at path the way ListenAndServe does.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o666); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("making socket %s connectable: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("publishing socket %s: %w", path, err)
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("checking socket path %s: %w", path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("socket path %s exists and is not a socket; remove it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// Serve accepts connections on ln until ctx is done. Then it stops
// accepting, stops reading new requests, lets in-flight ones finish for up
// to the grace period, cancels whatever is left, and returns nil. It closes
// ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Handler == nil {
		return errors.New("ociapp: Server.Handler is nil")
	}
	// requests outlives ctx: in-flight work keeps running while draining.
	requests, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()

	var (
		mu         sync.Mutex
		conns      = map[net.Conn]struct{}{}
		wg         sync.WaitGroup
		inProgress protocol.PollGroup
		watch      = inlinewatch.New()
	)
	stopped := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		watch.Run(stopped)
	}()
	defer func() { <-watchDone }()
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		ln.Close()
	}()
	defer close(stopped)

	var acceptErr error
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("accepting connections: %w", err)
			}
			break
		}
		mu.Lock()
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(requests, conn, &inProgress, watch)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
		}()
	}

	// Stop reading: a past deadline wakes every blocked reader, which then
	// drains its connection's in-flight requests.
	mu.Lock()
	for conn := range conns {
		_ = conn.SetReadDeadline(time.Unix(1, 0))
	}
	mu.Unlock()

	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	grace := s.GracePeriod
	if grace <= 0 {
		grace = DefaultGracePeriod
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		s.logger().Warn("grace period over; cancelling in-flight requests", "grace", grace)
		cancelRequests()
		mu.Lock()
		for conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		<-drained
	}
	return acceptErr
}

// serveConn reads requests from conn and answers each as it completes.
//
// The goroutines of a connection take turns as its reader (a
// leader/followers scheme). The reader runs each request it reads itself:
// passing it to another goroutine, or waking one to take over reading,
// would put a thread wake-up on the request's path, which costs more than a
// small request (on a virtual machine, several times more), and under load,
// when requests arrive in batches, the hand-offs cost more CPU than the
// requests. Should a request run longer than inlinewatch.CheckInterval,
// the server's inlinewatch.Watch hands the reader role to an idle goroutine
// (or a new one), so later requests on the connection are not held up
// behind it for long, and requests that take long run in parallel. A
// request for a stream always runs on a goroutine of its own (startStream).
//
// inProgress counts the server's requests in progress, for busy polling.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, inProgress *protocol.PollGroup, watch *inlinewatch.Watch) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &connServer{
		srv:         s,
		conn:        conn,
		r:           bufio.NewReaderSize(protocol.NewPollingReader(conn, s.BusyPoll, inProgress), 64<<10),
		inProgress:  inProgress,
		w:           protocol.NewWriter(conn),
		ctx:         ctx,
		cancel:      cancel,
		promote:     make(chan struct{}),
		readingDone: make(chan struct{}),
		watch:       watch,
		running:     make(map[protocol.ID]*inFlight),
	}
	c.streamer, _ = s.Handler.(StreamHandler)
	c.inline.PassRole = c.passReaderRole
	watch.Add(&c.inline)
	c.goroutines.Add(1)
	c.loop()
	watch.Remove(&c.inline)
	c.goroutines.Wait()
	conn.Close()
}

type connServer struct {
	srv      *Server
	streamer StreamHandler // the Handler, when it streams
	conn     net.Conn
	r        *bufio.Reader // used only by the goroutine holding the reader role
	w        *protocol.Writer
	ctx      context.Context
	cancel   context.CancelFunc

	inProgress *protocol.PollGroup
	watch      *inlinewatch.Watch
	inline     inlinewatch.Slot // the request the reader runs itself, if any

	promote     chan struct{} // a send hands the reader role to an idle goroutine
	readingDone chan struct{} // closed when no more requests will be read
	goroutines  sync.WaitGroup

	// running holds the requests in progress, for cancel envelopes (the
	// cancel capability) and credit envelopes (the stream capability).
	mu      sync.Mutex
	running map[protocol.ID]*inFlight
}

// inFlight is a request in progress.
type inFlight struct {
	cancel context.CancelFunc
	stream *streamState // nil unless the request is answered as a stream
}

// loop is the life of a connection goroutine: it takes the reader role,
// then idles until it is given the role again, until reading ends.
func (c *connServer) loop() {
	defer c.goroutines.Done()
	if !c.read() {
		return
	}
	for c.idle() {
		if !c.read() {
			return
		}
	}
}

// read holds the reader role: it returns true once it has passed the role
// on and run a request, false when reading has ended.
func (c *connServer) read() bool {
	// Responses a reader whose role was passed on had queued go out now.
	_ = c.w.Flush()
	for {
		body, err := protocol.ReadFrame(c.r, c.srv.MaxFrameSize)
		var req protocol.Request
		if err == nil {
			req, err = protocol.DecodeRequest(body)
		}
		if err != nil {
			c.endReading(err)
			return false
		}
		if req.Cancel || req.Credit > 0 || (req.Stream > 0 && c.streamer != nil) {
			switch {
			case req.Cancel:
				c.cancelRequest(req.ID)
			case req.Credit > 0:
				c.addCredit(req.ID, req.Credit)
			default:
				c.startStream(req)
			}
			// A response queued for going out with the next request's
			// must not wait while the reader blocks for one more.
			if !protocol.FrameBuffered(c.r) {
				_ = c.w.Flush()
			}
			continue
		}
		// Whichever of the watcher and the finished request claims the
		// slot first decides: the watcher passes the role on, the request
		// keeps it.
		more := protocol.FrameBuffered(c.r) // before begin: the role may pass on from then
		run := c.watch.Begin(&c.inline)
		c.run(req, more)
		if c.inline.End(run) {
			continue
		}
		// The role has passed on: a response this reader queued must not
		// wait for the next reader's.
		_ = c.w.Flush()
		return true
	}
}

// passReaderRole hands the reader role to an idle goroutine, or to a new one.
// The goroutine giving up the role is still counted in c.goroutines, so
// adding to it here cannot race the connection's final Wait.
func (c *connServer) passReaderRole() {
	select {
	case c.promote <- struct{}{}:
	default:
		c.goroutines.Add(1)
		go c.loop()
	}
}

// idle waits until it is handed the reader role (true) or reading ends
// (false).
func (c *connServer) idle() bool {
	select {
	case <-c.promote:
		return true
	case <-c.readingDone:
		return false
	}
}

// run answers req. When the next request is already buffered (more), the
// response waits to go out with the next one's, so that a batch of
// requests is answered in one write.
func (c *connServer) run(req protocol.Request, more bool) {
	c.inProgress.Begin()
	defer c.inProgress.End()
	// The runtime sends the time the request has when the artifact
	// declares the deadline capability: the handler's context ends then.
	ctx, cancel := c.requestContext(req)
	r := &inFlight{cancel: cancel}
	c.begin(req.ID, r)
	resp := c.srv.handle(ctx, req)
	c.end(req.ID, r)
	// A request cancelled by its client, or past the deadline it came
	// with, is given up by the client: a failure then is no answer, and
	// must not beat the client's own timeout error to it.
	givenUp := resp.Error != nil && ctx.Err() != nil && c.ctx.Err() == nil
	cancel()
	if givenUp {
		return
	}
	if more {
		_ = c.w.QueueResponse(resp)
		return
	}
	_ = c.w.WriteResponse(resp) // a failed write means the peer is gone
}

// requestContext is the context of req's handler: the connection's, ended
// by a cancel envelope and by the deadline the request came with, if any.
func (c *connServer) requestContext(req protocol.Request) (context.Context, context.CancelFunc) {
	if req.Deadline > 0 {
		return context.WithTimeout(c.ctx, req.Deadline)
	}
	return context.WithCancel(c.ctx)
}

// begin records r as the request id in progress; end forgets it.
func (c *connServer) begin(id protocol.ID, r *inFlight) {
	c.mu.Lock()
	c.running[id] = r
	c.mu.Unlock()
}

func (c *connServer) end(id protocol.ID, r *inFlight) {
	c.mu.Lock()
	if c.running[id] == r {
		delete(c.running, id)
	}
	c.mu.Unlock()
}

// cancelRequest ends the context of the request id, if it is in progress:
// the client gave up on it. Its response, if the handler still makes one,
// is written and dropped by the client (a stream's is not written).
func (c *connServer) cancelRequest(id protocol.ID) {
	c.mu.Lock()
	r := c.running[id]
	c.mu.Unlock()
	if r != nil {
		r.cancel()
	}
}

// addCredit lets the stream id send n more items; a credit for a request
// that is not a stream in progress is ignored.
func (c *connServer) addCredit(id protocol.ID, n int) {
	c.mu.Lock()
	r := c.running[id]
	c.mu.Unlock()
	if r != nil && r.stream != nil {
		r.stream.credit.Add(uint64(n))
	}
}

// streamState is the flow control of a stream in progress.
type streamState struct {
	credit *flow.Credit

	// writeMu orders the stream's writes: no item goes out after the
	// stream's last envelope.
	writeMu sync.Mutex
	ended   bool
}

// startStream answers req, a request for a stream, on a goroutine of its
// own: the handler blocks in send until credit envelopes, which the reader
// reads, let it go on, so the reader must never be the one running it (a
// passed-on reader role would not be enough: the watcher passes it on only
// after a while). req is in running before the reader reads on, so its
// credit and cancel envelopes find it.
func (c *connServer) startStream(req protocol.Request) {
	ctx, cancel := c.requestContext(req)
	r := &inFlight{cancel: cancel, stream: &streamState{credit: flow.NewCredit(uint64(req.Stream))}}
	c.begin(req.ID, r)
	c.inProgress.Begin()
	// The reader is counted in c.goroutines, so this cannot race the
	// connection's final Wait.
	c.goroutines.Add(1)
	go func() {
		defer c.goroutines.Done()
		defer c.inProgress.End()
		c.runStream(ctx, req, r)
	}()
}

// runStream runs the stream handler for req and writes its last envelope:
// the end, or its error. A stream cancelled, past its deadline or cut off
// from its client gets nothing more written: the client has given up on
// it, or can grant it no credit.
func (c *connServer) runStream(ctx context.Context, req protocol.Request, r *inFlight) {
	st := r.stream
	send := func(item []byte) error {
		// Once the connection's reading has ended no credit can come: a
		// stream waiting for some is cancelled.
		if err := st.credit.Take(ctx, c.readingDone); errors.Is(err, flow.ErrStopped) {
			r.cancel()
			return fmt.Errorf("waiting for credit to send an item on a connection that is no longer read: %w", context.Canceled)
		} else if err != nil {
			return fmt.Errorf("waiting for credit to send an item: %w", err)
		}
		st.writeMu.Lock()
		defer st.writeMu.Unlock()
		if st.ended {
			return fmt.Errorf("sending an item after the stream ended: %w", context.Canceled)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sending an item: %w", err)
		}
		if err := c.w.WriteResponse(protocol.Response{ID: req.ID, Payload: item, Item: true}); err != nil {
			r.cancel()
			return fmt.Errorf("sending an item: %w: %w", context.Canceled, err)
		}
		return nil
	}
	appErr := c.srv.handleStream(ctx, c.streamer, req, send)
	c.end(req.ID, r)
	st.writeMu.Lock()
	st.ended = true
	st.writeMu.Unlock()
	givenUp := ctx.Err() != nil
	r.cancel()
	if givenUp {
		return
	}
	resp := protocol.Response{ID: req.ID, End: true}
	if appErr != nil {
		resp = protocol.Response{ID: req.ID, Error: protocol.EncodeError(appErr)}
	}
	_ = c.w.WriteResponse(resp) // a failed write means the peer is gone
}

// endReading stops the connection's reading for good. After a clean end of
// input, or when the server is stopping, requests already read still run
// and are answered. Malformed input or a broken connection leaves nothing
// that can be answered reliably, so outstanding requests are cancelled.
func (c *connServer) endReading(err error) {
	var netErr net.Error
	if !errors.Is(err, io.EOF) && !(errors.As(err, &netErr) && netErr.Timeout()) {
		c.srv.logger().Warn("closing connection", "err", err)
		c.conn.Close() // first, so that no cancelled request gets an answer out
		c.cancel()
	}
	close(c.readingDone)
}

// handleStream runs h for req, turning a panic into its error.
func (s *Server) handleStream(ctx context.Context, h StreamHandler, req protocol.Request, send func([]byte) error) (appErr *protocol.AppError) {
	defer func() {
		if v := recover(); v != nil {
			s.logger().Error("panic in Stream", "request_id", req.ID, "panic", v, "stack", string(debug.Stack()))
			appErr = panicError(v)
		}
	}()
	return h.HandleStream(ctx, req.Payload, send)
}

func (s *Server) handle(ctx context.Context, req protocol.Request) (resp protocol.Response) {
	resp.ID = req.ID
	defer func() {
		if v := recover(); v != nil {
			s.logger().Error("panic in Execute", "request_id", req.ID, "panic", v, "stack", string(debug.Stack()))
			resp.Payload, resp.Error = nil, protocol.EncodeError(panicError(v))
		}
	}()
	payload, appErr := s.Handler.Handle(ctx, req.Payload)
	if appErr != nil {
		resp.Error = protocol.EncodeError(appErr)
		return resp
	}
	resp.Payload = payload
	return resp
}
