package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
)

// pool holds the containers (workers) of one artifact, identified by its
// content digest, and routes requests to them.
type pool struct {
	env *env
	// info is the artifact as resolved when the pool was created: its
	// identity and what every container's spec takes from the image.
	info artifactInfo
	name string // info.label(), for errors and logs

	// image is the engine's reference for the artifact's image once it is
	// known to be present; imageSem lets one caller load it at a time.
	image    atomic.Pointer[string]
	imageSem chan struct{}
	// user is the numeric uid:gid containers run as, resolved once with
	// the image (under imageSem).
	user atomic.Pointer[string]
	// ownedImage is the image this runtime loaded for the pool, which it
	// removes once unused for the image retention; nil for an image the
	// engine already had.
	ownedImage atomic.Pointer[string]

	mu       sync.Mutex
	closed   bool
	workers  map[*worker]struct{} // every worker not yet torn down
	ready    []*worker            // serving workers, oldest first
	starting int
	inflight int // requests in flight on ready workers
	waiters  []*waiter
	// Startup failure backoff: while now < backoffUntil no container is
	// started and requests that need one fail with lastStartErr.
	failures     int
	backoffUntil time.Time
	lastStartErr error
	// unusedSince is when the pool last had no container and no request;
	// zero while it has.
	unusedSince time.Time
}

type waiter struct {
	ch       chan waitResult // buffered: the sender never blocks
	assigned bool            // guarded by pool.mu
}

type waitResult struct {
	w   *worker
	err error
}

func newPool(e *env, info artifactInfo) *pool {
	return &pool{
		env:      e,
		info:     info,
		name:     info.label(),
		imageSem: make(chan struct{}, 1),
		workers:  make(map[*worker]struct{}),
	}
}

// ensureImage makes sure the engine has the artifact's image, loading art
// (the artifact as resolved for the caller) only when the engine has
// neither of its identities, and returns the image's reference and the
// user its containers run as. rep, unless nil, gets what it did and how
// long each step took.
func (p *pool) ensureImage(ctx context.Context, art artifactInfo, rep *PrepareReport) (image, user string, err error) {
	if ref, u := p.image.Load(), p.user.Load(); ref != nil && u != nil {
		if rep != nil {
			rep.Image, rep.ImagePresent = *ref, true
		}
		return *ref, *u, nil
	}
	select {
	case p.imageSem <- struct{}{}:
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	defer func() { <-p.imageSem }()
	if p.user.Load() == nil {
		start := time.Now()
		u, err := p.env.containerUser(ctx, art)
		if err != nil {
			return "", "", err
		}
		if rep != nil {
			rep.User = time.Since(start)
		}
		p.user.Store(&u)
	}
	user = *p.user.Load()
	if ref := p.image.Load(); ref != nil {
		if rep != nil {
			rep.Image, rep.ImagePresent = *ref, true
		}
		return *ref, user, nil
	}
	ref, loaded, err := p.env.loadImage(ctx, art, rep)
	if err != nil {
		return "", "", err
	}
	if loaded {
		p.ownedImage.Store(&ref)
	}
	p.image.Store(&ref)
	return ref, user, nil
}

// collectImage removes the image the runtime loaded for the pool once the
// pool has had no container and no request for the image retention. The
// next request loads it again.
func (p *pool) collectImage(now time.Time) {
	e := p.env
	owned := p.ownedImage.Load()
	if e.images == nil || e.cfg.keepImages || owned == nil {
		return
	}
	if !p.unusedFor(now, e.cfg.imageRetention) {
		return
	}
	select {
	case p.imageSem <- struct{}{}:
	default:
		return // a load or start is under way
	}
	defer func() { <-p.imageSem }()
	if !p.unusedFor(now, e.cfg.imageRetention) {
		return
	}
	// Forget it first: a container start from now on looks for the image
	// again (and waits for imageSem); one that raced ahead and finds it
	// gone loads it again.
	p.forgetImage()
	ctx, cancel := context.WithTimeout(e.life, diagnosticTimeout)
	defer cancel()
	e.removeImage(ctx, p.name, *owned)
	if errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	p.ownedImage.CompareAndSwap(owned, nil)
}

// unusedFor reports whether the pool has had no container and no request
// for at least d, noting when that began.
func (p *pool) unusedFor(now time.Time, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.workers) > 0 || len(p.waiters) > 0 || p.inflight > 0 {
		p.unusedSince = time.Time{}
		return false
	}
	if p.unusedSince.IsZero() {
		p.unusedSince = now
	}
	return now.Sub(p.unusedSince) >= d
}

// removeImage removes an image the runtime loaded. One that something
// else uses now (another runtime's container, a name someone gave it) is
// left alone, and so is one the engine cannot be asked about.
func (e *env) removeImage(ctx context.Context, artifact, ref string) {
	err := e.images.RemoveImage(ctx, ref)
	switch {
	case err == nil:
		e.stats.imageRemovals.Add(1)
		e.log.Info("removed an unused image", "artifact", artifact, "image", ref)
	case errors.Is(err, engine.ErrInUse):
		e.log.Info("leaving an unused image that something else uses", "artifact", artifact, "image", ref, "err", err)
	default:
		e.log.Warn("removing an unused image", "artifact", artifact, "image", ref, "err", err)
	}
}

// containerUser is the numeric uid:gid the artifact's containers run as:
// the image's user resolved as the engine would resolve it (so "00", "+0"
// and a name that is uid 0 in the image's /etc/passwd are all root), and
// NonRootUser instead of root unless root is allowed. The engine gets
// numbers only, so it never looks the user up itself. The lookup reads the
// image's layers only the first time on a state directory (resolveUser
// answers from its record after that); the policy on root is applied here,
// to what it answers, so runtimes with other policies share the record.
func (e *env) containerUser(ctx context.Context, info artifactInfo) (string, error) {
	if info.User == "" && !e.cfg.allowRoot {
		return NonRootUser, nil // root by default; no need to read the layers
	}
	resolve := info.resolveUser
	if resolve == nil {
		resolve = func(context.Context) (artifact.ExecUser, error) { return artifact.ResolveUserIn(info.User, nil, nil) }
	}
	u, err := resolve(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", &ArtifactError{Path: info.Path, Err: err}
	}
	if u.UID == 0 && !e.cfg.allowRoot {
		e.log.Info("the image runs as root; running it as the non-root user instead", "artifact", info.label(), "image_user", info.User, "user", NonRootUser)
		return NonRootUser, nil
	}
	return u.String(), nil
}

// forgetImage makes the next request check for (and load) the image again,
// after the engine said it is gone.
func (p *pool) forgetImage() { p.image.Store(nil) }

// acquire returns a ready worker with room for one more request, counted
// as in flight on it; release gives it back. It waits (in a bounded FIFO
// queue) while every worker is full or the first one is starting.
//
// art is the artifact as resolved for the request: a container the
// request starts loads the image from it if need be.
func (p *pool) acquire(ctx context.Context, art artifactInfo) (*worker, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if w := p.pickLocked(); w != nil {
		p.assignLocked(w)
		p.scaleLocked(art)
		p.mu.Unlock()
		p.env.stats.warmHits.Add(1)
		return w, nil
	}
	if len(p.ready) == 0 && p.starting == 0 && p.lastStartErr != nil && time.Now().Before(p.backoffUntil) {
		err := p.lastStartErr
		p.mu.Unlock()
		return nil, err
	}
	if len(p.waiters) >= p.env.cfg.queueSize {
		n := len(p.waiters)
		p.mu.Unlock()
		return nil, &OverloadedError{Artifact: p.name, Queued: n}
	}
	wt := &waiter{ch: make(chan waitResult, 1)}
	p.waiters = append(p.waiters, wt)
	p.scaleLocked(art)
	p.mu.Unlock()

	p.env.stats.queueWaits.Add(1)
	start := time.Now()
	defer func() { p.env.stats.queueWaitNanos.Add(int64(time.Since(start))) }()
	select {
	case res := <-wt.ch:
		return res.w, res.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if wt.assigned {
		p.mu.Unlock()
		if res := <-wt.ch; res.w != nil {
			p.release(res.w)
		}
		return nil, ctx.Err()
	}
	if i := slices.Index(p.waiters, wt); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
	}
	p.mu.Unlock()
	return nil, ctx.Err()
}

// pickLocked returns the least-loaded ready worker with room, or nil.
func (p *pool) pickLocked() *worker {
	var best *worker
	for _, w := range p.ready {
		if w.inflight >= p.env.cfg.containerConcurrency || (best != nil && w.inflight >= best.inflight) {
			continue
		}
		select {
		case <-w.sess.Done(): // crashed; its owner is about to remove it
			continue
		default:
		}
		best = w
		if w.inflight == 0 {
			break
		}
	}
	return best
}

func (p *pool) assignLocked(w *worker) {
	w.inflight++
	p.inflight++
}

// release ends a request on w and hands its slot to the next waiter.
func (p *pool) release(w *worker) {
	now := time.Now()
	p.mu.Lock()
	w.inflight--
	w.lastUsed = now
	if !w.gone {
		p.inflight--
	}
	if len(p.waiters) > 0 {
		p.dispatchLocked()
	}
	p.mu.Unlock()
}

// dispatchLocked hands free slots to waiters, oldest first.
func (p *pool) dispatchLocked() {
	for len(p.waiters) > 0 {
		w := p.pickLocked()
		if w == nil {
			return
		}
		wt := p.waiters[0]
		p.waiters[0] = nil
		p.waiters = p.waiters[1:]
		p.assignLocked(w)
		wt.assigned = true
		wt.ch <- waitResult{w: w}
	}
}

// failWaitersLocked fails every waiting request with err.
func (p *pool) failWaitersLocked(err error) {
	for _, wt := range p.waiters {
		wt.assigned = true
		wt.ch <- waitResult{err: err}
	}
	p.waiters = nil
}

// scaleLocked starts a container when the scale policy asks for one: below
// the minimum, or when the requests in flight and waiting outnumber the
// containers (every container has a request). It starts at most one per
// call; every request passes here, so N concurrent first requests start as
// many containers as the policy allows, never N. A container it starts
// loads the image, if need be, from art.
func (p *pool) scaleLocked(art artifactInfo) {
	if p.closed {
		return
	}
	cfg := &p.env.cfg
	total := len(p.ready) + p.starting
	if total >= cfg.maxContainers {
		return
	}
	demand := p.inflight + len(p.waiters)
	if total >= cfg.minContainers && demand <= total {
		return
	}
	if p.lastStartErr != nil && time.Now().Before(p.backoffUntil) {
		return
	}
	p.startLocked(art)
}

func (p *pool) startLocked(art artifactInfo) {
	w := newWorker(p, art)
	p.workers[w] = struct{}{}
	p.starting++
	p.env.wg.Add(1)
	go w.run()
}

// workerReady puts a started worker in service. It returns false when the
// pool closed meanwhile.
func (p *pool) workerReady(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starting--
	if p.closed {
		return false
	}
	w.lastUsed = time.Now()
	p.ready = append(p.ready, w)
	p.failures, p.backoffUntil, p.lastStartErr = 0, time.Time{}, nil
	p.dispatchLocked()
	p.scaleLocked(w.art)
	return true
}

// startFailed records a failed start. It pauses further starts
// (exponential backoff, so an app that cannot start is not restarted in a
// tight loop), and requests that nothing else can serve fail with err.
func (p *pool) startFailed(w *worker, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starting--
	delete(p.workers, w)
	if p.closed {
		return
	}
	p.failures++
	backoff := p.env.cfg.startupBackoff << min(p.failures-1, 30)
	if backoff > p.env.cfg.maxStartupBackoff || backoff <= 0 {
		backoff = p.env.cfg.maxStartupBackoff
	}
	var se *StartupError
	if errors.As(err, &se) {
		se.RetryIn = backoff // not yet shared with anyone
	}
	p.backoffUntil = time.Now().Add(backoff)
	p.lastStartErr = err
	if len(p.ready) == 0 && p.starting == 0 {
		p.failWaitersLocked(err)
	}
}

// workerGone takes a worker that stopped serving out of the pool and
// starts a replacement if the policy wants one.
func (p *pool) workerGone(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(w)
	delete(p.workers, w)
	p.scaleLocked(w.art)
	if len(p.ready) == 0 && p.starting == 0 && p.lastStartErr != nil && time.Now().Before(p.backoffUntil) {
		// Starts are paused: nothing will serve the queue before then.
		p.failWaitersLocked(p.lastStartErr)
	}
}

func (p *pool) removeLocked(w *worker) {
	if w.gone {
		return
	}
	w.gone = true
	p.inflight -= w.inflight
	if i := slices.Index(p.ready, w); i >= 0 {
		p.ready = slices.Delete(p.ready, i, i+1)
	}
}

// reapIdle retires workers idle for the idle timeout, keeping the minimum,
// and starts containers up to the minimum (with no request to resolve the
// artifact for them, from the artifact the pool was created with).
func (p *pool) reapIdle(now time.Time) {
	p.mu.Lock()
	var idle []*worker
	keep := len(p.ready)
	for _, w := range p.ready {
		if keep <= p.env.cfg.minContainers {
			break
		}
		if w.inflight == 0 && now.Sub(w.lastUsed) >= p.env.cfg.idleTimeout {
			idle = append(idle, w)
			keep--
		}
	}
	for _, w := range idle {
		p.removeLocked(w)
	}
	p.scaleLocked(p.info)
	p.mu.Unlock()
	for _, w := range idle {
		p.env.log.Info("stopping idle container", "artifact", p.name, "container", w.containerID, "idle", now.Sub(w.lastUsed).Round(time.Millisecond))
		w.retire(errIdle)
	}
}

// close fails waiting requests and stops every worker.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.failWaitersLocked(ErrClosed)
	workers := make([]*worker, 0, len(p.workers))
	for w := range p.workers {
		workers = append(workers, w)
	}
	p.mu.Unlock()
	for _, w := range workers {
		w.retire(ErrClosed)
	}
}

func (p *pool) stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{
		Artifact:   p.name,
		Digest:     p.info.Digest,
		Containers: len(p.ready),
		Starting:   p.starting,
		InFlight:   p.inflight,
		Queued:     len(p.waiters),
	}
}

// loadImage finds the artifact's image in the engine or loads it from info,
// and reports whether it loaded it. rep, unless nil, gets what it did and
// how long each step took.
func (e *env) loadImage(ctx context.Context, info artifactInfo, rep *PrepareReport) (string, bool, error) {
	ids := []string{info.ConfigDigest, info.Digest}
	find := func() (string, error) {
		for _, id := range ids {
			if id == "" {
				continue
			}
			ok, err := e.eng.ImageExists(ctx, id)
			if err != nil {
				return "", fmt.Errorf("looking for image %s: %w", id, err)
			}
			if ok {
				return id, nil
			}
		}
		return "", nil
	}
	start := time.Now()
	ref, err := find()
	if rep != nil {
		rep.Check = time.Since(start)
	}
	if err != nil || ref != "" {
		if ref != "" {
			e.log.Debug("image already present", "artifact", info.label(), "image", ref)
			if rep != nil {
				rep.Image, rep.ImagePresent = ref, true
			}
		}
		return ref, false, err
	}

	start = time.Now()
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := info.archive(ctx, pw)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	loaded, err := e.eng.LoadImage(ctx, pr)
	// Unblock the writer if the engine stopped reading early.
	_ = pr.CloseWithError(errors.New("the engine stopped reading the archive"))
	// A fault in the file (changed since it was verified) explains an
	// engine error too; a write error caused by the engine's does not.
	if werr := <-writeErr; werr != nil && (err == nil || errors.As(werr, new(*artifact.Error))) {
		return "", false, &ArtifactError{Path: info.Path, Err: werr}
	}
	if err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			return "", false, &ArtifactError{Path: info.Path, Err: err}
		}
		return "", false, fmt.Errorf("loading artifact %s: %w", info.Path, err)
	}
	e.stats.imageLoads.Add(1)
	for _, l := range loaded {
		if slices.Contains(ids, l) {
			ref = l
		}
	}
	if ref == "" {
		// Engines report names or IDs depending on their image store; ask
		// for the identities the artifact declares.
		if ref, err = find(); err != nil {
			return "", false, err
		}
	}
	if ref == "" {
		// An engine that re-derives the image (e.g. the containerd store
		// importing a docker-save archive) knows it only by the ID it
		// reported. The archive names no image, so a name here is not ours.
		for _, l := range loaded {
			if strings.HasPrefix(l, "sha256:") {
				ref = l
				break
			}
		}
	}
	if ref == "" {
		return "", false, &ArtifactError{Path: info.Path, Err: fmt.Errorf("the engine reported loading nothing and has no image with digest %s or %s", info.ConfigDigest, info.Digest)}
	}
	took := time.Since(start)
	if rep != nil {
		rep.Image, rep.Load = ref, took
	}
	e.log.Info("image loaded", "artifact", info.label(), "image", ref, "duration", took.Round(time.Millisecond))
	return ref, true, nil
}
