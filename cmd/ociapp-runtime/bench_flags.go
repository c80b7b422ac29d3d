package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ociapp/ociapp/jsonpayload"
)

// benchConfig is the parsed command line of bench.
type benchConfig struct {
	artifact    string
	payloadJSON string
	payload     []byte
	concurrency int
	requests    int
	duration    time.Duration
	warmup      int
	cold        int
	json        bool
	runtime     runtimeFlags
	engine      engineFlags
	verbose     bool
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
	cfg.runtime.register(fs, "max-containers", "container-concurrency", "request-timeout", "busy-poll", "cpus", "memory", "state-dir")
	cfg.engine.register(fs, getenv)
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
	}
	cfg.artifact = positional[0]
	if set["d"] {
		cfg.requests = 0
	}
	var err error
	if cfg.payload, err = jsonpayload.FromJSON([]byte(cfg.payloadJSON), 0); err != nil {
		return cfg, fmt.Errorf("--payload: %w", err)
	}
	if _, err := cfg.runtime.options(); err != nil {
		return cfg, err
	}
	return cfg, nil
}
