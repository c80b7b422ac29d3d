// Package runtime executes .ociapp artifacts in pools of warm, sandboxed containers.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	cfg      config
	eng      engine.Engine
	log      *slog.Logger
	inst     *instance
	resolver *resolver
	janitor  *janitor
	// images removes the images the runtime loaded; nil when the engine
	// cannot remove images.
	images engine.ImageRemover
	stats  counters
	// socketTmpfs is tmpfsUnknown until a socket directory mount succeeds
	// or fails for want of privilege.
	socketTmpfs atomic.Int32
	// requests counts the requests in progress, so that connections to
	// containers busy-poll only while the runtime is lightly loaded.
	requests *protocol.PollGroup

	// life is canceled by Close; it bounds container starts and the reaper.
	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the runtime started

	mu     sync.RWMutex
	closed bool
	pools  map[string]*pool // by artifact digest
	// closeDone is closed when the first Close has finished.
	closeDone chan struct{}
	closeErr  error
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
	requests := new(protocol.PollGroup)
	if cfg.dial == nil {
		cfg.dial = protocolDialer(protocol.WithBusyPoll(cfg.busyPoll), protocol.WithPollGroup(requests))
	}
	if cfg.openArtifact == nil {
		cfg.openArtifact = openArtifactFile
	}
	if cfg.stateDir == "" {
		cfg.stateDir = defaultStateDir()
	}
	r := &Runtime{
		cfg:       cfg,
		eng:       cfg.engine,
		log:       cfg.logger,
		resolver:  newResolver(cfg.openArtifact),
		requests:  requests,
		pools:     make(map[string]*pool),
		closeDone: make(chan struct{}),
	}
	inst, err := openInstance(cfg.stateDir)
	if err != nil {
		return nil, err
	}
	r.inst = inst
	r.images, _ = r.eng.(engine.ImageRemover)
	if err := inst.cleanOrphans(ctx, r.eng, r.log); err != nil {
		_ = inst.close()
		return nil, fmt.Errorf("removing what crashed runtimes left behind: %w", err)
	}
	r.life, r.cancel = context.WithCancel(context.Background())
	r.janitor = newJanitor(r)
	go r.janitor.run()
	r.wg.Add(1)
	go r.reap()
	r.log.Debug("runtime started", "state_dir", inst.dir, "max_containers", cfg.maxContainers)
	return r, nil
}

// errRequestTimeout is the cause of a request context whose request
// timeout passed, telling it apart from the caller's own deadline.
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
	p, err := r.pool(ctx, artifactPath)
	if err != nil {
		return nil, r.countFailure(err)
	}
	w, err := p.acquire(ctx)
	if err != nil {
		return nil, r.countFailure(err)
	}
	callCtx, cancel := context.WithTimeoutCause(ctx, r.cfg.requestTimeout, errRequestTimeout)
	out, err := w.sess.Call(callCtx, payload)
	timedOut := context.Cause(callCtx) == errRequestTimeout
	cancel()
	p.release(w)
	if err == nil {
		return out, nil
	}
	return nil, r.countFailure(r.callError(ctx, p, w, err, timedOut))
}

func (r *Runtime) callError(ctx context.Context, p *pool, w *worker, err error, timedOut bool) error {
	var appErr *AppError
	switch {
	case errors.As(err, &appErr):
		return appErr
	case ctx.Err() != nil:
		return fmt.Errorf("executing %s: %w", p.name, ctx.Err())
	case timedOut && errors.Is(err, context.DeadlineExceeded):
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

// pool returns the pool of the artifact at path, with its image present.
func (r *Runtime) pool(ctx context.Context, path string) (*pool, error) {
	info, err := r.resolver.resolve(ctx, path)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	closed, p := r.closed, r.pools[info.Digest]
	r.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if p == nil {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		if p = r.pools[info.Digest]; p == nil {
			p = newPool(r, info)
			r.pools[info.Digest] = p
		}
		r.mu.Unlock()
	}
	p.setPath(path)
	if _, err := p.ensureImage(ctx, path); err != nil {
		return nil, err
	}
	return p, nil
}

// Warm loads the artifact's image and waits until at least one of its
// containers is ready (starting the minimum number, if set), so that the
// next Execute is a warm one.
func (r *Runtime) Warm(ctx context.Context, artifactPath string) error {
	p, err := r.pool(ctx, artifactPath)
	if err != nil {
		return err
	}
	w, err := p.acquire(ctx)
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
