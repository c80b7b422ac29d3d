package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type kindError struct{ kind string }

func (e *kindError) Error() string { return "failed: " + e.kind }

func TestRunCountsEveryRequest(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(t.Context(), Config{Concurrency: 8, Requests: 1000}, func(context.Context) error {
		n := calls.Add(1)
		switch {
		case n%10 == 0:
			return &kindError{"ten"}
		case n%7 == 0:
			return &kindError{"seven"}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1000 {
		t.Errorf("op called %d times, want 1000", calls.Load())
	}
	// 100 multiples of 10; multiples of 7 but not of 70: 142 - 14 = 128.
	if res.Succeeded != 772 || res.Failed != 228 {
		t.Errorf("succeeded %d, failed %d; want 772, 228", res.Succeeded, res.Failed)
	}
	if res.Latency.Count != 772 || !res.Latency.Exact {
		t.Errorf("latency count %d exact %v, want 772 exact", res.Latency.Count, res.Latency.Exact)
	}
	if len(res.Errors) != 1 || res.Errors[0].Type != "*loadgen.kindError" || res.Errors[0].Count != 228 {
		t.Errorf("errors = %+v, want one kind counted 228 times under the default classifier", res.Errors)
	}
	if res.Interrupted {
		t.Error("run reported interrupted")
	}
}

func TestRunClassifiesErrors(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(t.Context(), Config{
		Concurrency: 3,
		Requests:    300,
		Classify: func(err error) string {
			var ke *kindError
			if errors.As(err, &ke) {
				return ke.kind
			}
			return "other"
		},
	}, func(context.Context) error {
		switch calls.Add(1) % 6 {
		case 0:
			return &kindError{"b"}
		case 1, 2:
			return fmt.Errorf("wrapped: %w", &kindError{"a"})
		case 3:
			return errors.New("plain")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []ErrorCount{
		{Type: "a", Count: 100, Example: "wrapped: failed: a"},
		{Type: "b", Count: 50, Example: "failed: b"},
		{Type: "other", Count: 50, Example: "plain"},
	}
	if fmt.Sprint(res.Errors) != fmt.Sprint(want) {
		t.Errorf("errors\n got %+v\nwant %+v (most frequent first, then by name)", res.Errors, want)
	}
	if res.Succeeded != 100 || res.Failed != 200 {
		t.Errorf("succeeded %d, failed %d; want 100, 200", res.Succeeded, res.Failed)
	}
}

func TestRunKeepsConcurrency(t *testing.T) {
	for _, conc := range []int{0, 1, 5, 32} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			var inFlight, peak atomic.Int64
			_, err := Run(t.Context(), Config{Concurrency: conc, Requests: 400}, func(context.Context) error {
				n := inFlight.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				inFlight.Add(-1)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := int64(max(conc, 1))
			if peak.Load() != want {
				t.Errorf("peak in flight %d, want %d", peak.Load(), want)
			}
		})
	}
}

func TestRunMeasuresLatency(t *testing.T) {
	for _, cfg := range []Config{
		{Concurrency: 4, Requests: 200},
		{Concurrency: 4, Duration: 150 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("requests=%d,duration=%v", cfg.Requests, cfg.Duration), func(t *testing.T) {
			const pause = 2 * time.Millisecond
			res, err := Run(t.Context(), cfg, func(context.Context) error {
				time.Sleep(pause)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			l := res.Latency
			if l.Exact != (cfg.Requests > 0) {
				t.Errorf("exact = %v with %+v", l.Exact, cfg)
			}
			if l.Count != res.Succeeded || l.Count == 0 {
				t.Errorf("latency count %d, succeeded %d", l.Count, res.Succeeded)
			}
			if l.Min < pause || l.P50 < l.Min || l.P90 < l.P50 || l.P99 < l.P90 || l.Max < l.P99 || l.Mean < l.Min || l.Mean > l.Max {
				t.Errorf("latencies out of order or below the %v each request sleeps: %+v", pause, l)
			}
			// Four workers each doing requests of at least 2 ms cannot beat
			// 2000 req/s.
			if tp := res.Throughput(); tp <= 0 || tp > 4/pause.Seconds() {
				t.Errorf("throughput %.0f req/s, impossible with 4 workers of %v requests", tp, pause)
			}
			if cfg.Duration > 0 && (res.Elapsed < cfg.Duration || res.Elapsed > cfg.Duration+time.Second) {
				t.Errorf("elapsed %v for a %v run", res.Elapsed, cfg.Duration)
			}
		})
	}
}

func TestRunInterrupted(t *testing.T) {
	for _, cfg := range []Config{
		{Concurrency: 4, Requests: 1 << 20},
		{Concurrency: 4, Duration: time.Hour},
	} {
		t.Run(fmt.Sprintf("requests=%d,duration=%v", cfg.Requests, cfg.Duration), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var calls atomic.Int64
			res, err := Run(ctx, cfg, func(ctx context.Context) error {
				if calls.Add(1) == 100 {
					cancel()
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Microsecond):
					return nil
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Interrupted {
				t.Error("interrupted run not reported as such")
			}
			if res.Failed != 0 || len(res.Errors) != 0 {
				t.Errorf("requests ended by the interruption were counted as failures: %+v", res.Errors)
			}
			if res.Succeeded < 90 || res.Succeeded > 100 {
				t.Errorf("succeeded %d, want the ~99 requests before the interruption", res.Succeeded)
			}
		})
	}
}

func TestRunReportsProgress(t *testing.T) {
	var (
		mu     sync.Mutex
		events []Progress
		ended  atomic.Bool
	)
	var calls atomic.Int64
	res, err := Run(t.Context(), Config{
		Concurrency:      2,
		Duration:         120 * time.Millisecond,
		ProgressInterval: 10 * time.Millisecond,
		Progress: func(p Progress) {
			if ended.Load() {
				t.Error("progress reported after Run returned")
			}
			mu.Lock()
			events = append(events, p)
			mu.Unlock()
		},
	}, func(context.Context) error {
		time.Sleep(time.Millisecond)
		if calls.Add(1)%4 == 0 {
			return errors.New("every fourth fails")
		}
		return nil
	})
	ended.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) < 5 {
		t.Fatalf("%d progress events in 120 ms at 10 ms intervals", len(events))
	}
	for i, e := range events {
		if e.Done > res.Succeeded+res.Failed || e.Failed > e.Done || e.Rate < 0 {
			t.Errorf("event %d inconsistent: %+v (final %d done)", i, e, res.Succeeded+res.Failed)
		}
		if i > 0 && (e.Done < events[i-1].Done || e.Elapsed <= events[i-1].Elapsed) {
			t.Errorf("event %d goes backwards: %+v after %+v", i, e, events[i-1])
		}
	}
	last := events[len(events)-1]
	if last.Failed == 0 || last.Rate == 0 {
		t.Errorf("last event %+v shows no failures or no rate", last)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "give a request count or a duration"},
		{Config{Requests: 1, Duration: time.Second}, "not both"},
		{Config{Requests: -1}, "must not be negative"},
		{Config{Duration: -time.Second}, "must not be negative"},
		{Config{Requests: 1, Concurrency: -2}, "concurrency"},
		{Config{Requests: 1, ProgressInterval: -1}, "progress interval"},
	}
	for _, tt := range tests {
		_, err := Run(t.Context(), tt.cfg, func(context.Context) error {
			t.Error("op called for an invalid config")
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) error = %v, want one containing %q", tt.cfg, err, tt.want)
		}
	}
}
