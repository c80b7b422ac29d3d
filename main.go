package ociapp

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	goruntime "runtime"
	"syscall"

	"github.com/ociapp/ociapp/protocol"
)

// DefaultServeProcs is how many threads run an application's Go code at
// once under serve (GOMAXPROCS). The runtime scales an application by its
// containers, one per CPU, and each container's server answers a small
// request faster on one thread: a request that wakes the process then
// runs where it woke, where with more threads it often wakes a second one
// (on a loaded 2-CPU machine, the echo's p50 at c1 was 32 µs on one thread
// against 52-57 µs on two; docs/protocol.md).
const DefaultServeProcs = 1

// Main runs an application binary's command line and exits:
//
//	APP serve [--socket PATH] [--max-frame-size N] [--grace DURATION] [--busy-poll DURATION] [--procs N]
//	APP schema
//
// serve listens on protocol.DefaultSocketPath unless told otherwise, and
// drains and exits 0 on SIGTERM or SIGINT. schema prints the request and
// response JSON Schemas as {"request": ..., "response": ...}.
func Main[Req, Resp any](app Application[Req, Resp]) {
	os.Exit(Run(context.Background(), NewHandler(app), os.Args[1:], os.Stdout, os.Stderr))
}

// MainStream is Main for a StreamApplication; its schema command prints
// the item's schema as the response's, and "stream": true.
func MainStream[Req, Item any](app StreamApplication[Req, Item]) {
	os.Exit(Run(context.Background(), NewStreamHandler(app), os.Args[1:], os.Stdout, os.Stderr))
}

// Run is Main without the exit, for tests and for binaries that add their
// own commands. It returns the exit status.
func Run(ctx context.Context, h Handler, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: APP serve [--socket PATH] | APP schema")
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, h, args[1:], stderr)
	case "schema":
		req, resp := h.Schemas()
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		doc := map[string]any{"request": req, "response": resp, "capabilities": capabilities()}
		if _, ok := h.(StreamHandler); ok {
			doc["stream"] = true
		}
		if err := enc.Encode(doc); err != nil {
			fmt.Fprintln(stderr, "writing schema:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q; commands: serve, schema\n", args[0])
	return 2
}

func runServe(ctx context.Context, h Handler, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", protocol.DefaultSocketPath, "Unix socket path to listen on")
	maxFrame := fs.Int("max-frame-size", protocol.DefaultMaxFrameSize, "largest request frame accepted, in bytes")
	grace := fs.Duration("grace", DefaultGracePeriod, "how long in-flight requests may finish after SIGTERM")
	busyPoll := fs.Duration("busy-poll", protocol.DefaultBusyPoll, "how long a connection is polled for its next request before sleeping (0: never poll)")
	procs := fs.Int("procs", DefaultServeProcs, "threads running Go code at once (GOMAXPROCS; 0: Go's default, one per CPU); the GOMAXPROCS environment variable, when set, wins")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *procs < 0 {
		fmt.Fprintln(stderr, "ociapp: --procs must not be negative")
		return 2
	}
	if *procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(*procs))
	}
	if *busyPoll < 0 {
		fmt.Fprintln(stderr, "ociapp: --busy-poll must not be negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &Server{
		Handler:      h,
		MaxFrameSize: *maxFrame,
		GracePeriod:  *grace,
		BusyPoll:     *busyPoll,
		Logger:       slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if err := srv.ListenAndServe(ctx, *socket); err != nil {
		fmt.Fprintln(stderr, "ociapp:", err)
		return 1
	}
	return 0
}
