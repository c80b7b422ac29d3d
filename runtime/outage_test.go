package runtime

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
)

// socketProxy forwards a Unix socket to the Docker daemon's, and can cut
// every connection and refuse new ones for a while: an engine outage that
// leaves the shared daemon (and the containers) running.
type socketProxy struct {
	path   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newSocketProxy(t *testing.T) *socketProxy {
	t.Helper()
	target := "/var/run/docker.sock"
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok {
		target = h
	} else if os.Getenv("DOCKER_HOST") != "" {
		t.Skip("the outage proxy needs a Docker daemon on a Unix socket")
	}
	p := &socketProxy{path: filepath.Join(testenv.ShortTempDir(t), "d.sock"), target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *socketProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// cut drops every connection and refuses new ones until restore.
func (p *socketProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *socketProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *socketProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// proxiedRuntime is a runtime whose engine reaches Docker through p.
func proxiedRuntime(t *testing.T, p *socketProxy, opts ...Option) *Runtime {
	t.Helper()
	dockertest.Engine(t)
	eng, err := docker.New(t.Context(), docker.WithHost("unix://"+p.path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]Option{WithEngine(eng), WithStateDir(testenv.ShortTempDir(t)), WithLogger(logger)}, opts...)
	rt, err := New(t.Context(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return rt
}

// Finding 5: while the engine's API was unreachable, healthy containers
// were declared crashed and every request failed.
func TestDockerEngineOutageUnderLoad(t *testing.T) {
	direct := dockertest.Engine(t)
	proxy := newSocketProxy(t)
	rt := proxiedRuntime(t, proxy, WithMinContainers(2), WithMaxContainers(2))
	echo := testArtifact(t, "echo-go")
	if err := rt.Warm(t.Context(), echo); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two warm containers", func() bool { return rt.Stats().Pools[0].Containers == 2 })

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := rt.Execute(t.Context(), echo, map[string]any{"value": "x"}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	proxy.cut()
	atCut := ok.Load()
	time.Sleep(4 * time.Second)
	duringCut := ok.Load() - atCut
	proxy.restore()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	t.Logf("%d requests served, %d during the 4 s outage, %d failed", ok.Load(), duringCut, failed.Load())
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d requests failed around the outage, the first: %v", n, *firstErr.Load())
	}
	if duringCut == 0 {
		t.Fatal("no request was served while the engine was away")
	}
	st := rt.Stats()
	if st.Failures.ContainerCrashes != 0 || st.ColdStarts != 2 || st.Pools[0].Containers != 2 {
		t.Fatalf("stats %+v: want the two containers kept, none declared crashed", st)
	}
	if n := containersOf(t, direct, rt); n != 2 {
		t.Fatalf("the engine has %d containers of the runtime, the pool 2", n)
	}
}

// Finding 5: removals that failed while the engine was away were
// forgotten, and their containers outlived the runtime.
func TestDockerEngineOutageLeaksNothing(t *testing.T) {
	direct := dockertest.Engine(t)
	proxy := newSocketProxy(t)
	rt := proxiedRuntime(t, proxy, WithIdleTimeout(time.Second), WithReaperInterval(100*time.Millisecond), WithShutdownTimeout(time.Second))
	sleeper := testArtifact(t, "sleeper")
	if err := rt.Warm(t.Context(), sleeper); err != nil {
		t.Fatal(err)
	}

	// The idle container is reaped while the engine is away: its removal
	// fails, and is done once the engine is back.
	proxy.cut()
	waitFor(t, 10*time.Second, "the idle container to be reaped", func() bool { return rt.Stats().Pools[0].Containers == 0 })
	time.Sleep(time.Second)
	if n := containersOf(t, direct, rt); n != 1 {
		t.Fatalf("%d containers in the engine during the outage, want the reaped one still there", n)
	}
	proxy.restore()
	waitFor(t, 15*time.Second, "the engine to agree with the pool", func() bool { return containersOf(t, direct, rt) == 0 })

	// Close while the engine is away: it waits for the engine and removes
	// everything.
	if _, err := rt.Execute(t.Context(), sleeper, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	id := rt.inst.id
	proxy.cut()
	closed := make(chan error, 1)
	go func() { closed <- rt.Close(context.Background()) }()
	time.Sleep(3 * time.Second)
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while the engine was away and a container remained", err)
	default:
	}
	proxy.restore()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return after the engine came back")
	}
	list, err := direct.ListContainers(t.Context(), map[string]string{LabelInstance: id})
	if err != nil || len(list) != 0 {
		t.Fatalf("containers left after Close: %v %v", list, err)
	}
	if !errors.Is(rt.Close(t.Context()), nil) {
		t.Fatal("second Close failed")
	}
}
