// Package benchtest runs a Go benchmark's calls from concurrent callers
// and reports what docs/benchmarks.md reads of them.
package benchtest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/loadgen"
)

// RunConcurrent runs b.N calls of op from conc goroutines and reports the
// latency of one call (p50-µs, p99-µs), the throughput (req/s) and the CPU
// time per call (cpu-µs) of this process and of others: the processes or
// containers serving the calls (cpustat.Proc, cpustat.Container).
func RunConcurrent(b *testing.B, conc int, op func() error, others ...func() (time.Duration, error)) {
	b.Helper()
	latencies := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	cpu, err := cpustat.Start(others...)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := op(); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				latencies[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	spent, err := cpu.Stop()
	if err != nil {
		b.Fatal(err)
	}
	s := loadgen.Summarize(latencies)
	b.ReportMetric(float64(s.P50.Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(s.P99.Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(spent.Nanoseconds())/1e3/float64(b.N), "cpu-µs")
}
