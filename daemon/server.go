// Package daemon serves a runtime over HTTP to callers on this host or others (API: docs/daemon.md).
package daemon

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/jsonpayload"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// Runner is what the server needs from a runtime; *runtime.Runtime
// satisfies it.
type Runner interface {
	ExecutePayload(ctx context.Context, artifactPath string, payload []byte) ([]byte, error)
	// StreamPayload yields the items of a response asked for as a stream
	// (runtime.Runtime.StreamPayload): breaking the iteration cancels it.
	StreamPayload(ctx context.Context, artifactPath string, payload []byte) iter.Seq2[[]byte, error]
	Stats() runtime.Stats
}

// ContainerLister lists an engine's containers by label; engine/docker
// satisfies it.
type ContainerLister interface {
	ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerSummary, error)
}

// DefaultDrainTimeout is how long Serve lets in-flight requests finish after
// its context ends.
const DefaultDrainTimeout = 30 * time.Second

// Option configures New and Run. The options marked "Run only" configure
// what Run sets up around the Server (listener, state, runtime, store), and
// New ignores them.
type Option func(*config) error

type config struct {
	tokenHash       *[sha256.Size]byte
	maxArtifactSize int64
	maxRequestSize  int64
	drainTimeout    time.Duration
	maxBodyMemory   int64
	bodyTimeout     time.Duration
	minBodyRate     int64
	log             *slog.Logger
	containers      ContainerLister
	containerLabels map[string]string
	// polls is the runtime's poll group, in which execute channels count
	// their requests (runtime.WithPollGroup); nil: a group of their own.
	polls *protocol.PollGroup

	// Run only.
	listen          string
	stateDir        string
	tlsCert, tlsKey string
	socketMode      os.FileMode
	closeTimeout    time.Duration
	ready           func(net.Addr)
	runtimeOptions  []runtime.Option
	storeOptions    []StoreOption
}

// newConfig applies opts over the defaults.
func newConfig(opts []Option) (config, error) {
	cfg := config{
		maxArtifactSize: api.DefaultMaxArtifactSize,
		maxRequestSize:  api.DefaultMaxRequestSize,
		drainTimeout:    DefaultDrainTimeout,
		maxBodyMemory:   DefaultMaxBodyMemory,
		bodyTimeout:     DefaultBodyTimeout,
		minBodyRate:     DefaultMinBodyRate,
		log:             discardLogger(),
		closeTimeout:    DefaultCloseTimeout,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return cfg, fmt.Errorf("configuring daemon: %w", err)
		}
	}
	if cfg.maxBodyMemory < cfg.maxRequestSize {
		return cfg, fmt.Errorf("configuring daemon: the body memory (%d bytes) must hold at least one request of the largest size (%d bytes)", cfg.maxBodyMemory, cfg.maxRequestSize)
	}
	return cfg, nil
}

// Defaults of the limits on request bodies.
const (
	// DefaultMaxBodyMemory bounds the bytes of execute bodies the daemon
	// holds at once: about eight requests of the largest size.
	DefaultMaxBodyMemory int64 = 128 << 20
	// DefaultBodyTimeout is how long a body may take beyond what
	// DefaultMinBodyRate allows for its size.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultMinBodyRate is the slowest a body may arrive on average, in
	// bytes per second, once DefaultBodyTimeout has passed.
	DefaultMinBodyRate int64 = 64 << 10
)

// bodyMemoryWait is how long an execute request waits for its body to fit
// in the body memory before it is answered overloaded.
const bodyMemoryWait = time.Second

// maxErrorText bounds each text field of an error body and each error in a
// log line; error texts can quote untrusted input at any length.
const maxErrorText = 8 << 10

// WithToken requires every request but GET /healthz to carry
// "Authorization: Bearer <token>". Serve refuses a TCP listener without one.
func WithToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("token must not be empty")
		}
		h := sha256.Sum256([]byte(token))
		c.tokenHash = &h
		return nil
	}
}

// WithPollGroup names the poll group of the server's runtime
// (runtime.WithPollGroup), in which the execute channels count each
// request from the moment they read it: a batch of requests read at once
// then stops the runtime's busy polling at once, before the runtime sees
// them all. Run sets it up; a caller of New that passes its runtime a
// group passes the same one here. Without it, the channels count in a
// group of their own, which no runtime reads.
func WithPollGroup(g *protocol.PollGroup) Option {
	return func(c *config) error {
		c.polls = g
		return nil
	}
}

// WithMaxArtifactSize bounds upload bodies (default api.DefaultMaxArtifactSize).
func WithMaxArtifactSize(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("max artifact size must be positive, got %d", n)
		}
		c.maxArtifactSize = n
		return nil
	}
}

// WithMaxRequestSize bounds execute bodies (default and maximum
// api.DefaultMaxRequestSize).
func WithMaxRequestSize(n int64) Option {
	return func(c *config) error {
		if n <= 0 || n > api.DefaultMaxRequestSize {
			return fmt.Errorf("max request size must be between 1 and %d bytes, got %d", api.DefaultMaxRequestSize, n)
		}
		c.maxRequestSize = n
		return nil
	}
}

// WithMaxBodyMemory bounds the total bytes of execute bodies being
// received and processed at once (default DefaultMaxBodyMemory). A body
// counts for its declared length, or for the request size limit when it
// declares none. A request that does not fit within a second is answered
// overloaded. It must be at least the request size limit.
func WithMaxBodyMemory(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("body memory must be positive, got %d", n)
		}
		c.maxBodyMemory = n
		return nil
	}
}

// WithBodyTimeouts bounds how long a request body may take to arrive: the
// timeout, plus one second per minRate bytes received (0: no rate). A body
// that falls behind is answered body_timeout (default DefaultBodyTimeout and
// DefaultMinBodyRate).
func WithBodyTimeouts(timeout time.Duration, minRate int64) Option {
	return func(c *config) error {
		if timeout <= 0 || minRate < 0 {
			return fmt.Errorf("body timeout must be positive and minimum rate not negative, got %v and %d", timeout, minRate)
		}
		c.bodyTimeout, c.minBodyRate = timeout, minRate
		return nil
	}
}

// WithDrainTimeout sets how long Serve waits for in-flight requests once its
// context ends (default DefaultDrainTimeout).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("drain timeout must be positive, got %v", d)
		}
		c.drainTimeout = d
		return nil
	}
}

// WithLogger sets the structured logger. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("logger must not be nil")
		}
		c.log = l
		return nil
	}
}

// WithContainers enables GET /v1/containers: the containers of lister that
// carry all of labels.
func WithContainers(lister ContainerLister, labels map[string]string) Option {
	return func(c *config) error {
		c.containers, c.containerLabels = lister, labels
		return nil
	}
}

// Server is the daemon's HTTP handler. It is safe for concurrent use.
type Server struct {
	rt      Runner
	store   *Store
	cfg     config
	mux     *http.ServeMux
	metrics metrics

	// running counts handlers, so that Run can wait for the last ones
	// after closing the runtime. (A WaitGroup would forbid a handler
	// starting while Run waits.)
	mu       sync.Mutex
	running  int
	idle     *sync.Cond // signalled when running drops to 0
	draining atomic.Bool

	// bodies holds the bytes of execute bodies in progress.
	bodies *semaphore.Weighted

	// drain is closed when Serve starts draining: execute channels stop
	// reading. muxConns counts them, for the drain to wait on.
	drain     chan struct{}
	drainOnce sync.Once
	muxConns  sync.WaitGroup
	// drainCtx ends with errDraining when the drain starts: it ends the
	// streams in progress.
	drainCtx   context.Context
	endStreams context.CancelCauseFunc

	// localPaths remembers, per path, the identity last matched by a stat
	// (localCheck); localCount counts its entries.
	localPaths sync.Map
	localCount atomic.Int64
}

// New returns a server that executes requests on rt against artifacts kept
// in store.
func New(rt Runner, store *Store, opts ...Option) (*Server, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newServer(rt, store, cfg), nil
}

func newServer(rt Runner, store *Store, cfg config) *Server {
	if cfg.polls == nil {
		cfg.polls = new(protocol.PollGroup)
	}
	s := &Server{rt: rt, store: store, cfg: cfg, mux: http.NewServeMux(), bodies: semaphore.NewWeighted(cfg.maxBodyMemory), drain: make(chan struct{})}
	s.idle = sync.NewCond(&s.mu)
	s.drainCtx, s.endStreams = context.WithCancelCause(context.Background())
	s.metrics.init()
	s.route("GET "+api.HealthPath, "health", s.health, false)
	s.route("GET "+api.MetricsPath, "metrics", s.serveMetrics, true)
	s.route("GET "+api.ArtifactsPath, "artifacts", s.listArtifacts, true)
	s.route("GET "+api.ArtifactPath("{digest}"), "artifact", s.getArtifact, true)
	s.route("PUT "+api.ArtifactPath("{digest}"), "upload", s.upload, true)
	s.route("POST "+api.ExecutePath("{digest}"), "execute", s.byDigest(s.executeAt), true)
	s.route("POST "+api.LocalExecutePath, "execute_local", s.byPath(s.executeAt), true)
	s.route("POST "+api.StreamPath("{digest}"), "stream", s.byDigest(s.streamAt), true)
	s.route("POST "+api.LocalStreamPath, "stream_local", s.byPath(s.streamAt), true)
	s.route("GET "+api.MuxPath, "mux", s.serveMux, true)
	s.route("GET "+api.PoolsPath, "pools", s.pools, true)
	s.route("GET "+api.ContainersPath, "containers", s.listContainers, true)
	s.route("/", "other", s.notFound, false)
	return s
}

func (s *Server) route(pattern, name string, h http.HandlerFunc, auth bool) {
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		if r.ContentLength != 0 {
			// A body the handler answers without reading is discarded by
			// the server; it too must arrive within the body timeout.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.bodyTimeout))
		}
		if auth && !s.authorized(r) {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="ociapp-runtime"`)
			writeError(rec, api.MediaJSON, &api.Error{Code: api.CodeUnauthorized, Message: "missing or wrong bearer token; send Authorization: Bearer <token> with the daemon's token"})
		} else {
			h(rec, r)
		}
		if !rec.counted {
			s.metrics.count(name, rec.status())
		}
	}))
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.tokenHash == nil {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Comparing hashes keeps the comparison constant-time whatever the
	// lengths.
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(h[:], s.cfg.tokenHash[:]) == 1
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.track(1)
	defer s.track(-1)
	s.mux.ServeHTTP(w, r)
}

func (s *Server) track(delta int) {
	s.metrics.inFlight.Add(int64(delta))
	s.mu.Lock()
	s.running += delta
	if s.running == 0 {
		s.idle.Broadcast()
	}
	s.mu.Unlock()
}

// Serve accepts connections on ln until ctx ends, then stops accepting,
// lets in-flight requests finish within the drain timeout, and returns. It
// refuses a TCP listener when no token is set.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if ln.Addr().Network() == "tcp" && s.cfg.tokenHash == nil {
		return errors.New("refusing to serve on TCP without a token: anyone who can reach the port could run containers; set a token")
	}
	// Requests' contexts end when the drain timeout does, so that what
	// they do (an upload's verification, an execute) stops too.
	base, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	unixListener := ln.Addr().Network() == "unix"
	srv := &http.Server{
		Handler:     s,
		BaseContext: func(net.Listener) context.Context { return base },
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(context.WithValue(ctx, unixListenerKey{}, unixListener), baseContextKey{}, base)
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var collecting sync.WaitGroup
	if s.store != nil {
		collecting.Go(func() { s.store.collectLoop(base) })
	}
	defer collecting.Wait()
	defer cancelRequests()
	s.cfg.log.Info("daemon listening", "address", ln.Addr().Network()+"://"+ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.drainOnce.Do(func() {
		close(s.drain)
		s.endStreams(errDraining)
	})
	s.cfg.log.Info("daemon draining", "timeout", s.cfg.drainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), s.cfg.drainTimeout)
	defer cancel()
	err := srv.Shutdown(drainCtx)
	if err == nil {
		// Execute channels are hijacked connections, which Shutdown
		// does not wait for.
		muxDone := make(chan struct{})
		go func() { s.muxConns.Wait(); close(muxDone) }()
		select {
		case <-muxDone:
		case <-drainCtx.Done():
			err = drainCtx.Err()
		}
	}
	if err != nil {
		s.cfg.log.Warn("requests still in flight after the drain timeout; canceling them and closing their connections", "timeout", s.cfg.drainTimeout)
		cancelRequests()
		_ = srv.Close()
	}
	<-errc
	return nil
}

// waitIdle waits until no handler is running, or ctx ends, and reports
// whether none is.
func (s *Server) waitIdle(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running > 0 && ctx.Err() == nil {
		s.idle.Wait()
	}
	return s.running == 0
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeClosed, Message: "the daemon is shutting down"})
		return
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", API: strings.TrimPrefix(api.Version, "/")})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	// A path that some route serves with another method is a 405.
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := s.mux.Handler(r2); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		if slices.Contains(allow, http.MethodGet) {
			allow = append(allow, http.MethodHead)
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeMethodNotAllowed, Message: fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
		return
	}
	writeError(w, api.MediaJSON, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no such route: %s %s; see docs/daemon.md", r.Method, r.URL.Path)})
}

// digest reads and checks the {digest} path value.
func digest(w http.ResponseWriter, r *http.Request, media string) (string, bool) {
	d := r.PathValue("digest")
	if !api.ValidDigest(d) {
		writeError(w, media, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("invalid digest %q: expected sha256: and 64 lowercase hex digits", d)})
		return "", false
	}
	return d, true
}

func notStored(d string) *api.Error {
	return &api.Error{Code: api.CodeArtifactNotFound, Message: fmt.Sprintf("the daemon holds no artifact %s; upload it with PUT %s", d, api.ArtifactPath(d))}
}

func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
	d, ok := digest(w, r, api.MediaJSON)
	if !ok {
		return
	}
	a, _, ok := s.store.Lookup(d)
	if !ok {
		writeError(w, api.MediaJSON, notStored(d))
		return
	}
	w.Header().Set(api.HeaderArtifactDigest, a.ArtifactDigest)
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	list := s.store.List()
	slices.SortFunc(list, func(a, b api.Artifact) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version), strings.Compare(a.Digest, b.Digest))
	})
	writeJSON(w, http.StatusOK, api.ArtifactList{Artifacts: list})
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	d, ok := digest(w, r, api.MediaJSON)
	if !ok {
		return
	}
	// An artifact already present is not received again; with "Expect:
	// 100-continue" its body is never sent.
	if a, _, ok := s.store.Lookup(d); ok && a.Digest == d {
		w.Header().Set(api.HeaderArtifactDigest, a.ArtifactDigest)
		writeJSON(w, http.StatusOK, a)
		return
	}
	if !s.bodyFits(w, r, s.cfg.maxArtifactSize, "artifact", "artifact size limit") {
		return
	}
	body := s.newBodyReader(w, r, s.cfg.maxArtifactSize)
	a, created, err := s.store.Put(r.Context(), d, r.ContentLength, body)
	body.finish()
	if err != nil {
		if e := s.bodyError(err, "artifact", s.cfg.maxArtifactSize, "artifact size limit"); e != nil {
			writeError(w, api.MediaJSON, e)
			return
		}
		var (
			full   *StoreFullError
			artErr *runtime.ArtifactError
		)
		switch {
		case r.Context().Err() != nil:
			s.cfg.log.Debug("upload abandoned", "digest", d, "err", boundedErr(err))
		case errors.As(err, &full):
			s.cfg.log.Warn("upload refused: the store is full", "digest", d, "quota", full.Quota)
			writeError(w, api.MediaJSON, &api.Error{Code: api.CodeStorageFull, Limit: full.Quota, Message: fmt.Sprintf("%v; retry later", full)})
		case errors.As(err, &artErr):
			s.cfg.log.Info("upload refused", "digest", d, "err", boundedErr(err))
			writeError(w, api.MediaJSON, api.FromError(err))
		default:
			s.cfg.log.Error("upload failed", "digest", d, "err", boundedErr(err))
			writeError(w, api.MediaJSON, &api.Error{Code: api.CodeInternal, Message: err.Error()})
		}
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.metrics.uploads.Add(1)
		s.metrics.uploadBytes.Add(uint64(a.Size))
	}
	w.Header().Set(api.HeaderArtifactDigest, a.ArtifactDigest)
	writeJSON(w, status, a)
}

// bodyError describes an error reading a request body: too large or too
// slow. It returns nil for other errors.
func (s *Server) bodyError(err error, what string, limit int64, setting string) *api.Error {
	var (
		tooLarge *http.MaxBytesError
		slow     *bodyTimeoutError
	)
	switch {
	case errors.As(err, &tooLarge):
		return s.tooLarge(what, limit, setting)
	case errors.As(err, &slow):
		return &api.Error{Code: api.CodeBodyTimeout, Message: slow.Error()}
	}
	return nil
}

// bodyFits refuses a body whose declared length exceeds limit, before any
// of it is read.
func (s *Server) bodyFits(w http.ResponseWriter, r *http.Request, limit int64, what, setting string) bool {
	if r.ContentLength > limit {
		writeError(w, api.MediaJSON, s.tooLarge(what, limit, setting))
		return false
	}
	return true
}

// tooLarge is the error for a body beyond the limit named setting.
func (s *Server) tooLarge(what string, limit int64, setting string) *api.Error {
	return &api.Error{Code: api.CodeBodyTooLarge, Limit: limit, Message: fmt.Sprintf("the %s is larger than the daemon's %s of %d bytes", what, setting, limit)}
}

// bodyReader reads a request body within its size limit and its time
// limits: the body timeout, plus one second per minimum rate of bytes
// received. It sets the connection's read deadline as it goes, so a
// stalled client is cut off even between reads.
type bodyReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	rate    int64
	start   time.Time // of the first read: "Expect: 100-continue" waits until then
	n       int64
	eof     bool
	length  int64 // declared, or -1
}

func (s *Server) newBodyReader(w http.ResponseWriter, r *http.Request, limit int64) *bodyReader {
	return &bodyReader{
		r: http.MaxBytesReader(w, r.Body, limit), rc: http.NewResponseController(w),
		timeout: s.cfg.bodyTimeout, rate: s.cfg.minBodyRate, length: r.ContentLength,
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.start.IsZero() {
		b.start = time.Now()
	}
	_ = b.rc.SetReadDeadline(b.deadline())
	n, err := b.r.Read(p)
	b.n += int64(n)
	b.eof = err == io.EOF
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &bodyTimeoutError{received: b.n, after: time.Since(b.start).Round(time.Millisecond), timeout: b.timeout, rate: b.rate}
	}
	return n, err
}

func (b *bodyReader) deadline() time.Time {
	d := b.start.Add(b.timeout)
	if b.rate > 0 {
		d = d.Add(time.Duration(float64(b.n) / float64(b.rate) * float64(time.Second)))
	}
	return d
}

// finish lifts the read deadline once the whole body is read: the
// connection serves further requests, and a request in progress notices
// its client leaving. Before a body is read to its end the deadline
// stays: the server discards what is left of it before answering, and
// that too must not wait for a stalled client.
func (b *bodyReader) finish() {
	if b.eof || b.length >= 0 && b.n == b.length {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// bodyTimeoutError is a body that arrived too slowly.
type bodyTimeoutError struct {
	received int64
	after    time.Duration
	timeout  time.Duration
	rate     int64
}

func (e *bodyTimeoutError) Error() string {
	return fmt.Sprintf("the request body stalled: %d bytes arrived in %v, and a body may take %v plus one second per %d bytes", e.received, e.after, e.timeout, e.rate)
}

// readBody reads a whole body into one buffer of its declared length when
// it has one, so that it is held once.
func readBody(r io.Reader, declared int64) ([]byte, error) {
	if declared < 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, declared)
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF && declared > 0 {
		return nil, fmt.Errorf("the body ended after %d of its %d bytes", n, declared)
	}
	return buf, err
}

// requestMedia reads an execute request's Content-Type: msgpack or JSON.
func requestMedia(r *http.Request) (string, bool) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return api.MediaJSON, true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", false
	}
	switch mt {
	case api.MediaJSON:
		return api.MediaJSON, true
	case api.MediaMsgpack, "application/x-msgpack", "application/vnd.msgpack":
		return api.MediaMsgpack, true
	}
	return "", false
}

// artifactHandler serves a request for the artifact at path, named what
// in log lines, with its body in media.
type artifactHandler func(w http.ResponseWriter, r *http.Request, media, path, what string)

// byDigest serves h for the uploaded artifact the path's digest names.
func (s *Server) byDigest(h artifactHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		media, ok := requestMedia(r)
		if !ok {
			writeError(w, api.MediaJSON, unsupportedMedia(r))
			return
		}
		d, ok := digest(w, r, media)
		if !ok {
			return
		}
		_, path, release, ok := s.store.Acquire(d)
		if !ok {
			writeError(w, media, notStored(d))
			return
		}
		defer release()
		h(w, r, media, path, d)
	}
}

func unsupportedMedia(r *http.Request) *api.Error {
	return &api.Error{Code: api.CodeUnsupportedMedia, Message: fmt.Sprintf("unsupported Content-Type %q; send %s or %s", r.Header.Get("Content-Type"), api.MediaJSON, api.MediaMsgpack)}
}

// unixListenerKey marks the context of a connection accepted on a Unix
// socket.
type unixListenerKey struct{}

// baseContextKey holds, in a connection's context, the context of all
// requests, which ends at the drain timeout: an execute channel's requests
// run in it (the server ends a request's own context at the drain, as it
// stops tracking a hijacked connection).
type baseContextKey struct{}

// byPath serves h for the artifact at a path on this host (the query's
// path and file), which the runtime opens and verifies as any artifact
// (and remembers by device, inode, size and modification time). Only
// callers on the Unix socket may name paths: they are this host's users
// the socket admits, who can run containers through the daemon anyway.
func (s *Server) byPath(h artifactHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		media, ok := requestMedia(r)
		if !ok {
			writeError(w, api.MediaJSON, unsupportedMedia(r))
			return
		}
		if unix, _ := r.Context().Value(unixListenerKey{}).(bool); !unix {
			writeError(w, media, localRefused())
			return
		}
		q := r.URL.Query()
		path := q.Get("path")
		if e := s.localFile(path, q.Get("file")); e != nil {
			writeError(w, media, e)
			return
		}
		h(w, r, media, path, path)
	}
}

func localRefused() *api.Error {
	return &api.Error{Code: api.CodeNotFound, Message: "this daemon opens artifacts by path only for callers on its Unix socket; upload the artifact with PUT " + api.ArtifactPath("{digest}") + " and execute it by digest"}
}

// localRecheck is how long a path's identity, once matched, is trusted
// without a stat: as long as the runtime trusts its own (runtime/resolve.go).
const localRecheck = 100 * time.Millisecond

// maxLocalPaths bounds the identities remembered; the cache is cleared when
// full, which costs a stat per path.
const maxLocalPaths = 1024

type localCheck struct {
	identity string
	at       time.Time
}

// localFile checks that path names the caller's file, whose identity is
// identity: else the caller uploads it. A match is remembered for
// localRecheck, so that warm requests cost no stat here.
func (s *Server) localFile(path, identity string) *api.Error {
	if c, ok := s.localPaths.Load(path); ok {
		if c := c.(localCheck); c.identity == identity && time.Since(c.at) < localRecheck {
			return nil
		}
	}
	if e := localFile(path, identity); e != nil {
		return e
	}
	if s.localCount.Add(1) > maxLocalPaths {
		s.localPaths.Clear()
		s.localCount.Store(0)
	}
	s.localPaths.Store(path, localCheck{identity: identity, at: time.Now()})
	return nil
}

// localFile checks that path names the caller's file, whose identity is
// identity.
func localFile(path, identity string) *api.Error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || identity == "" {
		return &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("executing by path needs path, an absolute clean path (got %q), and file, the file's identity (device:inode:size:mtime_ns)", path)}
	}
	// Not another file at the same path (a daemon in another mount
	// namespace sees other files).
	fi, err := os.Stat(path)
	if err == nil && api.FileIdentity(fi) == identity {
		return nil
	}
	found := "no file"
	if err == nil {
		found = "another version of the file, or another file (" + api.FileIdentity(fi) + ")"
	}
	return &api.Error{Code: api.CodeArtifactNotFound, Message: fmt.Sprintf("the daemon finds %s at %s, not the caller's (%s); upload the artifact with PUT %s", found, path, identity, api.ArtifactPath("{digest}"))}
}

// executeAt reads an execute request's body and runs it against the
// artifact at path; what names the artifact in log lines.
func (s *Server) executeAt(w http.ResponseWriter, r *http.Request, media, path, what string) {
	d := what
	ctx, cancel, ok := s.callerContext(w, r, media)
	if !ok {
		return
	}
	defer cancel()
	payload, release, ok := s.readPayload(w, r, media)
	if !ok {
		return
	}
	defer release()

	start := time.Now()
	out, err := s.rt.ExecutePayload(ctx, path, payload)
	s.metrics.executeDuration.observe(time.Since(start))
	if err != nil {
		if r.Context().Err() != nil {
			// The client is gone; nobody reads an answer.
			s.cfg.log.Debug("request abandoned", "digest", d, "err", boundedErr(err))
			abandon()
		}
		writeError(w, media, s.runError(ctx, err, d))
		return
	}
	if media == api.MediaMsgpack {
		writeBody(w, http.StatusOK, api.MediaMsgpack, out)
		return
	}
	// Converted twice, to learn its length and whether it converts, then
	// to the client: never held whole.
	n, err := jsonpayload.Write(io.Discard, out)
	if err != nil {
		writeError(w, media, &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the application's response cannot be written as JSON (%v); send the request as %s", err, api.MediaMsgpack)})
		return
	}
	setBodyHeaders(w, api.MediaJSON, n)
	w.WriteHeader(http.StatusOK)
	if _, err := jsonpayload.Write(w, out); err != nil {
		s.cfg.log.Debug("writing a response", "digest", d, "err", boundedErr(err))
	}
}

// readPayload reads an execute request's body, in media, as a request
// payload. The body, its conversion and the answer are held in memory, so
// the body's bytes wait for room in the body memory before any is read;
// release gives the room back (later calls do nothing). When ok is false
// the request has been answered.
func (s *Server) readPayload(w http.ResponseWriter, r *http.Request, media string) (payload []byte, release func(), ok bool) {
	if !s.bodyFits(w, r, s.cfg.maxRequestSize, "request", "request size limit") {
		return nil, nil, false
	}
	weight := r.ContentLength
	if weight < 0 {
		weight = s.cfg.maxRequestSize
	}
	waitCtx, cancel := context.WithTimeout(r.Context(), bodyMemoryWait)
	err := s.bodies.Acquire(waitCtx, weight)
	cancel()
	if err != nil {
		if r.Context().Err() == nil {
			writeError(w, media, &api.Error{Code: api.CodeOverloaded, Message: fmt.Sprintf("the daemon holds as many request bodies as its body memory allows (%d bytes); retry shortly", s.cfg.maxBodyMemory)})
		}
		return nil, nil, false
	}
	s.metrics.bodyBytes.Add(weight)
	release = sync.OnceFunc(func() {
		s.metrics.bodyBytes.Add(-weight)
		s.bodies.Release(weight)
	})

	br := s.newBodyReader(w, r, s.cfg.maxRequestSize)
	body, err := readBody(br, r.ContentLength)
	br.finish()
	if err != nil {
		release()
		if e := s.bodyError(err, "request", s.cfg.maxRequestSize, "request size limit"); e != nil {
			writeError(w, media, e)
		} else {
			writeError(w, media, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("reading the request body: %v", err)})
		}
		return nil, nil, false
	}
	if media != api.MediaJSON {
		return body, release, true
	}
	if payload, err = jsonpayload.FromJSON(body, int(s.cfg.maxRequestSize)); err != nil {
		release()
		if errors.Is(err, jsonpayload.ErrTooLarge) {
			// msgpack can be larger than the JSON it came from (a float
			// takes 9 bytes), and the limit protects the frame to the
			// container.
			writeError(w, media, s.tooLarge("request, as msgpack,", s.cfg.maxRequestSize, "request size limit"))
			return nil, nil, false
		}
		writeError(w, media, &api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return nil, nil, false
	}
	return payload, release, true
}

// streamAt reads a stream request's body and streams the items of its
// response from the artifact at path as NDJSON lines, each flushed as it
// is written: {"item": ...}, then {"end": true} or {"error": {...}}. An
// error before the first item is an ordinary error response. The next
// item is taken from the runtime once the last one is written, so a
// client that stops reading stops the handler (TCP's flow control); one
// that disconnects cancels it.
func (s *Server) streamAt(w http.ResponseWriter, r *http.Request, media, path, what string) {
	callerCtx, cancelCaller, ok := s.callerContext(w, r, media)
	if !ok {
		return
	}
	defer cancelCaller()
	payload, release, ok := s.readPayload(w, r, media)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := s.streamContext(callerCtx)
	defer cancel()
	rc := http.NewResponseController(w)
	started := false
	var failed error
	for item, err := range s.rt.StreamPayload(ctx, path, payload) {
		// The runtime has the request.
		release()
		if err != nil {
			failed = err
			break
		}
		// Converted twice, to learn whether it converts, then to the
		// client: never held whole.
		if _, err := jsonpayload.Write(io.Discard, item); err != nil {
			failed = &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("an item of the application's stream cannot be written as JSON (%v); ask for it on the execute channel", err)}
			break
		}
		if !started {
			startNDJSON(w)
			started = true
		}
		_, err = io.WriteString(w, `{"item": `)
		if err == nil {
			_, err = jsonpayload.Write(w, item)
		}
		if err == nil {
			_, err = io.WriteString(w, "}\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			s.cfg.log.Debug("writing a stream", "artifact", what, "err", boundedErr(err))
			return // the client is gone: breaking off cancels the handler
		}
	}
	var e *api.Error
	if !errors.As(failed, &e) {
		var answer bool
		if e, answer = s.streamEnd(ctx, failed, what); !answer {
			s.cfg.log.Debug("stream abandoned", "artifact", what, "err", boundedErr(failed))
			abandon()
		}
	}
	if e != nil && !started {
		writeError(w, media, e)
		return
	}
	if !started {
		startNDJSON(w)
	}
	line := []byte(`{"end": true}` + "\n")
	if e != nil {
		line = append(append([]byte(`{"error": `), bytes.TrimSpace(boundedError(e).Encode(api.MediaJSON))...), "}\n"...)
	}
	if _, err := w.Write(line); err == nil {
		_ = rc.Flush()
	}
}

// startNDJSON writes the headers of a stream's answer.
func startNDJSON(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", api.MediaNDJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) pools(w http.ResponseWriter, r *http.Request) {
	stats := s.rt.Stats()
	list := api.PoolList{Pools: make([]api.Pool, 0, len(stats.Pools))}
	for _, p := range stats.Pools {
		list.Pools = append(list.Pools, api.Pool{
			Artifact: p.Artifact, ArtifactDigest: p.Digest, Containers: p.Containers,
			Starting: p.Starting, InFlight: p.InFlight, Queued: p.Queued,
		})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) listContainers(w http.ResponseWriter, r *http.Request) {
	if s.cfg.containers == nil {
		writeError(w, api.MediaJSON, &api.Error{Code: api.CodeNotFound, Message: "this daemon does not list containers"})
		return
	}
	found, err := s.cfg.containers.ListContainers(r.Context(), s.cfg.containerLabels)
	if err != nil {
		writeError(w, api.MediaJSON, api.FromError(err))
		return
	}
	list := api.ContainerList{Containers: make([]api.Container, 0, len(found))}
	for _, c := range found {
		name := ""
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		list.Containers = append(list.Containers, api.Container{
			ID: c.ID, Name: name, State: c.State,
			Artifact:       c.Labels[runtime.LabelArtifactName],
			ArtifactDigest: c.Labels[runtime.LabelArtifactDigest],
		})
	}
	slices.SortFunc(list.Containers, func(a, b api.Container) int {
		return cmp.Or(strings.Compare(a.Artifact, b.Artifact), strings.Compare(a.ID, b.ID))
	})
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	var storeBytes int64
	if s.store != nil {
		used, reserved := s.store.Usage()
		storeBytes = used + reserved
	}
	s.metrics.write(&b, s.rt.Stats(), storeBytes)
	writeBody(w, http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", b.Bytes())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the daemon's own types reach here, and they all encode.
		panic(fmt.Sprintf("daemon: encoding %T: %v", v, err))
	}
	writeBody(w, status, api.MediaJSON, append(b, '\n'))
}

func writeError(w http.ResponseWriter, media string, e *api.Error) {
	e = boundedError(e)
	w.Header().Set(api.HeaderErrorCode, string(e.Code))
	if e.Code == api.CodeOverloaded {
		w.Header().Set("Retry-After", "1")
	} else if e.RetryIn > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryIn+time.Second-1)/time.Second), 10))
	}
	writeBody(w, e.Code.Status(), media, e.Encode(media))
}

// boundedError returns e with each text field cut to maxErrorText bytes.
// (An app_error's details are the application's answer, bounded as any
// response is.)
func boundedError(e *api.Error) *api.Error {
	b := *e
	for _, f := range []*string{&b.Message, &b.Reason, &b.Logs, &b.Detail, &b.Cause, &b.Artifact, &b.ErrorType, &b.Host, &b.ContainerID} {
		*f = truncate(*f, maxErrorText)
	}
	return &b
}

// boundedErr is an error's text for a log line, cut to maxErrorText bytes.
func boundedErr(err error) string {
	if err == nil {
		return ""
	}
	return truncate(err.Error(), maxErrorText)
}

// truncate cuts s to at most n bytes, at a character boundary, saying how
// much it left out.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const note = "... (%d more bytes)"
	cut := n - len(note) - 8
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(note, len(s)-cut)
}

func writeBody(w http.ResponseWriter, status int, media string, body []byte) {
	setBodyHeaders(w, media, int64(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func setBodyHeaders(w http.ResponseWriter, media string, length int64) {
	h := w.Header()
	h.Set("Content-Type", media)
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	h.Set("X-Content-Type-Options", "nosniff")
}

// statusRecorder remembers the status a handler wrote, for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code    int
	counted bool // by the handler itself (an execute channel, when it opens)
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// statusClientClosed is recorded for requests answered with nothing
// because their client went away (nginx's convention).
const statusClientClosed = 499

func (r *statusRecorder) status() int {
	if r.code == 0 {
		return statusClientClosed
	}
	return r.code
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// errDraining ends the streams in progress when the daemon drains: a
// stream may last indefinitely, and its client learns why it ended.
var errDraining = errors.New("the daemon is shutting down")

// streamContext returns a stream's context: parent's, also ended with
// errDraining by the drain.
func (s *Server) streamContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := context.AfterFunc(s.drainCtx, func() { cancel(errDraining) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// abandon ends a handler whose client gave up without an answer: the
// connection (HTTP/1) or the stream (HTTP/2) is broken off. A handler that
// returned without writing would have net/http answer 200 with an empty
// body, which a client still reading, at the moment its own deadline
// passes, would take for a response.
func abandon() {
	panic(http.ErrAbortHandler)
}

// streamEnd says how to end a stream on the artifact at path whose
// iteration ended with err (nil: it ended, or was broken off) under ctx:
// answer is false when its client gave up on it (nobody reads an answer);
// else e is its error, or nil for its end.
func (s *Server) streamEnd(ctx context.Context, err error, path string) (e *api.Error, answer bool) {
	cd := deadlinePassed(ctx)
	switch {
	case context.Cause(ctx) == errDraining:
		return &api.Error{Code: api.CodeClosed, Message: "the daemon is shutting down: the stream was ended; run it again on another daemon or once this one is back"}, true
	case cd != nil && err == nil:
		// Broken off while it waited for credit.
		return deadlineError(cd.left), true
	case ctx.Err() != nil && cd == nil:
		return nil, false
	case err != nil:
		return s.runError(ctx, err, path), true
	}
	return nil, true
}
