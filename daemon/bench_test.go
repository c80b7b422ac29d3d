package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

// BenchmarkRemoteOverhead measures the same echo app through the in-process
// runtime; through a daemon on a Unix socket in this process, over its
// execute channel ("daemon") and its HTTP API ("daemon-http"); and through
// a daemon in a process of its own ("daemon-process"), as one is deployed,
// with 1 and 64 callers. It reports the median and 99th percentile
// latency, the throughput and this process's CPU time per request (both
// ends of the channel for "daemon" and "daemon-http", the client's alone
// for "daemon-process"), the containers' (ctr-cpu-µs) and that of the
// daemon's own process (daemon-cpu-µs); docs/daemon.md has figures.
//
//	go test -run '^$' -bench RemoteOverhead -benchtime 20000x ./daemon/
func BenchmarkRemoteOverhead(b *testing.B) {
	eng := dockertest.Engine(b)
	app := testApps(b).App
	ctx := context.Background()
	payload, err := protocol.EncodePayload(map[string]any{"value": "benchmark"})
	if err != nil {
		b.Fatal(err)
	}

	dir := testenv.ShortTempDir(b)
	rt, err := runtime.New(ctx, runtime.WithEngine(eng), runtime.WithStateDir(filepath.Join(dir, "local")))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close(ctx)

	sock := filepath.Join(dir, "d.sock")
	dctx, stop := context.WithCancel(ctx)
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- daemon.Run(dctx, eng, daemon.WithListen("unix://"+sock), daemon.WithStateDir(filepath.Join(dir, "daemon")), daemon.WithReady(func(net.Addr) { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ex.Close()
	// The HTTP API, as before the execute channel, for comparison.
	exHTTP, err := remote.New("unix://"+sock, remote.WithHTTPExecute(), remote.WithUploads())
	if err != nil {
		b.Fatal(err)
	}
	defer exHTTP.Close()
	// A daemon in a process of its own, as one is deployed: the hop
	// between client and daemon then crosses processes, and each end
	// sleeps and wakes as a process.
	childSock := filepath.Join(dir, "child.sock")
	childDaemon := startChild(b, "", childConfig{Listen: "unix://" + childSock, StateDir: filepath.Join(dir, "child"), DefaultRuntime: true})
	exProcess, err := remote.New("unix://" + childSock)
	if err != nil {
		b.Fatal(err)
	}
	defer exProcess.Close()

	for _, target := range []struct {
		name   string
		ex     runtime.Executor
		daemon int // the daemon's process, when not this one
	}{{"in-process", rt, 0}, {"daemon", ex, 0}, {"daemon-http", exHTTP, 0}, {"daemon-process", exProcess, childDaemon.cmd.Process.Pid}} {
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/c%d", target.name, callers), func(b *testing.B) {
				// Warm up: containers started, connections open, pools at
				// the size this concurrency needs.
				measure(b, target.ex, app, payload, callers, 20*callers)
				var daemonCPU func() (time.Duration, error)
				if target.daemon != 0 {
					daemonCPU = cpustat.Proc(target.daemon)
				}
				b.ResetTimer()
				start, cpu, ctr, dmn := time.Now(), cpustat.Process(), containersCPU(b, eng), cpuOf(b, daemonCPU)
				lat := measure(b, target.ex, app, payload, callers, b.N)
				elapsed, spent := time.Since(start), cpustat.Process()-cpu
				ctrAfter, dmnAfter := containersCPU(b, eng), cpuOf(b, daemonCPU)
				b.StopTimer()
				perRequest := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(len(lat)) }
				if ctr != nil && ctrAfter != nil {
					var ctrSpent time.Duration
					for id, t := range ctrAfter {
						ctrSpent += t - ctr[id] // a container started meanwhile counts whole
					}
					b.ReportMetric(perRequest(ctrSpent), "ctr-cpu-µs")
				}
				if daemonCPU != nil {
					b.ReportMetric(perRequest(dmnAfter-dmn), "daemon-cpu-µs")
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
				b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
				b.ReportMetric(perRequest(spent), "cpu-µs")
			})
		}
	}
}

// cpuOf reads the CPU time of source; nil reads 0.
func cpuOf(b *testing.B, source func() (time.Duration, error)) time.Duration {
	if source == nil {
		return 0
	}
	t, err := source()
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// containersCPU returns the CPU time of every running container of a
// runtime, by ID, whichever runtime started it: only the one measured is
// busy. It returns nil when a container's cgroup is not on this host (the
// engine runs elsewhere, or names its cgroups otherwise).
func containersCPU(b *testing.B, eng engine.Engine) map[string]time.Duration {
	list, err := eng.ListContainers(context.Background(), map[string]string{runtime.LabelManaged: "1"})
	if err != nil {
		b.Fatal(err)
	}
	cpu := make(map[string]time.Duration, len(list))
	for _, c := range list {
		if c.State != "running" {
			continue
		}
		src, err := cpustat.Container(c.ID)
		if errors.Is(err, cpustat.ErrNoCgroup) {
			return nil
		}
		if err != nil {
			b.Fatal(err)
		}
		cpu[c.ID] = cpuOf(b, src)
	}
	return cpu
}

// measure runs n requests from callers goroutines and returns their
// latencies.
func measure(b *testing.B, ex runtime.Executor, app string, payload []byte, callers, n int) []time.Duration {
	lat := make([]time.Duration, n)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n {
					return
				}
				t := time.Now()
				if _, err := ex.ExecutePayload(context.Background(), app, payload); err != nil {
					b.Error(err)
					return
				}
				lat[k] = time.Since(t)
			}
		})
	}
	wg.Wait()
	return lat
}
