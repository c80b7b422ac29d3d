package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// fakeApp scripts how a fake container behaves.
type fakeApp struct {
	// readyAfter is how long after start the socket accepts connections.
	readyAfter time.Duration
	// exitAtStart, when set, makes the container exit with this code at
	// readyAfter instead of serving.
	exitAtStart *int
	// neverBinds makes the socket never appear.
	neverBinds bool
	logs       string
	// handle serves one request; nil echoes the payload.
	handle func(ctx context.Context, c *fakeContainer, payload []byte) ([]byte, error)
}

type fakeContainer struct {
	e    *fakeEngine
	id   string
	spec engine.ContainerSpec
	app  fakeApp

	// Guarded by e.mu.
	running   bool
	exitedAt  bool
	exitCode  int
	oom       bool
	readyAt   time.Time
	stops     int
	removed   bool
	sessions  []*fakeSession
	served    int
	maxInFlt  int
	inFlight  int
	exitedCh  chan struct{}
	startedAt time.Time
}

// fakeEngine is an in-memory engine whose containers run fakeApps.
type fakeEngine struct {
	mu         sync.Mutex
	images     map[string]bool
	loads      int
	apps       map[string]fakeApp // by image ID
	containers []*fakeContainer
	byID       map[string]*fakeContainer
	// unavailable makes every call fail as if the daemon were down;
	// waitCut is closed when it becomes so, ending the waits in progress.
	unavailable bool
	waitCut     chan struct{}
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{images: map[string]bool{}, apps: map[string]fakeApp{}, byID: map[string]*fakeContainer{}, waitCut: make(chan struct{})}
}

var errFakeDown = &engine.UnavailableError{Host: "unix:///fake.sock", Err: errors.New("connection refused")}

// setUnavailable starts or ends an outage: while it lasts every call
// fails, and the waits in progress fail when it starts.
func (e *fakeEngine) setUnavailable(down bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.unavailable = down
	if down {
		close(e.waitCut)
		e.waitCut = make(chan struct{})
	}
}

func (e *fakeEngine) check() error {
	if e.unavailable {
		return errFakeDown
	}
	return nil
}

func (e *fakeEngine) Ping(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.check()
}

func (e *fakeEngine) ImageExists(ctx context.Context, ref string) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(); err != nil {
		return false, err
	}
	return e.images[ref], nil
}

func (e *fakeEngine) LoadImage(ctx context.Context, archive io.Reader) ([]string, error) {
	b, err := io.ReadAll(archive)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(); err != nil {
		return nil, err
	}
	e.loads++
	// The fake archive is the config digest; like the classic store, the
	// fake reports the image by name and knows it by config digest.
	e.images[string(b)] = true
	return []string{"ociapp.local/app:1"}, nil
}

func (e *fakeEngine) RemoveImage(ctx context.Context, ref string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(); err != nil {
		return err
	}
	for _, c := range e.containers {
		if !c.removed && c.spec.Image == ref {
			return fmt.Errorf("image %s: %w", ref, engine.ErrInUse)
		}
	}
	delete(e.images, ref)
	return nil
}

func (e *fakeEngine) hasImage(ref string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.images[ref]
}

func (e *fakeEngine) loadCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loads
}

func (e *fakeEngine) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(); err != nil {
		return "", err
	}
	if !e.images[spec.Image] {
		return "", fmt.Errorf("no such image %s: %w", spec.Image, engine.ErrNotFound)
	}
	c := &fakeContainer{e: e, id: fmt.Sprintf("c%02d", len(e.containers)+1), spec: spec, app: e.apps[spec.Image], exitedCh: make(chan struct{})}
	e.containers = append(e.containers, c)
	e.byID[c.id] = c
	return c.id, nil
}

func (e *fakeEngine) StartContainer(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.byID[id]
	c.running = true
	c.startedAt = time.Now()
	c.readyAt = time.Now().Add(c.app.readyAfter)
	if code := c.app.exitAtStart; code != nil {
		time.AfterFunc(c.app.readyAfter, func() { c.exit(*code, false) })
	}
	return nil
}

// exit ends the container: its sessions see the connection close.
func (c *fakeContainer) exit(code int, oom bool) {
	c.e.mu.Lock()
	if !c.running {
		c.e.mu.Unlock()
		return
	}
	c.running, c.exitedAt, c.exitCode, c.oom = false, true, code, oom
	sessions := c.sessions
	close(c.exitedCh)
	c.e.mu.Unlock()
	for _, s := range sessions {
		s.fail(errors.New("server closed the connection"))
	}
}

func (e *fakeEngine) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	e.mu.Lock()
	if err := e.check(); err != nil {
		e.mu.Unlock()
		return err
	}
	c := e.byID[id]
	c.stops++
	e.mu.Unlock()
	c.exit(143, false)
	return nil
}

func (e *fakeEngine) RemoveContainer(ctx context.Context, id string) error {
	e.mu.Lock()
	if err := e.check(); err != nil {
		e.mu.Unlock()
		return err
	}
	c, ok := e.byID[id]
	e.mu.Unlock()
	if !ok {
		return nil
	}
	c.exit(137, false)
	e.mu.Lock()
	c.removed = true
	e.mu.Unlock()
	return nil
}

func (e *fakeEngine) state(c *fakeContainer) engine.ContainerState {
	st := engine.ContainerState{ID: c.id, Running: c.running, ExitCode: c.exitCode, OOMKilled: c.oom, Status: "running"}
	if c.exitedAt {
		st.Status = "exited"
	}
	return st
}

func (e *fakeEngine) InspectContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.byID[id]
	if !ok {
		return engine.ContainerState{}, engine.ErrNotFound
	}
	return e.state(c), nil
}

func (e *fakeEngine) WaitContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	e.mu.Lock()
	c, cut, err := e.byID[id], e.waitCut, e.check()
	e.mu.Unlock()
	if err != nil {
		return engine.ContainerState{}, err
	}
	select {
	case <-c.exitedCh:
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.state(c), nil
	case <-cut:
		return engine.ContainerState{}, errFakeDown
	case <-ctx.Done():
		return engine.ContainerState{}, ctx.Err()
	}
}

func (e *fakeEngine) ContainerLogs(ctx context.Context, id string, tail int) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byID[id].app.logs, nil
}

func (e *fakeEngine) ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerSummary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(); err != nil {
		return nil, err
	}
	var out []engine.ContainerSummary
	for _, c := range e.containers {
		if c.removed {
			continue
		}
		match := true
		for k, v := range labels {
			if got, ok := c.spec.Labels[k]; !ok || (v != "" && got != v) {
				match = false
			}
		}
		if match {
			out = append(out, engine.ContainerSummary{ID: c.id, Labels: maps.Clone(c.spec.Labels)})
		}
	}
	return out, nil
}

// dial is the fake dialFunc: it connects to the container whose socket
// directory holds socketPath, once that container is ready.
func (e *fakeEngine) dial(ctx context.Context, socketPath string, _ capabilities) (session, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.containers {
		if len(c.spec.Mounts) == 0 || filepath.Join(c.spec.Mounts[0].Source, socketName) != socketPath {
			continue
		}
		if !c.running || c.app.neverBinds || c.app.exitAtStart != nil || time.Now().Before(c.readyAt) {
			return nil, errNotReady
		}
		s := &fakeSession{c: c, done: make(chan struct{})}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		c.sessions = append(c.sessions, s)
		return s, nil
	}
	return nil, errNotReady
}

// counts returns how many containers were created, and how many are still
// running.
func (e *fakeEngine) counts() (created, running int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.containers {
		if c.running {
			running++
		}
	}
	return len(e.containers), running
}

func (e *fakeEngine) container(i int) *fakeContainer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.containers[i]
}

type fakeSession struct {
	c      *fakeContainer
	ctx    context.Context // canceled when the connection ends
	cancel context.CancelFunc

	mu   sync.Mutex
	err  error
	done chan struct{}
	wg   sync.WaitGroup
}

func (s *fakeSession) fail(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = &protocol.ConnectionError{Err: cause}
	s.cancel()
	close(s.done)
}

func (s *fakeSession) Done() <-chan struct{} { return s.done }

func (s *fakeSession) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *fakeSession) Close() error {
	s.fail(errors.New("client closed"))
	s.wg.Wait()
	return nil
}

func (s *fakeSession) CallWithin(ctx context.Context, payload []byte, timeout time.Duration) ([]byte, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	s.wg.Add(1)
	s.mu.Unlock()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	c := s.c
	c.e.mu.Lock()
	c.served++
	c.inFlight++
	c.maxInFlt = max(c.maxInFlt, c.inFlight)
	c.e.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			c.e.mu.Lock()
			c.inFlight--
			c.e.mu.Unlock()
		}()
		var r result
		if c.app.handle == nil {
			r.b = payload
		} else {
			r.b, r.err = c.app.handle(s.ctx, c, payload)
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		select {
		case <-s.done: // the connection ended before the answer was read
			return nil, s.Err()
		default:
		}
		return r.b, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("request: %w", ctx.Err())
	case <-expired:
		return nil, fmt.Errorf("request: %w", protocol.ErrCallTimeout)
	case <-s.done:
		return nil, s.Err()
	}
}

// Handlers.

func sleepFor(d time.Duration) func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
	return func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
		select {
		case <-time.After(d):
			return p, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// fixture is a runtime on a fake engine with one artifact per app.
type fixture struct {
	t   testing.TB
	eng *fakeEngine
	rt  *Runtime
	dir string
	// opens counts artifact verifications.
	mu      sync.Mutex
	opens   int
	trusted int // opens given a verified file digest
}

// artifacts: file name -> digest; the fake config digest is "cfg-"+digest.
func newFixture(t testing.TB, apps map[string]fakeApp, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{t: t, eng: newFakeEngine(), dir: t.TempDir()}
	for name, app := range apps {
		f.eng.apps["cfg-"+name] = app
		if err := os.WriteFile(filepath.Join(f.dir, name+".ociapp"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts = append([]Option{
		WithEngine(f.eng),
		WithStateDir(filepath.Join(f.dir, "state")),
		withDialer(f.eng.dial),
		withArtifactOpener(f.open),
	}, opts...)
	rt, err := New(t.Context(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.rt = rt
	return f
}

// open is the fake openFunc: the file's content names the app, and copies
// of one file share its digest.
func (f *fixture) open(_ context.Context, path string, verified string) (artifactInfo, error) {
	f.mu.Lock()
	f.opens++
	if verified != "" {
		f.trusted++
	}
	f.mu.Unlock()
	b, err := os.ReadFile(path)
	if err != nil {
		return artifactInfo{}, err
	}
	name := strings.TrimSpace(string(b))
	user := ""
	if strings.HasPrefix(name, "user-") {
		user = "1000"
	}
	var volumes []string
	var labels map[string]string
	if strings.HasPrefix(name, "hostile-") {
		// An image config that tries to loosen the sandbox.
		volumes = []string{"/data", "/var/spool/", "/tmp", "/run/ociapp"}
		labels = map[string]string{LabelInstance: "someone-else", "com.example.owner": "attacker"}
	}
	return artifactInfo{
		Artifact: Artifact{
			Size:         int64(len(b)),
			Digest:       "sha256:" + name,
			ConfigDigest: "cfg-" + name,
			Name:         name,
			Version:      "1",
		},
		User:    user,
		Volumes: volumes,
		Labels:  labels,
		// Every copy has the same content, as with real files.
		fileDigest: "sha256:file-" + name,
		// Like the real archive, it reads the file it was verified from.
		archive: func(ctx context.Context, w io.Writer) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, "cfg-"+strings.TrimSpace(string(b)))
			return err
		},
	}, nil
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name+".ociapp") }

func (f *fixture) exec(ctx context.Context, name string, req map[string]any) (map[string]any, error) {
	return f.rt.Execute(ctx, f.path(name), req)
}

func (f *fixture) close() {
	f.t.Helper()
	if err := f.rt.Close(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func intp(i int) *int { return &i }

type engineSpec = engine.ContainerSpec
