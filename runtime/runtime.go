// Package runtime executes .ociapp artifacts in pools of warm, sandboxed containers.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// Executor runs requests against artifacts. The in-process Runtime
// implements it; so will a client of a remote runtime, which is why both
// methods take and return plain data and every error is a plain value.
type Executor interface {
	// Execute sends request (a map with string keys, or a struct with
	// msgpack tags) to the application in the artifact at artifactPath and
	// returns its response map.
	Execute(ctx context.Context, artifactPath string, request any) (map[string]any, error)
	// ExecutePayload is Execute on encoded payloads: msgpack maps, as on
	// the wire.
	ExecutePayload(ctx context.Context, artifactPath string, payload []byte) ([]byte, error)
}

// ExecuteAs runs request through ex and decodes the response into a Resp
// (a struct with msgpack tags, or a map).
func ExecuteAs[Resp any](ctx context.Context, ex Executor, artifactPath string, request any) (Resp, error) {
	var resp Resp
	payload, err := EncodeRequest(request)
	if err != nil {
		return resp, err
	}
	out, err := ex.ExecutePayload(ctx, artifactPath, payload)
	if err != nil {
		return resp, err
	}
	if err := protocol.DecodePayloadInto(out, &resp); err != nil {
		return resp, fmt.Errorf("decoding the response of %s: %w", artifactPath, err)
	}
	return resp, nil
}

// EncodeRequest encodes the request of an Execute into the payload of an
// ExecutePayload. Its error is a *protocol.PayloadError.
func EncodeRequest(request any) ([]byte, error) {
	payload, err := protocol.EncodePayload(request)
	if err != nil {
		return nil, fmt.Errorf("encoding the request: %w", err)
	}
	return payload, nil
}

// DecodeResponse decodes the response payload of an ExecutePayload into
// the map an Execute returns, as protocol.DecodePayload does (integers as
// int64, maps with other than string keys as map[any]any).
func DecodeResponse(artifactPath string, payload []byte) (map[string]any, error) {
	resp, err := protocol.DecodePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("decoding the response of %s: %w", artifactPath, err)
	}
	return resp, nil
}

// Runtime executes artifacts in containers it starts on demand, keeps warm,
// scales out under load and reaps when idle. It is safe for concurrent use.
// Close it to stop its containers.
type Runtime struct {
	env // what its pools and workers use, shared with them

	resolver *resolver
	// requests counts the requests in progress, so that connections to
	// containers busy-poll only while the runtime is lightly loaded.
	requests *protocol.PollGroup
	// cancel ends env.life, at Close.
	cancel context.CancelFunc
	// streams are the streams in progress.
	streams streamRegistry

	mu     sync.RWMutex
	closed bool
	pools  map[string]*pool // by artifact digest
	// closeDone is closed when the first Close has finished.
	closeDone chan struct{}
	closeErr  error
}

// env is the part of a runtime that its pools and their workers use. The
// runtime owns it and hands each pool a pointer to it, so that neither
// pools nor workers reach back into the Runtime.
type env struct {
	cfg config
	eng engine.Engine
	// images removes the images the runtime loaded; nil when the engine
	// cannot remove images.
	images  engine.ImageRemover
	log     *slog.Logger
	inst    *instance
	janitor *janitor
	stats   counters
	// socketTmpfs is tmpfsUnknown until a socket directory mount succeeds
	// or fails for want of privilege.
	socketTmpfs atomic.Int32

	// life is canceled by Close; it bounds container starts and the reaper.
	life context.Context
	wg   sync.WaitGroup // every goroutine the runtime started
}

var _ Executor = (*Runtime)(nil)

// New creates a runtime on the engine given with WithEngine, which is
// required. It removes containers and directories left behind by runtimes (sharing its
// state directory) that ended without closing.
func New(ctx context.Context, opts ...Option) (*Runtime, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, &ConfigError{Err: err}
		}
	}
	if cfg.engine == nil {
		return nil, &ConfigError{Err: errors.New("no container engine: pass WithEngine")}
	}
	if cfg.minContainers > cfg.maxContainers {
		return nil, &ConfigError{Err: fmt.Errorf("min containers (%d) exceeds max containers (%d)", cfg.minContainers, cfg.maxContainers)}
	}
	requests := cfg.pollGroup
	if requests == nil {
		requests = new(protocol.PollGroup)
	}
	if cfg.dial == nil {
		cfg.dial = protocolDialer(protocol.WithBusyPoll(cfg.busyPoll), protocol.WithPollGroup(requests))
	}
	if cfg.openArtifact == nil {
		cfg.openArtifact = openArtifactFile
	}
	if cfg.stateDir == "" {
		cfg.stateDir = defaultStateDir()
	}
	inst, err := openInstance(cfg.stateDir)
	if err != nil {
		return nil, err
	}
	if err := inst.cleanOrphans(ctx, cfg.engine, cfg.logger); err != nil {
		_ = inst.close()
		return nil, fmt.Errorf("removing what crashed runtimes left behind: %w", err)
	}
	r := &Runtime{
		resolver:  newResolver(cfg.openArtifact, verifiedFiles{dir: filepath.Join(cfg.stateDir, verifiedDirName)}),
		requests:  requests,
		pools:     make(map[string]*pool),
		closeDone: make(chan struct{}),
	}
	r.cfg, r.eng, r.log, r.inst = cfg, cfg.engine, cfg.logger, inst
	r.images, _ = r.eng.(engine.ImageRemover)
	r.janitor = newJanitor(r.eng, r.log, inst)
	r.life, r.cancel = context.WithCancel(context.Background())
	go r.janitor.run()
	r.wg.Add(1)
	go r.reap()
	r.log.Debug("runtime started", "state_dir", inst.dir, "max_containers", cfg.maxContainers)
	return r, nil
}

// errRequestTimeout is the cause of a stream item's context whose request
// timeout passed, telling it apart from the caller's own deadline. (A call
// has a time limit instead: session.CallWithin.)
var errRequestTimeout = errors.New("request timeout")

// Execute sends request to the application in the artifact at artifactPath
// and returns its response. The first request for an artifact loads its
// image (once per content digest) and starts a container; later ones reuse
// warm containers.
//
// Errors: *ArtifactError, *EngineUnavailableError, *StartupError,
// *RequestTimeoutError, *AppError, *WorkerCrashError, *OverloadedError,
// ErrClosed, a *protocol.PayloadError for a request that cannot be encoded,
// or the context's error when ctx ends first.
func (r *Runtime) Execute(ctx context.Context, artifactPath string, request any) (map[string]any, error) {
	payload, err := EncodeRequest(request)
	if err != nil {
		return nil, err
	}
	out, err := r.ExecutePayload(ctx, artifactPath, payload)
	if err != nil {
		return nil, err
	}
	return DecodeResponse(artifactPath, out)
}

// ExecutePayload is Execute for an already encoded request payload (a
// msgpack map); it returns the encoded response payload.
func (r *Runtime) ExecutePayload(ctx context.Context, artifactPath string, payload []byte) ([]byte, error) {
	r.requests.Begin()
	defer r.requests.End()
	p, art, err := r.pool(ctx, artifactPath, nil)
	if err != nil {
		return nil, r.countFailure(err)
	}
	w, err := p.acquire(ctx, art)
	if err != nil {
		return nil, r.countFailure(err)
	}
	return r.call(ctx, p, w, payload)
}

// call sends payload to the container of w, acquired from p, and releases
// it.
func (r *Runtime) call(ctx context.Context, p *pool, w *worker, payload []byte) ([]byte, error) {
	// A time limit on the call, not a context derived with the request
	// timeout: contexts cost a tenth of a daemon's CPU per request.
	out, err := w.sess.CallWithin(ctx, payload, r.cfg.requestTimeout)
	p.release(w)
	if err == nil {
		return out, nil
	}
	return nil, r.countFailure(r.callError(ctx, p, w, err, errors.Is(err, protocol.ErrCallTimeout)))
}

func (r *Runtime) callError(ctx context.Context, p *pool, w *worker, err error, timedOut bool) error {
	var appErr *AppError
	switch {
	case errors.As(err, &appErr):
		return appErr
	case ctx.Err() != nil:
		return fmt.Errorf("executing %s: %w", p.name, ctx.Err())
	case timedOut:
		r.log.Info("request timed out", "artifact", p.name, "container", w.containerID, "timeout", r.cfg.requestTimeout)
		return &RequestTimeoutError{Artifact: p.name, Timeout: r.cfg.requestTimeout}
	case errors.Is(err, protocol.ErrConnectionClosed):
		// The connection died under the request: wait for the worker's
		// owner to find out why (exit code, OOM kill, log tail).
		select {
		case <-w.dead:
			return w.deadErr
		case <-ctx.Done():
			return fmt.Errorf("executing %s: %w", p.name, ctx.Err())
		}
	}
	return fmt.Errorf("executing %s: %w", p.name, err)
}

// pool returns the pool of the artifact at path, with its image present,
// and the artifact as resolved for this call: what precedes a request's
// first container. rep, unless nil, gets what it did and how long each
// step took.
func (r *Runtime) pool(ctx context.Context, path string, rep *PrepareReport) (*pool, artifactInfo, error) {
	var start time.Time
	if rep != nil {
		start = time.Now()
	}
	art, err := r.resolver.resolve(ctx, path)
	if err != nil {
		return nil, art, err
	}
	if rep != nil {
		rep.Verify = time.Since(start)
		rep.Artifact = art.Artifact
	}
	r.mu.RLock()
	closed, p := r.closed, r.pools[art.Digest]
	r.mu.RUnlock()
	if closed {
		return nil, art, ErrClosed
	}
	if p == nil {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, art, ErrClosed
		}
		if p = r.pools[art.Digest]; p == nil {
			p = newPool(&r.env, art)
			r.pools[art.Digest] = p
		}
		r.mu.Unlock()
	}
	if _, _, err := p.ensureImage(ctx, art, rep); err != nil {
		return nil, art, err
	}
	return p, art, nil
}

// PrepareReport says what Prepare did to get an artifact ready for its
// first container, and how long each step took.
type PrepareReport struct {
	// Artifact is the artifact as verified, with the path as given.
	Artifact Artifact

	// Image is the engine's reference for the artifact's image.
	Image string
	// ImagePresent reports that the image needed no loading: the engine
	// had it already, by config digest or by manifest digest, or this
	// runtime had loaded it before.
	ImagePresent bool

	// Verify is the time taken to read and verify the file: the artifact
	// file's metadata, manifest, config and every blob's digest (layers
	// are decompressed only when the image is loaded). It is near zero
	// when this runtime verified this version of the file before.
	Verify time.Duration
	// User is the time taken to resolve the user containers run as from
	// the image's /etc/passwd and /etc/group (one read of its layers); near
	// zero when a runtime on the same state directory resolved it before
	// for this image config, and zero when the image names no user or this
	// runtime resolved it before.
	User time.Duration
	// Check is the time taken to look for the image in the engine; zero
	// when the runtime knew it present.
	Check time.Duration
	// Load is the time taken to load the image into the engine; zero
	// when it was present.
	Load time.Duration
}

// Prepare does for the artifact at artifactPath what the first Execute
// does before it starts a container, and reports what it did and how long
// each step took: it verifies the file, finds its image in the engine (by
// config digest, then manifest digest) and loads it when absent. A later
// Execute or Warm of the artifact starts with its container. An image
// Prepare loads belongs to the runtime like any it loads: unless
// WithKeepImages is set, it is removed once unused for the image retention,
// and at Close.
//
// Errors: *ArtifactError, *EngineUnavailableError, ErrClosed, or the
// context's error when ctx ends first.
func (r *Runtime) Prepare(ctx context.Context, artifactPath string) (PrepareReport, error) {
	var rep PrepareReport
	_, _, err := r.pool(ctx, artifactPath, &rep)
	return rep, err
}

// Warm loads the artifact's image and waits until at least one of its
// containers is ready (starting the minimum number, if set), so that the
// next Execute is a warm one.
func (r *Runtime) Warm(ctx context.Context, artifactPath string) error {
	p, art, err := r.pool(ctx, artifactPath, nil)
	if err != nil {
		return err
	}
	w, err := p.acquire(ctx, art)
	if err != nil {
		return err
	}
	p.release(w)
	return nil
}

// reap stops idle containers every reaper interval.
func (r *Runtime) reap() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.reaperInterval)
	defer t.Stop()
	for {
		select {
		case <-r.life.Done():
			return
		case now := <-t.C:
			for _, p := range r.poolList() {
				p.reapIdle(now)
				p.collectImage(now)
			}
		}
	}
}

// Close fails queued and in-flight requests with ErrClosed, stops and
// removes every container (SIGTERM, then SIGKILL after the shutdown
// timeout) and the runtime's directory. If ctx ends first, Close returns
// its error and the stopping continues in the background; a later runtime
// removes whatever is left.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		select {
		case <-r.closeDone:
			return r.closeErr
		case <-ctx.Done():
			return fmt.Errorf("closing runtime: %w", ctx.Err())
		}
	}
	r.closed = true
	pools := slices.Collect(maps.Values(r.pools))
	r.mu.Unlock()

	r.cancel()
	for _, p := range pools {
		p.close()
	}
	go func() {
		r.wg.Wait()
		// Containers whose removal failed while the engine was away are
		// removed now, waiting for the engine as long as a container's
		// stop may take; what remains after that, the next runtime removes.
		dctx, cancel := context.WithTimeout(ctx, r.cfg.shutdownTimeout+30*time.Second)
		_ = r.janitor.drain(dctx)
		r.removeOwnedImages(dctx, pools)
		cancel()
		if err := r.inst.close(); err != nil {
			r.closeErr = fmt.Errorf("removing the runtime directory: %w", err)
		}
		close(r.closeDone)
	}()
	select {
	case <-r.closeDone:
		return r.closeErr
	case <-ctx.Done():
		return fmt.Errorf("closing runtime: %w; containers may remain, the next runtime removes them", ctx.Err())
	}
}

// removeOwnedImages removes, at Close, the images the runtime loaded.
func (r *Runtime) removeOwnedImages(ctx context.Context, pools []*pool) {
	if r.images == nil || r.cfg.keepImages {
		return
	}
	for _, p := range pools {
		if ref := p.ownedImage.Load(); ref != nil && ctx.Err() == nil {
			r.removeImage(ctx, p.name, *ref)
		}
	}
}

// poolList returns the current pools, for work done outside r.mu.
func (r *Runtime) poolList() []*pool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Collect(maps.Values(r.pools))
}
