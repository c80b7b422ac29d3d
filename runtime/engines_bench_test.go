package runtime

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/loadgen"
)

// Benchmarks on every engine of the end-to-end table, side by side:
//
//	go test ./runtime -run '^$' -bench 'Engine' -benchtime 10x
//
// Cold starts report the p50 of each phase in milliseconds.

// phaseEngine records when a cold start's engine calls begin and end.
type phaseEngine struct {
	engine.Engine
	mu                            sync.Mutex
	createStart, created, started time.Time
}

func (p *phaseEngine) mark(t *time.Time) {
	p.mu.Lock()
	*t = time.Now()
	p.mu.Unlock()
}

func (p *phaseEngine) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	p.mark(&p.createStart)
	id, err := p.Engine.CreateContainer(ctx, spec)
	p.mark(&p.created)
	return id, err
}

func (p *phaseEngine) StartContainer(ctx context.Context, id string) error {
	err := p.Engine.StartContainer(ctx, id)
	p.mark(&p.started)
	return err
}

// BenchmarkEngineColdStart measures a new runtime's first request with the
// image present, in phases: "prepare" (verify the artifact file, find the
// image), "create" (the engine's create call: on Kubernetes the pod's POST),
// "start" (until the engine reports the container running: on Kubernetes a
// watch until the kubelet says so), "socket" (until the app's socket
// accepts a connection), "response" (the request).
func BenchmarkEngineColdStart(b *testing.B) {
	for _, te := range testEngines {
		for _, app := range []string{"echo-go", "echo-py"} {
			b.Run(te.name+"/"+app, func(b *testing.B) { benchEngineCold(b, te, app) })
		}
	}
}

func benchEngineCold(b *testing.B, te testEngine, app string) {
	eng := requireEngine(b, te)
	path := engineBenchArtifact(b, app)
	pe := &phaseEngine{Engine: eng}
	var ready time.Time
	realDial := protocolDialer()
	dial := func(ctx context.Context, socket string, caps capabilities) (session, error) {
		s, err := realDial(ctx, socket, caps)
		if err == nil {
			ready = time.Now() // the worker's goroutine; read after Execute returns
		}
		return s, err
	}
	// Load the image once, outside the measurement.
	rt := newRuntime(b, eng, quiet())
	if err := rt.Warm(b.Context(), path); err != nil {
		b.Fatal(err)
	}
	dir := testenv.ShortTempDir(b)
	phases := map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		rt, err := New(b.Context(), WithEngine(pe), WithStateDir(dir), quiet(), withDialer(dial))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		_, err = rt.Execute(b.Context(), path, map[string]any{"value": "hello"})
		end := time.Now()
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		pe.mu.Lock()
		for name, d := range map[string]time.Duration{
			"prepare":  pe.createStart.Sub(t0),
			"create":   pe.created.Sub(pe.createStart),
			"start":    pe.started.Sub(pe.created),
			"socket":   ready.Sub(pe.started),
			"response": end.Sub(ready),
			"total":    end.Sub(t0),
		} {
			phases[name] = append(phases[name], d)
		}
		pe.mu.Unlock()
		if err := rt.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	for name, ds := range phases {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1e3, name+"-ms")
	}
}

// BenchmarkEngineImageImport measures the engine's LoadImage of an
// artifact, streamed from the file. On Kubernetes the image is removed from
// the node's containerd first, so each import writes and unpacks it; on the
// shared Docker daemon, whose images other processes use, it stays, and the
// load reads the archive and skips the layers it has.
func BenchmarkEngineImageImport(b *testing.B) {
	for _, te := range testEngines {
		for _, app := range []string{"echo-go", "echo-py"} {
			b.Run(te.name+"/"+app, func(b *testing.B) {
				eng := requireEngine(b, te)
				path := engineBenchArtifact(b, app)
				info, err := openArtifactFile(b.Context(), path, "")
				if err != nil {
					b.Fatal(err)
				}
				var lat []time.Duration
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					if te.name == "kubernetes" {
						te.removeImage(b, eng, info.Digest)
					}
					b.StartTimer()
					t0 := time.Now()
					pr, pw := io.Pipe()
					go func() { pw.CloseWithError(info.archive(b.Context(), pw)) }()
					_, err := eng.LoadImage(b.Context(), pr)
					_ = pr.CloseWithError(io.ErrClosedPipe)
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50-ms")
			})
		}
	}
}

// BenchmarkEngineExecuteWarm is BenchmarkExecuteWarm on every engine: the
// data path (a Unix socket per container) is the same.
func BenchmarkEngineExecuteWarm(b *testing.B) {
	for _, te := range testEngines {
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/echo-go/c%d", te.name, conc), func(b *testing.B) {
				benchWarmOn(b, requireEngine(b, te), testArtifact(b, "echo-go"), conc, map[string]any{"value": "hello"})
			})
		}
	}
}

// engineBenchArtifact is a Go test app's artifact, or for a name ending in
// "-py" a Python one's, built with Docker for every engine.
func engineBenchArtifact(b *testing.B, app string) string {
	if strings.HasSuffix(app, "-py") {
		return pythonArtifact(b, dockertest.Engine(b), app)
	}
	return testArtifact(b, app)
}

// BenchmarkEngineCancel measures, for an artifact that declares the cancel
// capability, the time from a caller cancelling its request to the handler
// in the container seeing its context end (the app records the moment; the
// container shares the host's clock): p50 and p99 of b.N cancellations.
//
//	go test ./runtime -run '^$' -bench EngineCancel -benchtime 200x
func BenchmarkEngineCancel(b *testing.B) {
	for _, te := range testEngines {
		for _, app := range []string{"capable", "capable-py"} {
			b.Run(te.name+"/"+app, func(b *testing.B) {
				path := engineBenchArtifact(b, app)
				rt := newRuntime(b, requireEngine(b, te), WithRequestTimeout(time.Minute))
				n := func(op string) int64 {
					resp, err := rt.Execute(b.Context(), path, map[string]any{"op": op})
					if err != nil {
						b.Fatal(err)
					}
					return resp["n"].(int64)
				}
				before := n("cancelled")
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for range b.N {
					ctx, cancel := context.WithCancel(b.Context())
					done := make(chan struct{})
					go func() {
						defer close(done)
						_, _ = rt.Execute(ctx, path, map[string]any{"op": "block"})
					}()
					time.Sleep(2 * time.Millisecond) // the request is sent
					at := time.Now()
					cancel()
					<-done
					before++
					for n("cancelled") < before {
					}
					lat = append(lat, time.Duration(n("cancelled_at")-at.UnixNano()))
				}
				b.StopTimer()
				s := loadgen.Summarize(lat)
				b.ReportMetric(float64(s.P50.Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(s.P99.Nanoseconds())/1e3, "p99-µs")
			})
		}
	}
}

// BenchmarkEngineStream measures a stream's throughput from a warm
// container, for each SDK's stream test app: one stream of b.N items of
// the given pad size, taken as fast as they come. It reports items per
// second and the CPU time per item of this process (the runtime and the
// consumer) and of the container (from its cgroup).
//
//	go test ./runtime -run '^$' -bench EngineStream -benchtime 20000x
func BenchmarkEngineStream(b *testing.B) {
	for _, te := range testEngines {
		for _, app := range []string{"streamer", "streamer-py"} {
			for _, size := range []int{16, 4096} {
				b.Run(fmt.Sprintf("%s/%s/%dB", te.name, app, size), func(b *testing.B) {
					path := engineBenchArtifact(b, app)
					eng := requireEngine(b, te)
					rt := newRuntime(b, eng, WithMaxContainers(1))
					if err := rt.Warm(b.Context(), path); err != nil {
						b.Fatal(err)
					}
					container := containerCPU(b, rt, eng)
					request, err := EncodeRequest(map[string]any{"count": b.N, "size": size})
					if err != nil {
						b.Fatal(err)
					}
					cpuBefore, containerBefore := cpustat.Process(), container()
					b.ResetTimer()
					start, n := time.Now(), 0
					for _, err := range rt.StreamPayload(b.Context(), path, request) {
						if err != nil {
							b.Fatal(err)
						}
						n++
					}
					elapsed := time.Since(start)
					b.StopTimer()
					if n != b.N {
						b.Fatalf("%d items, want %d", n, b.N)
					}
					b.ReportMetric(float64(n)/elapsed.Seconds(), "items/s")
					b.ReportMetric(float64((cpustat.Process()-cpuBefore).Microseconds())/float64(n), "caller-cpu-µs/item")
					b.ReportMetric(float64((container()-containerBefore).Microseconds())/float64(n), "container-cpu-µs/item")
				})
			}
		}
	}
}

// containerCPU returns a reader of the CPU time of rt's one container,
// from its cgroup.
func containerCPU(b *testing.B, rt *Runtime, eng engine.Engine) func() time.Duration {
	list, err := eng.ListContainers(b.Context(), map[string]string{LabelInstance: rt.inst.id})
	if err != nil || len(list) != 1 {
		b.Fatalf("containers %v, %v", list, err)
	}
	id := list[0].ID
	if ider, ok := eng.(engine.CgroupIDer); ok {
		if id, err = ider.CgroupID(b.Context(), id); err != nil {
			b.Fatal(err)
		}
	}
	path, err := cpustat.ContainerCgroup(cpustat.CgroupRoot, id)
	if err != nil {
		b.Fatal(err)
	}
	return func() time.Duration {
		used, err := cpustat.ReadCgroup(path)
		if err != nil {
			b.Fatal(err)
		}
		return used
	}
}
