package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// errIdle is why the reaper retires a worker.
var errIdle = errors.New("container stopped after being idle")

// worker is one container and its session. One goroutine (run) owns its
// whole life: it starts the container, serves until the container dies or
// is retired, and tears it down, so each container is stopped and removed
// exactly once.
type worker struct {
	env *env
	// p is the worker's pool, for its calls back (workerReady, startFailed,
	// workerGone) and its image (ensureImage, forgetImage); what the
	// worker knows of its artifact is in art.
	p *pool
	// art is the artifact as resolved for the request that started the
	// worker: the image is loaded from it if the engine lacks it.
	art    artifactInfo
	id     string
	dir    string // host directory mounted at /run/ociapp
	socket string
	// mounted reports whether dir is a tmpfs the worker mounted.
	mounted bool

	// name is the container's name, known to the janitor from here until
	// the teardown has ended.
	name string

	// Set by run before the worker is published as ready. created is set
	// once creating the container has been attempted.
	created     bool
	containerID string
	sess        session

	// Guarded by p.mu.
	inflight int
	lastUsed time.Time
	gone     bool // out of p.ready for good

	retireOnce   sync.Once
	retireCh     chan struct{}
	retireReason error

	// exitCh gets the container's final state from the goroutine waiting
	// on it; exited and exitState record it once received.
	exitCh    chan exitResult
	exited    bool
	exitState engine.ContainerState
	exitErr   error

	// dead is closed once deadErr says why the worker stopped serving:
	// a *WorkerCrashError, ErrClosed, or errIdle.
	dead    chan struct{}
	deadErr error
}

type exitResult struct {
	state engine.ContainerState
	err   error
}

func newWorker(p *pool, art artifactInfo) *worker {
	id := randomID(4)
	dir := filepath.Join(p.env.inst.dir, id)
	app := strings.Trim(nameInvalid.ReplaceAllString(art.Name, "-"), "-._")
	if app == "" {
		app = "app"
	}
	if len(app) > 40 {
		app = app[:40]
	}
	name := fmt.Sprintf("ociapp-%s-%s-%s", app, p.env.inst.id, id)
	p.env.janitor.track(name)
	return &worker{
		env:      p.env,
		p:        p,
		art:      art,
		id:       id,
		name:     name,
		dir:      dir,
		socket:   filepath.Join(dir, socketName),
		retireCh: make(chan struct{}),
		exitCh:   make(chan exitResult, 1),
		dead:     make(chan struct{}),
	}
}

// retire asks the worker to stop serving and tear down, for reason.
func (w *worker) retire(reason error) {
	w.retireOnce.Do(func() {
		w.retireReason = reason
		close(w.retireCh)
	})
}

func (w *worker) run() {
	e := w.env
	defer e.wg.Done()
	log := e.log.With("artifact", w.art.label(), "worker", w.id)
	var waitWG sync.WaitGroup
	waitCtx, stopWaiting := context.WithCancel(context.Background())
	defer func() {
		stopWaiting()
		waitWG.Wait()
	}()

	start := time.Now()
	err := w.start(waitCtx, &waitWG)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			e.stats.startupFailures.Add(1)
			log.Warn("container failed to start", "container", w.containerID, "err", err)
		}
		w.p.startFailed(w, err)
		w.finish(err)
		w.teardown(log)
		return
	}
	e.stats.coldStarts.Add(1)
	log.Info("container ready", "container", w.containerID, "duration", time.Since(start).Round(time.Microsecond))
	if !w.p.workerReady(w) {
		w.p.workerGone(w)
		w.finish(ErrClosed)
		w.teardown(log)
		return
	}

	fate := w.serve()
	var crash *WorkerCrashError
	if errors.As(fate, &crash) {
		log.Warn("container crashed", "container", w.containerID, "err", fate)
	}
	w.p.workerGone(w)
	w.finish(fate)
	w.teardown(log)
}

func (w *worker) finish(err error) {
	w.deadErr = err
	close(w.dead)
}

// start creates and starts the container and waits until its socket
// accepts a connection, watching the container meanwhile: if it exits
// first, or the startup timeout passes, start returns a *StartupError with
// its exit status and last log lines.
func (w *worker) start(waitCtx context.Context, waitWG *sync.WaitGroup) error {
	e := w.env
	ctx, cancel := context.WithTimeout(e.life, e.cfg.startupTimeout)
	defer cancel()
	image, user, err := w.p.ensureImage(ctx, w.art, nil)
	if err != nil {
		if errors.As(err, new(*ArtifactError)) {
			return err
		}
		return w.startupError(ctx, err, "its image could not be loaded")
	}
	if err := w.makeSocketDir(); err != nil {
		return err
	}

	w.created = true
	id, err := e.eng.CreateContainer(ctx, w.spec(image, user))
	if errors.Is(err, engine.ErrNotFound) {
		// The image was removed behind the runtime's back: load it
		// again, once.
		w.p.forgetImage()
		if image, user, err = w.p.ensureImage(ctx, w.art, nil); err != nil {
			if errors.As(err, new(*ArtifactError)) {
				return err
			}
			return w.startupError(ctx, err, "its image could not be loaded")
		}
		id, err = e.eng.CreateContainer(ctx, w.spec(image, user))
	}
	if err != nil {
		return w.startupError(ctx, err, "the engine could not create it")
	}
	w.containerID = id
	if err := e.eng.StartContainer(ctx, id); err != nil {
		return w.startupError(ctx, err, "the engine could not start it")
	}
	waitWG.Add(1)
	go func() {
		defer waitWG.Done()
		w.exitCh <- w.waitExit(waitCtx, id)
	}()

	delay := time.NewTimer(0)
	defer delay.Stop()
	pause := time.Millisecond
	var dialErr error // the last failure to connect to an existing socket
	for {
		select {
		case res := <-w.exitCh:
			w.noteExit(res)
			return w.startupError(ctx, w.exitErr, w.exitReason()+" before its socket was ready")
		case <-w.retireCh:
			return ErrClosed
		case <-ctx.Done():
			if e.life.Err() != nil {
				return ErrClosed
			}
			reason := fmt.Sprintf("its socket did not appear within the startup timeout of %v", e.cfg.startupTimeout)
			if w.mounted && dialErr == nil && w.socketHiddenByTmpfs() {
				e.socketTmpfs.Store(tmpfsUnavailable)
				e.log.Warn("the engine does not see the runtime's mounts (another mount namespace): socket directories are plain directories from now on", "state_dir", e.inst.stateDir)
				reason = "its socket is under the socket directory's tmpfs, which the engine does not see because the runtime runs in another mount namespace; the next containers use plain directories (set the socket directory limit to 0 to start that way)"
			}
			if dialErr != nil {
				reason = fmt.Sprintf("its socket did not accept connections within the startup timeout of %v", e.cfg.startupTimeout)
			}
			return w.startupError(ctx, dialErr, reason)
		case <-delay.C:
		}
		sess, err := e.cfg.dial(ctx, w.socket, w.art.caps)
		if err == nil {
			w.sess = sess
			return nil
		}
		if !errors.Is(err, errNotReady) {
			dialErr = err
		}
		delay.Reset(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// makeSocketDir creates the host directory the container's socket
// directory is bound to. The app can write there, so with a socket
// directory limit it is a tmpfs of that size (its pages are charged to the
// container's memory as well); mounting needs root, and without it the
// directory is a plain one on the state directory's file system.
func (w *worker) makeSocketDir() error {
	e := w.env
	if err := os.Mkdir(w.dir, 0o777); err != nil {
		return fmt.Errorf("creating socket directory: %w", err)
	}
	// The umask narrowed Mkdir's mode; the app (not root) creates its
	// socket here. The directory under a tmpfs needs the mode too: an
	// engine in another mount namespace binds it, not the tmpfs.
	if err := os.Chmod(w.dir, 0o777); err != nil {
		return fmt.Errorf("creating socket directory: %w", err)
	}
	if e.socketTmpfs.Load() == tmpfsUnknown && !sharesInitMountNamespace() {
		// A tmpfs mounted here would hide the socket from an engine in
		// the host's mount namespace (e.g. under ip netns exec).
		if e.socketTmpfs.CompareAndSwap(tmpfsUnknown, tmpfsUnavailable) {
			e.log.Warn("the runtime runs in a mount namespace of its own: socket directories are plain directories, which applications can fill up to the free space of the state directory's file system", "state_dir", e.inst.stateDir)
		}
	}
	if limit := e.cfg.socketDirLimit; limit > 0 && e.socketTmpfs.Load() != tmpfsUnavailable {
		opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0777", limit, socketDirInodes)
		err := syscall.Mount("tmpfs", w.dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, opts)
		switch {
		case err == nil:
			w.mounted = true
			e.socketTmpfs.Store(tmpfsMounted)
		case errors.Is(err, syscall.EPERM):
			if e.socketTmpfs.CompareAndSwap(tmpfsUnknown, tmpfsUnavailable) {
				e.log.Warn("cannot mount a tmpfs for socket directories (not root): they are plain directories, which applications can fill up to the free space of the state directory's file system", "state_dir", e.inst.stateDir)
			}
		default:
			return fmt.Errorf("mounting a tmpfs on the socket directory: %w", err)
		}
	}
	return nil
}

// socketHiddenByTmpfs unmounts the worker's socket directory tmpfs and
// reports whether the app's socket is in the directory beneath it: the
// engine then bound that directory, not the tmpfs.
func (w *worker) socketHiddenByTmpfs() bool {
	if err := syscall.Unmount(w.dir, syscall.MNT_DETACH); err != nil {
		return false
	}
	w.mounted = false
	_, err := os.Lstat(w.socket)
	return err == nil
}

// sharesInitMountNamespace reports whether this process sees the mounts of
// PID 1, where the engine runs on a host; when that cannot be read, it
// assumes so and mounting decides.
func sharesInitMountNamespace() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 != nil || err2 != nil || self == init
}

// socketDirInodes bounds the files in a tmpfs socket directory (the socket
// is one); inodes cost memory that the size limit does not count.
const socketDirInodes = 64

// What the runtime found out about mounting tmpfs socket directories.
const (
	tmpfsUnknown int32 = iota
	tmpfsMounted
	tmpfsUnavailable
)

// waitExit waits for the container to exit. An engine that cannot be
// reached (or fails otherwise) says nothing about the container, so the
// wait is retried until the engine reports a definite exit, or that the
// container is gone, or ctx ends.
func (w *worker) waitExit(ctx context.Context, id string) exitResult {
	e := w.env
	retry := janitorFirstRetry
	for {
		st, err := e.eng.WaitContainer(ctx, id)
		if err == nil || errors.Is(err, engine.ErrNotFound) || ctx.Err() != nil {
			return exitResult{state: st, err: err}
		}
		if engineUnavailable(err) {
			e.janitor.noteOutage()
		}
		e.log.Debug("waiting for the container failed; waiting again", "container", id, "err", err, "retry_in", retry)
		select {
		case <-ctx.Done():
			return exitResult{err: ctx.Err()}
		case <-time.After(retry):
		}
		retry = min(2*retry, janitorMaxRetry)
	}
}

// startupError builds the error for a failed start, with the container's
// state and the tail of its log when there is a container. Engine
// unavailability is passed through as is: no container can start then.
func (w *worker) startupError(ctx context.Context, err error, reason string) error {
	if errors.Is(err, context.Canceled) && w.env.life.Err() != nil {
		return ErrClosed
	}
	if engineUnavailable(err) {
		w.env.janitor.noteOutage()
		return err
	}
	se := &StartupError{Artifact: w.art.label(), ContainerID: w.containerID, Reason: reason, Err: err}
	if w.containerID != "" {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), diagnosticTimeout)
		defer cancel()
		if !w.exited {
			if st, ierr := w.env.eng.InspectContainer(dctx, w.containerID); ierr == nil && !st.Running && st.Status != "created" {
				w.exited, w.exitState = true, st
			}
		}
		if w.exited {
			se.Exited, se.ExitCode, se.OOMKilled = true, w.exitState.ExitCode, w.exitState.OOMKilled
			if se.Err == nil && w.exitState.Error != "" {
				se.Err = errors.New(w.exitState.Error)
			}
		}
		se.Logs = w.logs(dctx)
	}
	return se
}

// diagnosticTimeout bounds the engine calls that gather an error's details.
const diagnosticTimeout = 5 * time.Second

func (w *worker) logs(ctx context.Context) string {
	text, err := w.env.eng.ContainerLogs(ctx, w.containerID, logTailLines)
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	return strings.TrimRight(text, "\n")
}

func (w *worker) noteExit(res exitResult) {
	w.exited = res.err == nil
	w.exitState = res.state
	if res.err != nil {
		w.exitErr = fmt.Errorf("lost track of the container: %w", res.err)
	}
}

// serve waits until the container exits, its connection ends, or the
// worker is retired, and returns why.
func (w *worker) serve() error {
	select {
	case res := <-w.exitCh:
		w.noteExit(res)
		return w.crash(w.exitReason(), w.exitErr)
	case <-w.sess.Done():
	case <-w.retireCh:
		return w.retireReason
	}
	cause := w.sess.Err()
	var fe *protocol.FrameError
	endedMidFrame := errors.As(cause, &fe) && (fe.Fault == protocol.FaultTruncatedHeader || fe.Fault == protocol.FaultTruncatedBody)
	if protocol.IsMalformed(cause) && !endedMidFrame {
		return w.crash("it wrote a malformed frame, so its connection was closed", cause)
	}
	// The connection ended, perhaps mid-frame (a killed process resets
	// it): usually because the process is exiting.
	// Give the engine a moment to report the exit status.
	grace := time.NewTimer(w.env.cfg.exitGrace)
	defer grace.Stop()
	select {
	case res := <-w.exitCh:
		w.noteExit(res)
		return w.crash(w.exitReason(), w.exitErr)
	case <-grace.C:
		return w.crash("it closed its connection but kept running", cause)
	case <-w.retireCh:
		return w.retireReason
	}
}

func (w *worker) exitReason() string {
	if w.exited {
		return "the container exited"
	}
	return "the runtime lost track of the container"
}

func (w *worker) crash(reason string, err error) *WorkerCrashError {
	ctx, cancel := context.WithTimeout(context.Background(), diagnosticTimeout)
	defer cancel()
	e := &WorkerCrashError{Artifact: w.art.label(), ContainerID: w.containerID, Reason: reason, Err: err}
	if w.exited {
		e.Exited, e.ExitCode, e.OOMKilled = true, w.exitState.ExitCode, w.exitState.OOMKilled
	}
	e.Logs = w.logs(ctx)
	w.env.stats.crashes.Add(1)
	return e
}

// teardown closes the session, stops and removes the container and
// removes the socket directory.
func (w *worker) teardown(log interface {
	Warn(string, ...any)
	Debug(string, ...any)
}) {
	e := w.env
	if w.sess != nil {
		_ = w.sess.Close()
	}
	defer e.janitor.untrack(w.name)
	if w.containerID == "" && w.created {
		// The create call failed or was canceled, perhaps after the engine
		// made the container: remove it by name (a missing one is fine).
		ctx, cancel := context.WithTimeout(context.Background(), diagnosticTimeout)
		if err := e.eng.RemoveContainer(ctx, w.name); err != nil {
			log.Warn("removing container; retrying when the engine answers", "container", w.name, "err", err)
			e.janitor.remove(w.name)
		}
		cancel()
	}
	if w.containerID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.shutdownTimeout+30*time.Second)
		if !w.exited {
			if err := e.eng.StopContainer(ctx, w.containerID, e.cfg.shutdownTimeout); err != nil {
				log.Warn("stopping container", "container", w.containerID, "err", err)
			}
		}
		if err := e.eng.RemoveContainer(ctx, w.containerID); err != nil {
			log.Warn("removing container; retrying when the engine answers", "container", w.containerID, "err", err)
			e.janitor.remove(w.containerID)
		}
		cancel()
	}
	if w.mounted {
		if err := syscall.Unmount(w.dir, syscall.MNT_DETACH); err != nil {
			log.Warn("unmounting socket directory", "dir", w.dir, "err", err)
		}
	}
	if err := os.RemoveAll(w.dir); err != nil {
		log.Warn("removing socket directory", "dir", w.dir, "err", err)
	}
	log.Debug("container removed", "container", w.containerID)
}

// volumeTmpfsOptions mount what covers an image's VOLUME: empty and
// read-only.
const volumeTmpfsOptions = "ro,nosuid,nodev,noexec,size=4k"

var nameInvalid = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// spec is the container to create from image, running as user:
// hardened by default, labelled for cleanup, with the socket directory
// mounted where the app listens.
func (w *worker) spec(image, user string) engine.ContainerSpec {
	e := w.env
	cfg := &e.cfg
	// Docker merges the image's labels into the container's and cannot be
	// told not to: blank every one, so the container's only values are
	// the runtime's (set last, so no image label can override them).
	labels := make(map[string]string, len(w.art.Labels)+5)
	for k := range w.art.Labels {
		labels[k] = ""
	}
	maps.Copy(labels, map[string]string{
		LabelManaged:        "1",
		LabelInstance:       e.inst.id,
		LabelStateDir:       e.inst.stateDir,
		LabelArtifactDigest: w.art.Digest,
		LabelArtifactName:   w.art.Name,
	})
	socketDir := path.Dir(protocol.DefaultSocketPath)
	tmpfs := map[string]string{"/tmp": "rw,nosuid,nodev,size=" + DefaultTmpfsSize}
	for _, v := range w.art.Volumes {
		// The image's VOLUMEs would each get a writable anonymous volume,
		// outside every limit: cover each with an empty read-only tmpfs
		// instead (the engine creates no volume where something is
		// mounted).
		if v = path.Clean(v); v != socketDir && tmpfs[v] == "" {
			tmpfs[v] = volumeTmpfsOptions
		}
	}
	return engine.ContainerSpec{
		Name:            w.name,
		Image:           image,
		User:            user,
		Labels:          labels,
		Mounts:          []engine.Mount{{Source: w.dir, Target: path.Dir(protocol.DefaultSocketPath)}},
		Init:            true,
		ReadOnlyRootfs:  true,
		Tmpfs:           tmpfs,
		CapDrop:         []string{"ALL"},
		NoNewPrivileges: true,
		PidsLimit:       cfg.pidsLimit,
		MemoryBytes:     cfg.memoryBytes,
		NanoCPUs:        cfg.nanoCPUs,
		NetworkMode:     cfg.network,
		StopTimeout:     cfg.shutdownTimeout,
	}
}
