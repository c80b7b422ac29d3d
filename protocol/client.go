package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Client is one persistent connection to an application server. Many
// goroutines may Call at once; their requests share the connection and
// their responses are matched by request id, in whatever order they come.
type Client struct {
	conn      net.Conn
	reader    *FrameReader
	writer    *Writer
	ids       *idSource
	maxFrame  int
	logger    *slog.Logger
	deadlines bool // send each call's time left (the deadline capability)
	cancels   bool // tell the server when a call is given up (the cancel capability)

	mu      sync.Mutex
	pending map[ID]pendingCall
	streams map[ID]*Stream
	// ownGroup, when not nil, is the client's own poll group, which counts
	// its pending calls.
	ownGroup *PollGroup
	counted  int32 // pending calls counted in ownGroup
	err      error // set once, when the connection ends
	// expiry fails the calls whose time limit passed (expireCalls); it is
	// armed for expiryAt (on the client's clock), the earliest time limit
	// of a call when it was armed, while any call has one.
	born     time.Time
	expiry   *time.Timer
	expiryAt time.Duration

	done       chan struct{}
	readerDone chan struct{}
}

// pendingCall is a call waiting for its response on ch; deadline, when
// not zero, is when its time limit passes, on the client's clock.
type pendingCall struct {
	ch       chan<- Response
	deadline time.Duration
}

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	maxFrame int
	busyPoll time.Duration
	// crowded overrides busyPollCrowded when positive (tests on busy
	// machines, which must see polls succeed).
	crowded   time.Duration
	pollGroup *PollGroup
	logger    *slog.Logger
	deadlines bool
	cancels   bool
}

// WithMaxFrameSize sets the largest frame the client sends or accepts
// (DefaultMaxFrameSize by default, the servers' default too). A request
// too large for it fails alone; a response too large ends the connection.
func WithMaxFrameSize(n int) ClientOption {
	return func(c *clientConfig) { c.maxFrame = n }
}

// WithBusyPoll sets how long the client polls its socket for an awaited
// response before it sleeps until the response arrives (DefaultBusyPoll by
// default; zero turns polling off). Polling trades processor time for
// latency: it keeps the cost of waking a sleeping thread off requests that
// are answered within d. It applies only while at most two calls are in
// flight, on this client or across its PollGroup (see WithPollGroup); under
// more load responses arrive in batches and the client sleeps between them.
func WithBusyPoll(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.busyPoll = d }
}

// WithPollGroup puts the client in g: it polls only while g counts at most
// two requests in progress, and leaves the counting to g's owner (see
// PollGroup). The connections of one process, which share its processors,
// belong in one group.
func WithPollGroup(g *PollGroup) ClientOption {
	return func(c *clientConfig) { c.pollGroup = g }
}

// WithDeadlines makes every Call whose ctx has a deadline send the time
// left (the request envelope's deadline_ms), for a server whose artifact
// declares the deadline capability (docs/protocol.md, Capabilities). Other
// servers are never sent it.
func WithDeadlines() ClientOption {
	return func(c *clientConfig) { c.deadlines = true }
}

// WithCancel makes a Call whose ctx ends before its response send a cancel
// envelope for it, for a server whose artifact declares the cancel
// capability (docs/protocol.md, Capabilities): the server stops the
// request's handler. Other servers are never sent one.
func WithCancel() ClientOption {
	return func(c *clientConfig) { c.cancels = true }
}

// WithLogger sets where the client logs dropped responses and connection
// failures. The default discards everything.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// Dial connects to the application server listening on the Unix socket at
// path.
func Dial(ctx context.Context, path string, opts ...ClientOption) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to application socket %s: %w", path, err)
	}
	return NewClient(conn, opts...), nil
}

// NewClient takes ownership of conn and starts reading responses from it.
func NewClient(conn net.Conn, opts ...ClientOption) *Client {
	cfg := clientConfig{maxFrame: DefaultMaxFrameSize, busyPoll: DefaultBusyPoll}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:       conn,
		writer:     NewWriter(conn),
		ids:        newIDSource(),
		maxFrame:   cfg.maxFrame,
		logger:     cfg.logger,
		deadlines:  cfg.deadlines,
		cancels:    cfg.cancels,
		pending:    make(map[ID]pendingCall),
		born:       time.Now(),
		streams:    make(map[ID]*Stream),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	group := cfg.pollGroup
	if group == nil {
		c.ownGroup = new(PollGroup)
		group = c.ownGroup
	}
	c.reader = NewFrameReader(conn, cfg.maxFrame, c.deliverFrame, c.failReading)
	c.reader.pollWith(cfg.busyPoll, group)
	if c.reader.poll != nil && cfg.crowded > 0 {
		c.reader.poll.crowdedAfter, c.reader.poll.hostBusy = cfg.crowded, nil
	}
	go c.readLoop()
	return c
}

// Call sends one request payload (a msgpack map, see EncodePayload) and
// waits for its response payload. An error the application reported is an
// *AppError and leaves the connection usable. When ctx ends first, Call
// returns an error wrapping ctx.Err() and the late response, if it comes,
// is dropped. When the connection ends, every pending Call returns an error
// matching ErrConnectionClosed.
func (c *Client) Call(ctx context.Context, payload []byte) ([]byte, error) {
	return c.CallWithin(ctx, payload, 0)
}

// CallWithin is Call with a time limit of its own: when no response came
// within timeout (none if zero or less), it gives the request up as if
// ctx had ended, and returns an error matching ErrCallTimeout. It does
// what a ctx derived with context.WithTimeout would, for a fraction of the
// cost, which matters on a path that serves a request in a few
// microseconds: no context and no timer of its own, but one timer per
// client, armed for the earliest time limit of its calls.
func (c *Client) CallWithin(ctx context.Context, payload []byte, timeout time.Duration) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A frame the server would refuse makes it close the connection, failing
	// every request on it; refuse it here instead, failing only this one.
	if size := len(payload) + requestOverhead; size > c.maxFrame {
		return nil, &FrameError{Fault: FaultTooLarge, Length: size, Max: c.maxFrame}
	}
	id := c.ids.id()
	ch := make(chan Response, 1)
	call := pendingCall{ch: ch}
	if timeout > 0 {
		call.deadline = c.clock() + timeout
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.pending[id] = call
	c.countPendingLocked()
	if call.deadline != 0 && (c.expiry == nil || call.deadline < c.expiryAt) {
		c.armExpiryLocked(call.deadline)
	}
	// Under load, callers whose responses arrived together send their
	// next requests together: gathered, they cost the server one wake-up
	// and one read (docs/protocol.md, Gathered writes).
	mode := ModeFor(len(c.pending))
	c.mu.Unlock()

	req := Request{ID: id, Payload: payload}
	if c.deadlines {
		left, limited := timeout, timeout > 0
		if dl, ok := ctx.Deadline(); ok && (!limited || time.Until(dl) < left) {
			left, limited = time.Until(dl), true
		}
		if limited {
			// A deadline passed since the check above still leaves the
			// handler its smallest unit, as the response is dropped anyway.
			req.Deadline = max(left, time.Millisecond)
		}
	}
	if err := c.writer.PutRequest(req, mode); err != nil {
		c.fail(fmt.Errorf("writing request: %w", err))
	}
	resp, answered := c.reader.pollFor(ctx, ch)
	if !answered {
		select {
		case resp = <-ch:
			answered = true
		case <-ctx.Done():
		}
	}
	if answered && !resp.expired {
		return c.result(resp)
	}
	cause := ErrCallTimeout // expireCalls has removed the call
	if !answered {
		cause = ctx.Err()
	}
	c.mu.Lock()
	delete(c.pending, id)
	c.countPendingLocked()
	c.mu.Unlock()
	select {
	case resp := <-ch: // it raced the deadline and won
		if !resp.expired {
			return c.result(resp)
		}
	default:
	}
	if c.cancels {
		// Best effort: a connection that fails here fails every call on
		// it anyway.
		if err := c.writer.WriteRequest(Request{ID: id, Cancel: true}); err != nil {
			c.fail(fmt.Errorf("writing a cancel: %w", err))
		}
	}
	return nil, fmt.Errorf("request %s: %w", id, cause)
}

func (c *Client) result(resp Response) ([]byte, error) {
	if resp.Payload != nil {
		return resp.Payload, nil
	}
	if resp.Error == nil { // the connection ended; see fail
		return nil, c.Err()
	}
	appErr, err := DecodeError(resp.Error)
	if err != nil {
		c.fail(err)
		return nil, c.Err()
	}
	return nil, appErr
}

// countPendingLocked publishes the calls in progress to the client's own
// poll group, if it has one; c.mu is held. Streams are not counted: their
// items come in a flow that polling between them only costs processor
// time for (docs/protocol.md, Busy polling).
func (c *Client) countPendingLocked() {
	if c.ownGroup == nil {
		return
	}
	n := int32(len(c.pending))
	c.ownGroup.inFlight.Add(n - c.counted)
	c.counted = n
}

// InFlight returns the number of requests waiting for a response, streams
// included.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) + len(c.streams)
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (matching ErrConnectionClosed), or
// nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// errClientClosed is the cause recorded when the client's owner closes it.
var errClientClosed = errors.New("client closed")

// Close ends the connection, fails pending calls, and waits for the reader
// goroutine to stop.
func (c *Client) Close() error {
	c.fail(errClientClosed)
	<-c.readerDone
	return nil
}

// fail ends the connection once, with cause as the reason, and wakes every
// pending call.
func (c *Client) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = &ConnectionError{Err: cause}
	pending, streams := c.pending, c.streams
	c.pending, c.streams = nil, nil
	c.countPendingLocked()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()

	if !errors.Is(cause, errClientClosed) {
		c.logger.Warn("application connection ended", "err", cause, "pending", len(pending)+len(streams))
	}
	_ = c.conn.Close()
	for _, call := range pending {
		call.ch <- Response{} // neither payload nor error: read c.err
	}
	for _, s := range streams {
		s.fail(c.err)
	}
	close(c.done)
}

// readLoop runs the client's FrameReader, which reads whatever no caller
// polls for, and fails the connection when it ends.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	c.failReading(c.reader.Run())
}

// failReading fails the connection with the error that ended reading it.
func (c *Client) failReading(err error) {
	if errors.Is(err, io.EOF) {
		err = errors.New("server closed the connection")
	}
	c.fail(err)
}

// deliverFrame hands a response frame to the call or stream it answers.
func (c *Client) deliverFrame(body []byte) error {
	resp, err := DecodeResponse(body)
	if err != nil {
		return err
	}
	return c.dispatch(resp)
}

// dispatch hands resp to the call or stream that awaits it.
func (c *Client) dispatch(resp Response) error {
	c.mu.Lock()
	call, ok := c.pending[resp.ID]
	if !ok && len(c.streams) > 0 {
		if s := c.streams[resp.ID]; s != nil {
			c.mu.Unlock()
			return c.deliver(s, resp)
		}
	}
	delete(c.pending, resp.ID)
	c.countPendingLocked()
	c.mu.Unlock()
	if ok && (resp.Item || resp.End) {
		return fmt.Errorf("the server sent a stream's %s for request %s, which asked for one response", streamEnvelopeName(resp), resp.ID)
	}
	if !ok {
		c.logger.Debug("dropping response for an unknown or timed-out request", "request_id", resp.ID)
		return nil
	}
	call.ch <- resp
	return nil
}

// clock is the time since the client was made, on the monotonic clock:
// the time calls' limits are kept in.
func (c *Client) clock() time.Duration { return time.Since(c.born) }

// armExpiryLocked sets the expiry timer for at (on the client's clock);
// c.mu is held.
func (c *Client) armExpiryLocked(at time.Duration) {
	c.expiryAt = at
	wait := at - c.clock()
	if c.expiry == nil {
		c.expiry = time.AfterFunc(wait, c.expireCalls)
		return
	}
	c.expiry.Reset(wait)
}

// expireCalls fails the calls whose time limit has passed, and arms the
// timer for the earliest limit left. With every call under the same
// limit, as a runtime's are, the timer fires about once per limit: the
// calls it was armed for were answered long before.
func (c *Client) expireCalls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	now := c.clock()
	var next time.Duration
	for id, call := range c.pending {
		switch {
		case call.deadline == 0:
		case call.deadline <= now:
			delete(c.pending, id)
			call.ch <- Response{ID: id, expired: true}
		case next == 0 || call.deadline < next:
			next = call.deadline
		}
	}
	c.countPendingLocked()
	if next != 0 {
		c.armExpiryLocked(next)
	} else {
		c.expiry = nil // armed anew by the next call with a limit
	}
}
