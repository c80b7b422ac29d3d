// Package loadgen sends requests from concurrent workers and measures their latency and throughput.
package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultProgressInterval is how often Run reports progress when
// Config.ProgressInterval is zero.
const DefaultProgressInterval = 200 * time.Millisecond

// Config describes a run. Exactly one of Requests and Duration must be set.
type Config struct {
	// Concurrency is the number of workers, each with one request in
	// flight at a time; zero means 1.
	Concurrency int
	// Requests is the total number of requests to send. Every latency is
	// kept, so the percentiles are exact; memory grows with Requests.
	Requests int
	// Duration is how long to keep sending; requests in flight when it
	// ends still complete and count. Latencies go into a histogram of
	// bounded size, so percentiles are within Summary.RelError.
	Duration time.Duration
	// Classify names the kind of a failed request, the key under which it
	// is counted. The default is the error's Go type.
	Classify func(error) string
	// Progress, when set, receives an event every ProgressInterval from a
	// goroutine Run owns; Run returns only after its last call.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed time.Duration
	Done    int64   // requests completed, failed ones included
	Failed  int64   // requests failed
	Rate    float64 // requests completed per second since the previous event
}

// Result is what a run measured.
type Result struct {
	Succeeded, Failed int64
	// Elapsed runs from the first request sent to the last one completed.
	Elapsed time.Duration
	// Latency summarizes the requests that succeeded.
	Latency Summary
	// Errors counts failed requests by kind, most frequent first.
	Errors []ErrorCount
	// Interrupted reports that the context ended the run early; requests
	// failed by its end are not counted.
	Interrupted bool
}

// Throughput is the rate of successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Succeeded) / r.Elapsed.Seconds()
}

// ErrorCount is how often one kind of failure occurred, with the message
// of one occurrence.
type ErrorCount struct {
	Type    string
	Count   int64
	Example string
}

// Run sends requests by calling op from cfg.Concurrency workers until
// cfg.Requests have completed or cfg.Duration has passed, or ctx ends.
// An error from op counts as a failed request; Run's own error is only
// for an invalid Config.
func Run(ctx context.Context, cfg Config, op func(context.Context) error) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	conc := max(cfg.Concurrency, 1)
	classify := cfg.Classify
	if classify == nil {
		classify = func(err error) string { return fmt.Sprintf("%T", err) }
	}

	var (
		issued, done, failed atomic.Int64
		// exact mode: every successful latency at an index claimed from
		// kept; duration mode: one histogram per worker.
		lat   []time.Duration
		kept  atomic.Int64
		hists []*histogram
	)
	if cfg.Requests > 0 {
		lat = make([]time.Duration, cfg.Requests)
	} else {
		hists = make([]*histogram, conc)
		for i := range hists {
			hists[i] = new(histogram)
		}
	}
	errs := make([]map[string]*ErrorCount, conc)

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if cfg.Requests > 0 {
			return issued.Add(1) <= int64(cfg.Requests)
		}
		return time.Now().Before(deadline)
	}

	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for more() {
				t0 := time.Now()
				err := op(ctx)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return // failed by the interruption, not by the target
					}
					failed.Add(1)
					done.Add(1)
					if errs[w] == nil {
						errs[w] = make(map[string]*ErrorCount)
					}
					key := classify(err)
					if ec := errs[w][key]; ec != nil {
						ec.Count++
					} else {
						errs[w][key] = &ErrorCount{Type: key, Count: 1, Example: err.Error()}
					}
					continue
				}
				if lat != nil {
					lat[kept.Add(1)-1] = d
				} else {
					hists[w].record(d)
				}
				done.Add(1)
			}
		})
	}

	stopProgress := func() {}
	if cfg.Progress != nil {
		stopProgress = reportProgress(cfg, start, &done, &failed)
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	res := Result{
		Succeeded:   done.Load() - failed.Load(),
		Failed:      failed.Load(),
		Elapsed:     elapsed,
		Errors:      mergeErrors(errs),
		Interrupted: ctx.Err() != nil,
	}
	if lat != nil {
		res.Latency = Summarize(lat[:kept.Load()])
	} else {
		for _, h := range hists[1:] {
			hists[0].merge(h)
		}
		res.Latency = hists[0].summary()
	}
	return res, nil
}

func (cfg Config) validate() error {
	switch {
	case cfg.Concurrency < 0:
		return fmt.Errorf("concurrency must not be negative, got %d", cfg.Concurrency)
	case cfg.Requests < 0:
		return fmt.Errorf("request count must not be negative, got %d", cfg.Requests)
	case cfg.Duration < 0:
		return fmt.Errorf("duration must not be negative, got %v", cfg.Duration)
	case cfg.Requests > 0 && cfg.Duration > 0:
		return errors.New("give a request count or a duration, not both")
	case cfg.Requests == 0 && cfg.Duration == 0:
		return errors.New("give a request count or a duration")
	case cfg.ProgressInterval < 0:
		return fmt.Errorf("progress interval must not be negative, got %v", cfg.ProgressInterval)
	}
	return nil
}

// reportProgress calls cfg.Progress every interval until the returned
// function is called; that function returns once the goroutine is gone.
func reportProgress(cfg Config, start time.Time, done, failed *atomic.Int64) func() {
	interval := cmp.Or(cfg.ProgressInterval, DefaultProgressInterval)
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		var lastDone int64
		last := start
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				d := done.Load()
				p := Progress{Elapsed: now.Sub(start), Done: d, Failed: failed.Load()}
				if dt := now.Sub(last).Seconds(); dt > 0 {
					p.Rate = float64(d-lastDone) / dt
				}
				lastDone, last = d, now
				cfg.Progress(p)
			}
		}
	}()
	return func() {
		close(stop)
		<-finished
	}
}

func mergeErrors(perWorker []map[string]*ErrorCount) []ErrorCount {
	byType := make(map[string]*ErrorCount)
	var out []ErrorCount
	for _, m := range perWorker {
		for k, ec := range m {
			if have := byType[k]; have != nil {
				have.Count += ec.Count
				continue
			}
			c := *ec
			byType[k] = &c
		}
	}
	for _, ec := range byType {
		out = append(out, *ec)
	}
	slices.SortFunc(out, func(a, b ErrorCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Type, b.Type))
	})
	return out
}
