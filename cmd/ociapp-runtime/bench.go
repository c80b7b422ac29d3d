package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	b := &bencher{cfg: cfg, status: newStatusLine(stderr)}
	if cfg.verbose {
		b.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	rep, err := b.run(ctx)
	b.status.clear()
	if err != nil {
		printError(stderr, "ociapp-runtime bench", cfg.engine.kind, err)
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
