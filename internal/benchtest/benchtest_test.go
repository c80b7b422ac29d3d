package benchtest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func BenchmarkRunConcurrent(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(strings.Repeat("c", conc), func(b *testing.B) {
			RunConcurrent(b, conc, func() error { time.Sleep(time.Microsecond); return nil })
		})
	}
}

func TestRunConcurrentReports(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) {
		RunConcurrent(b, 2, func() error { time.Sleep(100 * time.Microsecond); return nil })
	})
	for _, m := range []string{"p50-µs", "p99-µs", "req/s", "cpu-µs"} {
		if _, ok := res.Extra[m]; !ok {
			t.Errorf("no %s in %v", m, res.Extra)
		}
	}
	if p50 := res.Extra["p50-µs"]; p50 < 100 {
		t.Errorf("p50 %.1f µs for calls that sleep 100 µs", p50)
	}
	failed := testing.Benchmark(func(b *testing.B) {
		RunConcurrent(b, 2, func() error { return errors.New("boom") })
	})
	if failed.N != 0 {
		t.Errorf("a failing op reported %d calls", failed.N)
	}
}
