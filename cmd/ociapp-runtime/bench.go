package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	goruntime "runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/loadgen"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

const benchUsage = `usage: ociapp-runtime bench ARTIFACT [flags]

Measures an artifact under load: the artifact's verification and image load,
warm latency percentiles (p50, p90, p99, max) and throughput at a given
concurrency, failures by type, cold starts, and the containers used.

With -n every latency is kept and percentiles are exact; with -d they come
from a log-linear histogram and are within 0.4%. Requests are encoded once;
their latency is the runtime's ExecutePayload call. On a terminal a progress
line is drawn on stderr.

Exit status: 0 when the benchmark ran, 1 when it could not run or every
request (or a cold start) failed, 2 for bad usage, 130 when interrupted.

flags:
`

// benchConfig is the parsed command line of bench.
type benchConfig struct {
	artifact             string
	payloadJSON          string
	payload              []byte
	concurrency          int
	requests             int
	duration             time.Duration
	warmup               int
	cold                 int
	json                 bool
	maxContainers        int
	containerConcurrency int
	requestTimeout       time.Duration
	busyPoll             time.Duration
	cpus                 float64
	memoryText           string
	memory               int64
	engine               engineFlags
	stateDir             string
	verbose              bool
}

const (
	defaultBenchRequests = 10000
	defaultBenchWarmup   = 1000
)

// parseBenchArgs parses bench's arguments; flags may come before or after
// the artifact; getenv reads the environment. It returns flag.ErrHelp for -h.
func parseBenchArgs(args []string, usageOut io.Writer, getenv func(string) string) (benchConfig, error) {
	cfg := benchConfig{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(usageOut, benchUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.payloadJSON, "payload", "{}", "the request, a JSON `object`")
	fs.IntVar(&cfg.concurrency, "c", 1, "requests in flight at once (concurrent callers)")
	fs.IntVar(&cfg.requests, "n", defaultBenchRequests, "requests to measure; 0 measures only the artifact and cold starts")
	fs.DurationVar(&cfg.duration, "d", 0, "measure for this long instead of a request count (e.g. 30s)")
	fs.IntVar(&cfg.warmup, "warmup", defaultBenchWarmup, "unmeasured requests first, at the same concurrency (lets the pool scale out)")
	fs.IntVar(&cfg.cold, "cold", 0, "cold starts to measure: each a new runtime's first request")
	fs.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout")
	fs.IntVar(&cfg.maxContainers, "max-containers", 0, "containers per artifact at most (default: the runtime's, one per CPU)")
	fs.IntVar(&cfg.containerConcurrency, "container-concurrency", 0, "requests in flight per container at most (default: the runtime's)")
	fs.DurationVar(&cfg.requestTimeout, "request-timeout", 0, "timeout of each request (default: the runtime's)")
	fs.DurationVar(&cfg.busyPoll, "busy-poll", protocol.DefaultBusyPoll, "how long to poll a container's connection for a response before sleeping (0: never poll)")
	fs.Float64Var(&cfg.cpus, "cpus", 0, "container CPU limit in CPUs (0: none)")
	fs.StringVar(&cfg.memoryText, "memory", "1g", `container memory limit, e.g. 512m or 2g; "0" for none`)
	cfg.engine.register(fs, getenv)
	fs.StringVar(&cfg.stateDir, "state-dir", "", "directory for runtime state and sockets (default: the runtime's)")
	fs.BoolVar(&cfg.verbose, "v", false, "log what the runtime does to standard error")

	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return cfg, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch {
	case len(positional) == 0:
		return cfg, errors.New("missing the artifact to benchmark (a .ociapp file)")
	case len(positional) > 1:
		return cfg, fmt.Errorf("one artifact at a time, got %d: %s", len(positional), strings.Join(positional, " "))
	case set["n"] && set["d"]:
		return cfg, errors.New("give -n (a request count) or -d (a duration), not both")
	case cfg.concurrency < 1:
		return cfg, fmt.Errorf("-c must be at least 1, got %d", cfg.concurrency)
	case cfg.requests < 0:
		return cfg, fmt.Errorf("-n must not be negative, got %d", cfg.requests)
	case set["d"] && cfg.duration <= 0:
		return cfg, fmt.Errorf("-d must be positive, got %v", cfg.duration)
	case cfg.warmup < 0:
		return cfg, fmt.Errorf("--warmup must not be negative, got %d", cfg.warmup)
	case cfg.engine.check() != nil:
		return cfg, cfg.engine.check()
	case cfg.cold < 0:
		return cfg, fmt.Errorf("--cold must not be negative, got %d", cfg.cold)
	case cfg.maxContainers < 0, cfg.containerConcurrency < 0, cfg.requestTimeout < 0, cfg.busyPoll < 0, cfg.cpus < 0:
		return cfg, errors.New("--max-containers, --container-concurrency, --request-timeout, --busy-poll and --cpus must not be negative")
	}
	cfg.artifact = positional[0]
	if set["d"] {
		cfg.requests = 0
	}
	request, err := parseRequest(cfg.payloadJSON)
	if err != nil {
		return cfg, fmt.Errorf("--payload: %w", err)
	}
	if cfg.payload, err = protocol.EncodePayload(request); err != nil {
		return cfg, fmt.Errorf("--payload: %w", err)
	}
	if cfg.memory, err = parseSize(cfg.memoryText); err != nil {
		return cfg, fmt.Errorf("--memory: %w", err)
	}
	return cfg, nil
}

// runBench is the bench command.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseBenchArgs(args, stderr, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ociapp-runtime bench: %v\nrun 'ociapp-runtime bench -h' for usage\n", err)
		return exitUsage
	}
	b := &bencher{cfg: cfg, status: newStatusLine(stderr), cgroupRoot: cpustat.CgroupRoot}
	if cfg.verbose {
		b.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	rep, err := b.run(ctx)
	b.status.clear()
	if err != nil {
		fmt.Fprintf(stderr, "ociapp-runtime bench: %v\n", err)
		if ctx.Err() != nil {
			return exitBenchInterrupted
		}
		return exitBenchFailed
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "ociapp-runtime bench: writing the report: %v\n", err)
			return exitBenchFailed
		}
	} else {
		writeBenchText(stdout, rep)
	}
	switch {
	case rep.Interrupted:
		return exitBenchInterrupted
	case rep.Run != nil && rep.Run.Succeeded == 0 && rep.Run.Failed > 0,
		rep.ColdStart != nil && rep.ColdStart.Failed > 0:
		return exitBenchFailed
	}
	return exitOK
}

// Exit statuses of bench besides exitOK and exitUsage.
const (
	exitBenchFailed      = 1   // could not run, or every request or a cold start failed
	exitBenchInterrupted = 130 // stopped by SIGINT or SIGTERM
)

// benchReport is what bench prints; with --json, exactly this shape.
type benchReport struct {
	Artifact   artifactReport  `json:"artifact"`
	Settings   benchSettings   `json:"settings"`
	Run        *runReport      `json:"run,omitempty"`
	ColdStart  *coldReport     `json:"cold_start,omitempty"`
	Containers containerReport `json:"containers"`
	// Interrupted: the run was stopped (Ctrl-C); the figures cover what ran.
	Interrupted bool `json:"interrupted,omitempty"`
}

type artifactReport struct {
	Path         string `json:"path"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	Digest       string `json:"digest"`
	ConfigDigest string `json:"config_digest"`
	SizeBytes    int64  `json:"size_bytes"`
	// VerifyMS is reading the file and checking every blob's digest.
	VerifyMS float64 `json:"verify_ms"`
	// CheckMS is asking the engine whether it has the image.
	CheckMS float64 `json:"check_ms"`
	// ImagePresent says the engine already had the image; otherwise LoadMS
	// is the time it took to load it.
	ImagePresent bool    `json:"image_present"`
	LoadMS       float64 `json:"load_ms,omitempty"`
}

type benchSettings struct {
	Concurrency          int     `json:"concurrency"`
	Requests             int     `json:"requests,omitempty"`
	DurationS            float64 `json:"duration_s,omitempty"`
	Warmup               int     `json:"warmup"`
	Cold                 int     `json:"cold"`
	PayloadBytes         int     `json:"payload_bytes"`
	MaxContainers        int     `json:"max_containers,omitempty"`
	ContainerConcurrency int     `json:"container_concurrency,omitempty"`
}

type runReport struct {
	Succeeded     int64         `json:"succeeded"`
	Failed        int64         `json:"failed"`
	ElapsedS      float64       `json:"elapsed_s"`
	ThroughputRPS float64       `json:"throughput_rps"`
	LatencyUS     latencyReport `json:"latency_us"`
	// CPU is the CPU time used over the measured run, per request.
	CPU    *cpuReport    `json:"cpu,omitempty"`
	Errors []errorReport `json:"errors"`
}

type latencyReport struct {
	// Recording is "exact" (every latency kept) or "histogram" (within
	// MaxErrorPct percent).
	Recording   string  `json:"recording"`
	MaxErrorPct float64 `json:"max_error_pct"`
	Count       int64   `json:"count"`
	Min         float64 `json:"min"`
	Mean        float64 `json:"mean"`
	P50         float64 `json:"p50"`
	P90         float64 `json:"p90"`
	P99         float64 `json:"p99"`
	Max         float64 `json:"max"`
}

type errorReport struct {
	Type    string `json:"type"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type coldReport struct {
	SamplesMS []float64     `json:"samples_ms"`
	MinMS     float64       `json:"min_ms"`
	P50MS     float64       `json:"p50_ms"`
	MaxMS     float64       `json:"max_ms"`
	Failed    int           `json:"failed"`
	Errors    []errorReport `json:"errors,omitempty"`
}

type containerReport struct {
	// Started counts containers the measured runtime started (warm-up
	// included; cold-start runtimes excluded).
	Started uint64 `json:"started"`
	// Peak is the most containers seen ready at once.
	Peak int `json:"peak"`
	// Max is the runtime's limit per artifact.
	Max int `json:"max"`
}

// bencher runs one benchmark.
type bencher struct {
	cfg    benchConfig
	status *statusLine
	eng    engine.Engine
	logger *slog.Logger // nil: the runtime's silent default
	// cgroupRoot is where containers' CPU time is read (cpu.go).
	cgroupRoot string
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
		MaxContainers:        cfg.maxContainers,
		ContainerConcurrency: cfg.containerConcurrency,
	}}
	if rep.Settings.MaxContainers == 0 {
		rep.Settings.MaxContainers = defaultMaxContainers()
	}
	rep.Containers.Max = rep.Settings.MaxContainers

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

	b.status.show("verifying the artifact")
	if rep.Artifact, err = measureArtifact(ctx, eng, cfg.artifact, b.status); err != nil {
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
	opts := []runtime.Option{
		runtime.WithEngine(eng),
		runtime.WithMemoryLimit(b.cfg.memory),
		runtime.WithCPULimit(b.cfg.cpus),
		runtime.WithBusyPoll(b.cfg.busyPoll),
	}
	if b.cfg.stateDir != "" {
		opts = append(opts, runtime.WithStateDir(b.cfg.stateDir))
	}
	if b.logger != nil {
		opts = append(opts, runtime.WithLogger(b.logger))
	}
	if b.cfg.maxContainers > 0 {
		opts = append(opts, runtime.WithMaxContainers(b.cfg.maxContainers))
	}
	if b.cfg.containerConcurrency > 0 {
		opts = append(opts, runtime.WithContainerConcurrency(b.cfg.containerConcurrency))
	}
	if b.cfg.requestTimeout > 0 {
		opts = append(opts, runtime.WithRequestTimeout(b.cfg.requestTimeout))
	}
	return opts
}

// defaultMaxContainers is the runtime's default limit (one container per
// CPU, see runtime.WithMaxContainers), for the report.
func defaultMaxContainers() int { return max(1, goruntime.NumCPU()) }

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
	op := func(ctx context.Context) error {
		_, err := rt.ExecutePayload(ctx, cfg.artifact, cfg.payload)
		return err
	}
	peek := func() {
		n := 0
		for _, p := range rt.Stats().Pools {
			n += p.Containers
		}
		containers.Peak = max(containers.Peak, n)
	}
	peek()
	if cfg.warmup > 0 {
		_, err := loadgen.Run(ctx, loadgen.Config{
			Concurrency: cfg.concurrency,
			Requests:    cfg.warmup,
			Classify:    errorType,
			Progress: func(p loadgen.Progress) {
				peek()
				b.status.progress("warm-up", p, cfg.warmup, containers.Peak)
			},
		}, op)
		if err != nil {
			return nil, err
		}
		if err := b.awaitStarts(ctx, rt); err != nil {
			return nil, err
		}
	}
	cpu := startCPU(b.cgroupRoot, created)
	res, err := loadgen.Run(ctx, loadgen.Config{
		Concurrency: cfg.concurrency,
		Requests:    cfg.requests,
		Duration:    cfg.duration,
		Classify:    errorType,
		Progress: func(p loadgen.Progress) {
			peek()
			b.status.progress("measuring", p, cfg.requests, containers.Peak)
		},
	}, op)
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

func newRunReport(res loadgen.Result) *runReport {
	l := res.Latency
	recording := "histogram"
	if l.Exact {
		recording = "exact"
	}
	return &runReport{
		Succeeded:     res.Succeeded,
		Failed:        res.Failed,
		ElapsedS:      res.Elapsed.Seconds(),
		ThroughputRPS: res.Throughput(),
		LatencyUS: latencyReport{
			Recording:   recording,
			MaxErrorPct: 100 * l.RelError,
			Count:       l.Count,
			Min:         us(l.Min),
			Mean:        us(l.Mean),
			P50:         us(l.P50),
			P90:         us(l.P90),
			P99:         us(l.P99),
			Max:         us(l.Max),
		},
		Errors: errorReports(res.Errors),
	}
}

func errorReports(ecs []loadgen.ErrorCount) []errorReport {
	out := make([]errorReport, 0, len(ecs))
	for _, ec := range ecs {
		out = append(out, errorReport{Type: ec.Type, Count: ec.Count, Example: ec.Example})
	}
	return out
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

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
// first container: verify the file, look for its image in the engine (by
// config digest, then manifest digest, as image stores differ), and load
// it when absent.
func measureArtifact(ctx context.Context, eng engine.Engine, path string, status *statusLine) (artifactReport, error) {
	start := time.Now()
	a, err := artifact.Open(ctx, path)
	if err != nil {
		return artifactReport{}, fmt.Errorf("opening the artifact: %w", err)
	}
	rep := artifactReport{
		Path:         path,
		Name:         a.Metadata.Name,
		Version:      a.Metadata.Version,
		Digest:       a.Digest.String(),
		ConfigDigest: a.ConfigDigest.String(),
		SizeBytes:    a.Size,
		VerifyMS:     ms(time.Since(start)),
	}
	start = time.Now()
	for _, id := range []string{rep.ConfigDigest, rep.Digest} {
		ok, err := eng.ImageExists(ctx, id)
		if err != nil {
			return rep, fmt.Errorf("looking for the artifact's image: %w", err)
		}
		if ok {
			rep.ImagePresent = true
			break
		}
	}
	rep.CheckMS = ms(time.Since(start))
	if rep.ImagePresent {
		return rep, nil
	}

	status.show("loading the image")
	start = time.Now()
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := a.WriteDockerArchive(ctx, pw)
		pw.CloseWithError(err)
		written <- err
	}()
	_, err = eng.LoadImage(ctx, pr)
	// Unblock the writer if the engine stopped reading early.
	_ = pr.CloseWithError(errors.New("the engine stopped reading the archive"))
	werr := <-written
	if err != nil {
		return rep, fmt.Errorf("loading the artifact's image: %w", err)
	}
	if werr != nil {
		return rep, fmt.Errorf("writing the artifact's image: %w", werr)
	}
	rep.LoadMS = ms(time.Since(start))
	return rep, nil
}

// errorType names the kind of a failed request after the runtime's typed
// errors; application errors carry the application's own type.
func errorType(err error) string {
	var (
		appErr      *runtime.AppError
		timeoutErr  *runtime.RequestTimeoutError
		overloadErr *runtime.OverloadedError
		crashErr    *runtime.WorkerCrashError
		startErr    *runtime.StartupError
		artErr      *runtime.ArtifactError
		engErr      *runtime.EngineUnavailableError
		payloadErr  *protocol.PayloadError
	)
	switch {
	case errors.As(err, &appErr):
		return "app:" + appErr.Type
	case errors.As(err, &timeoutErr):
		return "timeout"
	case errors.As(err, &overloadErr):
		return "overloaded"
	case errors.As(err, &crashErr):
		return "worker_crash"
	case errors.As(err, &startErr):
		return "startup"
	case errors.As(err, &artErr):
		return "artifact"
	case errors.As(err, &engErr):
		return "engine_unavailable"
	case errors.As(err, &payloadErr):
		return "payload"
	case errors.Is(err, runtime.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

// statusLine redraws one line of progress on a terminal and does nothing
// otherwise.
type statusLine struct {
	w     io.Writer // nil when not a terminal
	width int       // the terminal's columns; 0 when unknown
	len   int
}

func newStatusLine(w io.Writer) *statusLine {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		width, _, _ := term.GetSize(int(f.Fd()))
		return &statusLine{w: w, width: width}
	}
	return &statusLine{}
}

func (s *statusLine) show(text string) {
	if s.w == nil {
		return
	}
	// A line that wraps cannot be redrawn with a carriage return.
	if s.width > 1 && len(text) >= s.width {
		text = text[:s.width-1]
	}
	pad := max(s.len-len(text), 0)
	fmt.Fprintf(s.w, "\r%s%s", text, strings.Repeat(" ", pad))
	s.len = len(text)
}

func (s *statusLine) progress(phase string, p loadgen.Progress, total, containers int) {
	if s.w == nil {
		return
	}
	done := fmt.Sprint(p.Done)
	if total > 0 {
		done = fmt.Sprintf("%d/%d", p.Done, total)
	}
	s.show(fmt.Sprintf("%s: %s requests, %.0f req/s, %d errors, %d containers, %.1fs",
		phase, done, p.Rate, p.Failed, containers, p.Elapsed.Seconds()))
}

func (s *statusLine) clear() {
	if s.w == nil || s.len == 0 {
		return
	}
	fmt.Fprintf(s.w, "\r%s\r", strings.Repeat(" ", s.len))
	s.len = 0
}

// writeBenchText prints the report for people.
func writeBenchText(w io.Writer, rep *benchReport) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	a := rep.Artifact
	name := strings.TrimSpace(a.Name + " " + a.Version)
	fmt.Fprintf(tw, "artifact\t%s (%s, %s)\n", name, shortDigest(a.Digest), bytesize.Format(a.SizeBytes))
	fmt.Fprintf(tw, "  verify\t%s\n", fmtMS(a.VerifyMS))
	if a.ImagePresent {
		fmt.Fprintf(tw, "  image\talready loaded (checked in %s)\n", fmtMS(a.CheckMS))
	} else {
		fmt.Fprintf(tw, "  image\tloaded in %s (checked in %s)\n", fmtMS(a.LoadMS), fmtMS(a.CheckMS))
	}
	s := rep.Settings
	if r := rep.Run; r != nil {
		what := fmt.Sprintf("%d requests", s.Requests)
		if s.DurationS > 0 {
			what = time.Duration(s.DurationS * float64(time.Second)).String()
		}
		warm := "no warm-up"
		if s.Warmup > 0 {
			warm = fmt.Sprintf("after %d warm-up requests", s.Warmup)
		}
		fmt.Fprintf(tw, "run\t%s at concurrency %d, %s, %d-byte payload\n", what, s.Concurrency, warm, s.PayloadBytes)
		fmt.Fprintf(tw, "  requests\t%d succeeded, %d failed in %.3f s\n", r.Succeeded, r.Failed, r.ElapsedS)
		fmt.Fprintf(tw, "  throughput\t%.0f req/s\n", r.ThroughputRPS)
		l := r.LatencyUS
		if l.Count > 0 {
			fmt.Fprintf(tw, "  latency\tp50 %s  p90 %s  p99 %s  max %s\n", fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.Max))
			how := "exact"
			if l.Recording != "exact" {
				how = fmt.Sprintf("histogram, within %.1f%%", l.MaxErrorPct)
			}
			fmt.Fprintf(tw, "  \tmin %s  mean %s  (%s, %d requests)\n", fmtUS(l.Min), fmtUS(l.Mean), how, l.Count)
		}
		if c := r.CPU; c != nil {
			containers := "containers: " + c.ContainersUnavailable
			if c.ContainersUSPerRequest != nil {
				containers = fmt.Sprintf("%s in the containers (%d, from their cgroups)", fmtUS(*c.ContainersUSPerRequest), c.Containers)
			}
			fmt.Fprintf(tw, "  cpu\tper request: %s in this process, %s\n", fmtUS(c.CallerUSPerRequest), containers)
		}
		if len(r.Errors) == 0 {
			fmt.Fprintf(tw, "  errors\tnone\n")
		}
		for i, e := range r.Errors {
			label := ""
			if i == 0 {
				label = "errors"
			}
			fmt.Fprintf(tw, "  %s\t%d %s: %s\n", label, e.Count, e.Type, firstLine(e.Example))
		}
	}
	if rep.Run != nil || rep.Containers.Started > 0 {
		fmt.Fprintf(tw, "containers\t%d started, at most %d ready at once (limit %d)\n", rep.Containers.Started, rep.Containers.Peak, rep.Containers.Max)
	}
	if c := rep.ColdStart; c != nil {
		if n := len(c.SamplesMS); n > 0 {
			fmt.Fprintf(tw, "cold start\tmin %s  p50 %s  max %s  (%d runs)\n", fmtMS(c.MinMS), fmtMS(c.P50MS), fmtMS(c.MaxMS), n)
		} else {
			fmt.Fprintf(tw, "cold start\tno run succeeded\n")
		}
		for _, e := range c.Errors {
			fmt.Fprintf(tw, "  failed\t%d %s: %s\n", e.Count, e.Type, firstLine(e.Example))
		}
	}
	if rep.Interrupted {
		fmt.Fprintf(tw, "interrupted\tthe figures cover the part that ran\n")
	}
	tw.Flush()
	_, _ = w.Write(buf.Bytes())
}

func shortDigest(d string) string {
	if hex, ok := strings.CutPrefix(d, "sha256:"); ok && len(hex) > 12 {
		return "sha256:" + hex[:12]
	}
	return d
}

// fmtUS formats microseconds in the unit that suits them.
func fmtUS(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2f ms", v/1e3)
	}
	return fmt.Sprintf("%.1f µs", v)
}

func fmtMS(v float64) string { return fmtUS(v * 1e3) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
