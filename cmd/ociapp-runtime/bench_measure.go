package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/loadgen"
	"github.com/ociapp/ociapp/runtime"
)

// bencher runs one benchmark.
type bencher struct {
	cfg    benchConfig
	status *statusLine
	eng    engine.Engine
	logger *slog.Logger // nil: the runtime's silent default
	// settings are the runtime options of the command line.
	settings []runtime.Option
}

func (b *bencher) run(ctx context.Context) (*benchReport, error) {
	cfg := b.cfg
	rep := &benchReport{Settings: benchSettings{
		Concurrency:          cfg.concurrency,
		Requests:             cfg.requests,
		DurationS:            cfg.duration.Seconds(),
		Warmup:               cfg.warmup,
		Cold:                 cfg.cold,
		PayloadBytes:         len(cfg.payload),
		MaxContainers:        cfg.runtime.maxContainers,
		ContainerConcurrency: cfg.runtime.containerConcurrency,
	}}
	rep.Containers.Max = rep.Settings.MaxContainers
	settings, err := cfg.runtime.options()
	if err != nil {
		return nil, err
	}
	b.settings = settings

	logger := b.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	eng, err := cfg.engine.open(ctx, logger)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	b.eng = eng

	b.status.show("verifying the artifact, and loading its image if the engine lacks it")
	if rep.Artifact, err = b.measureArtifact(ctx); err != nil {
		return nil, err
	}
	if cfg.requests > 0 || cfg.duration > 0 {
		if rep.Run, err = b.measureRun(ctx, &rep.Containers); err != nil {
			return nil, err
		}
	}
	if ctx.Err() == nil && cfg.cold > 0 {
		if rep.ColdStart, err = b.measureCold(ctx); err != nil {
			return nil, err
		}
	}
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// runtimeOptions are the options of every runtime bench starts.
func (b *bencher) runtimeOptions(eng engine.Engine) []runtime.Option {
	opts := append([]runtime.Option{runtime.WithEngine(eng)}, b.settings...)
	if b.logger != nil {
		opts = append(opts, runtime.WithLogger(b.logger))
	}
	return opts
}

// closeRuntimeTimeout bounds closing a runtime after the benchmark.
const closeRuntimeTimeout = time.Minute

// closeRuntime closes rt even when ctx has ended: the containers must go.
func closeRuntime(ctx context.Context, rt *runtime.Runtime) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeRuntimeTimeout)
	defer cancel()
	return rt.Close(cctx)
}

func (b *bencher) measureRun(ctx context.Context, containers *containerReport) (_ *runReport, err error) {
	cfg := b.cfg
	eng, created := recordContainers(b.eng)
	rt, err := runtime.New(ctx, b.runtimeOptions(eng)...)
	if err != nil {
		return nil, fmt.Errorf("starting the runtime: %w", err)
	}
	defer func() {
		if cerr := closeRuntime(ctx, rt); cerr != nil && err == nil {
			err = fmt.Errorf("closing the runtime: %w", cerr)
		}
	}()

	b.status.show("starting a container")
	if err := rt.Warm(ctx, cfg.artifact); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("starting the first container: %w", err)
	}
	peek := func() {
		n := 0
		for _, p := range rt.Stats().Pools {
			n += p.Containers
		}
		containers.Peak = max(containers.Peak, n)
	}
	peek()
	// load sends requests (or, with none, requests for duration) at the
	// command line's concurrency, showing phase on the status line.
	load := func(phase string, requests int, duration time.Duration) (loadgen.Result, error) {
		return loadgen.Run(ctx, loadgen.Config{
			Concurrency: cfg.concurrency,
			Requests:    requests,
			Duration:    duration,
			Classify:    errorType,
			Progress: func(p loadgen.Progress) {
				peek()
				b.status.progress(phase, p, requests, containers.Peak)
			},
		}, func(ctx context.Context) error {
			_, err := rt.ExecutePayload(ctx, cfg.artifact, cfg.payload)
			return err
		})
	}
	if cfg.warmup > 0 {
		if _, err := load("warm-up", cfg.warmup, 0); err != nil {
			return nil, err
		}
		if err := b.awaitStarts(ctx, rt); err != nil {
			return nil, err
		}
	}
	cpu := startCPU(cgroupCPU(ctx, cpustat.CgroupRoot, b.eng), created)
	res, err := load("measuring", cfg.requests, cfg.duration)
	if err != nil {
		return nil, err
	}
	run := newRunReport(res)
	run.CPU = cpu.stop(res.Succeeded + res.Failed)
	peek()
	containers.Started = rt.Stats().ColdStarts
	return run, nil
}

// awaitStarts waits until no container of the pool is starting, so that
// containers the warm-up asked for serve the whole measured run instead of
// joining halfway. Each start ends within the runtime's startup timeout.
func (b *bencher) awaitStarts(ctx context.Context, rt *runtime.Runtime) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		starting := 0
		for _, p := range rt.Stats().Pools {
			starting += p.Starting
		}
		if starting == 0 {
			return nil
		}
		b.status.show(fmt.Sprintf("waiting for %d more containers to start", starting))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// measureCold times, cfg.cold times, a new runtime's first request: it
// verifies the artifact file, finds the image present, starts a container,
// connects and gets the response. An application error is a response too.
func (b *bencher) measureCold(ctx context.Context) (*coldReport, error) {
	rep := &coldReport{SamplesMS: []float64{}}
	var samples []time.Duration
	errs := map[string]*loadgen.ErrorCount{}
	var order []string
	for i := range b.cfg.cold {
		b.status.show(fmt.Sprintf("cold start %d/%d", i+1, b.cfg.cold))
		d, err := b.coldOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			rep.Failed++
			key := errorType(err)
			if ec := errs[key]; ec != nil {
				ec.Count++
			} else {
				errs[key] = &loadgen.ErrorCount{Type: key, Count: 1, Example: err.Error()}
				order = append(order, key)
			}
			continue
		}
		samples = append(samples, d)
		rep.SamplesMS = append(rep.SamplesMS, ms(d))
	}
	for _, k := range order {
		rep.Errors = append(rep.Errors, errorReport{Type: k, Count: errs[k].Count, Example: errs[k].Example})
	}
	s := loadgen.Summarize(samples)
	rep.MinMS, rep.P50MS, rep.MaxMS = ms(s.Min), ms(s.P50), ms(s.Max)
	return rep, nil
}

func (b *bencher) coldOnce(ctx context.Context) (_ time.Duration, err error) {
	rt, err := runtime.New(ctx, b.runtimeOptions(b.eng)...)
	if err != nil {
		return 0, fmt.Errorf("starting a runtime: %w", err)
	}
	defer func() {
		if cerr := closeRuntime(ctx, rt); cerr != nil && err == nil {
			err = fmt.Errorf("closing the runtime: %w", cerr)
		}
	}()
	start := time.Now()
	_, err = rt.ExecutePayload(ctx, b.cfg.artifact, b.cfg.payload)
	d := time.Since(start)
	var appErr *runtime.AppError
	if err != nil && !errors.As(err, &appErr) {
		return 0, err
	}
	return d, nil
}

// measureArtifact times what a runtime does with an artifact before its
// first container (runtime.Prepare): verify the file, look for its image in
// the engine and load it when absent. The image stays in the engine for
// the measured runtimes.
func (b *bencher) measureArtifact(ctx context.Context) (_ artifactReport, err error) {
	rt, err := runtime.New(ctx, append(b.runtimeOptions(b.eng), runtime.WithKeepImages(true))...)
	if err != nil {
		return artifactReport{}, fmt.Errorf("starting the runtime: %w", err)
	}
	defer func() { err = errors.Join(err, closeRuntime(ctx, rt)) }()
	p, err := rt.Prepare(ctx, b.cfg.artifact)
	if err != nil {
		return artifactReport{}, err
	}
	rep := artifactReport{
		Path:         p.Artifact.Path,
		Name:         p.Artifact.Name,
		Version:      p.Artifact.Version,
		Digest:       p.Artifact.Digest,
		ConfigDigest: p.Artifact.ConfigDigest,
		SizeBytes:    p.Artifact.Size,
		VerifyMS:     ms(p.Verify + p.User),
		CheckMS:      ms(p.Check),
		ImagePresent: p.ImagePresent,
	}
	if !p.ImagePresent {
		rep.LoadMS = ms(p.Load)
	}
	return rep, nil
}

// errorType names the kind of a failed request (runtime.Kind);
// application errors carry the application's own type.
func errorType(err error) string {
	kind := runtime.Classify(err)
	var appErr *runtime.AppError
	if kind == runtime.KindApp && errors.As(err, &appErr) {
		return "app:" + appErr.Type
	}
	return kind.String()
}
