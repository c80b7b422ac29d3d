package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/benchtest"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
)

// Benchmarks against the local Docker daemon, image already loaded:
//
//	go test ./runtime -run '^$' -bench . -benchtime 20000x
//
// They report latency percentiles (µs) and throughput (req/s) as metrics.

func quiet() Option { return WithLogger(slog.New(slog.DiscardHandler)) }

// benchWarm runs b.N requests from conc goroutines against a warmed pool
// and reports p50/p99 latency and throughput.
func benchWarm(b *testing.B, app string, conc int, req map[string]any, opts ...Option) {
	eng := dockertest.Engine(b)
	benchWarmOn(b, eng, benchArtifact(b, eng, app), conc, req, opts...)
}

// benchWarmOn is benchWarm on any engine, for the artifact at path.
func benchWarmOn(b *testing.B, eng engine.Engine, path string, conc int, req map[string]any, opts ...Option) {
	rt := newRuntime(b, eng, append([]Option{quiet()}, opts...)...)
	// Warm every container the pool will use, then let it settle.
	var wg sync.WaitGroup
	for range conc * 4 {
		wg.Go(func() {
			if _, err := rt.Execute(b.Context(), path, req); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	for range 200 {
		if _, err := rt.Execute(b.Context(), path, req); err != nil {
			b.Fatal(err)
		}
	}
	benchtest.RunConcurrent(b, conc, func() error {
		_, err := rt.Execute(b.Context(), path, req)
		return err
	})
	b.ReportMetric(float64(rt.Stats().Pools[0].Containers), "containers")
}

// benchArtifact returns a Go test app's artifact, or a Python one's for
// names ending in "-py".
func benchArtifact(b *testing.B, eng *docker.Engine, app string) string {
	if strings.HasSuffix(app, "-py") {
		return pythonArtifact(b, eng, app)
	}
	return testArtifact(b, app)
}

func BenchmarkExecuteWarm(b *testing.B) {
	for _, app := range []string{"echo-go", "echo-py"} {
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/c%d", app, conc), func(b *testing.B) {
				benchWarm(b, app, conc, map[string]any{"value": "hello"})
			})
		}
	}
}

// BenchmarkColdStart measures a first request on a new runtime: container
// creation, start, readiness and the request, with the image already
// loaded. "verified" includes checking every digest of the artifact file,
// which a new runtime does once per file; "known" is a new container for
// an artifact the runtime has seen (after a crash, an idle reap, or scaling
// out).
func BenchmarkColdStart(b *testing.B) {
	for _, app := range []string{"echo-go", "echo-py"} {
		for _, verify := range []bool{true, false} {
			name := app + "/known"
			if verify {
				name = app + "/verified"
			}
			b.Run(name, func(b *testing.B) { benchCold(b, app, verify) })
		}
	}
}

func benchCold(b *testing.B, app string, verify bool) {
	eng := dockertest.Engine(b)
	path := benchArtifact(b, eng, app)
	dir := testenv.ShortTempDir(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		rt, err := New(b.Context(), WithEngine(eng), WithStateDir(dir), quiet())
		if err != nil {
			b.Fatal(err)
		}
		if !verify {
			if _, err := rt.resolver.resolve(b.Context(), path); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		t0 := time.Now()
		_, err = rt.Execute(b.Context(), path, map[string]any{"value": "hello"})
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if err := rt.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1e3, "max-ms")
}

// BenchmarkCPUBound measures single-threaded CPU-bound apps (a Python
// interpreter; a Go binary limited to one thread) under concurrency 8 with
// more containers allowed: throughput grows with them, up to the cores.
func BenchmarkCPUBound(b *testing.B) {
	for _, tc := range []struct {
		app        string
		iterations int
	}{{"cpu-py", 20_000}, {"cpuhog", 2_000_000}} {
		for _, n := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("%s/containers=%d", tc.app, n), func(b *testing.B) {
				benchWarm(b, tc.app, 8, map[string]any{"iterations": tc.iterations}, WithMaxContainers(n))
			})
		}
	}
}

// BenchmarkExecuteOverhead runs the runtime's request path against an
// in-process Go SDK server (a fake engine, the real protocol client), to
// separate the runtime's own cost from the container's.
func BenchmarkExecuteOverhead(b *testing.B) {
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			sock := filepath.Join(testenv.ShortTempDir(b), "app.sock")
			ln, err := ociapp.Listen(sock)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan struct{})
			go func() {
				defer close(served)
				h := ociapp.NewHandler[map[string]any, map[string]any](ociapp.Func[map[string]any, map[string]any](
					func(_ context.Context, req map[string]any) (map[string]any, error) { return req, nil }))
				_ = (&ociapp.Server{Handler: h, BusyPoll: protocol.DefaultBusyPoll}).Serve(ctx, ln)
			}()
			defer func() { cancel(); <-served }()
			f := newFixture(b, map[string]fakeApp{"echo": {}}, WithMaxContainers(1),
				withDialer(func(ctx context.Context, _ string, caps capabilities) (session, error) {
					return protocolDialer()(ctx, sock, caps)
				}))
			defer f.close()
			req := map[string]any{"value": "hello"}
			if _, err := f.exec(b.Context(), "echo", req); err != nil {
				b.Fatal(err)
			}
			benchtest.RunConcurrent(b, conc, func() error {
				_, err := f.exec(b.Context(), "echo", req)
				return err
			})
		})
	}
}
