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
	"syscall"
	"time"

	"github.com/ociapp/ociapp/jsonpayload"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

const runUsage = `usage: ociapp-runtime run [flags] ARTIFACT [JSON | -]

Executes one request against the application in ARTIFACT and prints its
response as JSON. An application that streams its responses has its items
printed as they arrive, one JSON line each (one JSON value each with
--pretty). The request is the JSON object given as an argument, read from
standard input when it is "-", or {} when omitted.

Exit status: 0 success, 1 application error (its error is printed as JSON),
2 bad usage or request, 3 request timeout, 4 container startup failure,
5 artifact unusable or engine unreachable, 6 container crashed, 7 other.

flags:
`

func runRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, runUsage)
		fs.PrintDefaults()
	}
	var rf runtimeFlags
	rf.register(fs, "timeout", "startup-timeout", "memory", "cpus", "network", "allow-root", "state-dir")
	var ef engineFlags
	ef.register(fs, os.Getenv)
	pretty := fs.Bool("pretty", false, "indent the JSON output")
	verbose := fs.Bool("v", false, "log what the runtime does to standard error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return exitUsage
	}
	artifactPath := fs.Arg(0)
	input := "{}"
	if fs.NArg() == 2 {
		input = fs.Arg(1)
	}
	if input == "-" {
		b, err := readAll(ctx, stdin)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "ociapp-runtime: interrupted while reading the request")
			return exitOther
		}
		if err != nil {
			fmt.Fprintln(stderr, "ociapp-runtime: reading the request:", err)
			return exitUsage
		}
		input = string(b)
	}
	request, err := jsonpayload.FromJSON([]byte(input), 0)
	if err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime:", err)
		return exitUsage
	}
	opts, err := rf.options()
	if err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime:", err)
		return exitUsage
	}
	opts = append(opts,
		// One request needs one container.
		runtime.WithMaxContainers(1),
		// The image stays for the next run, as after docker run.
		runtime.WithKeepImages(true),
	)
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := ef.check(); err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime:", err)
		return exitUsage
	}
	eng, err := ef.open(ctx, logger)
	if err != nil {
		return fail(stderr, ef.kind, err)
	}
	defer eng.Close()
	opts = append(opts, runtime.WithEngine(eng), runtime.WithLogger(logger))
	rt, err := runtime.New(ctx, opts...)
	if err != nil {
		return fail(stderr, ef.kind, err)
	}
	// Each item is printed as it arrives; a reader of standard output that
	// stops reading holds the application.
	var execErr, writeErr error
	for item, err := range rt.StreamPayload(ctx, artifactPath, request) {
		if err != nil {
			execErr = err
			break
		}
		if writeErr = writeJSON(stdout, item, *pretty); writeErr != nil {
			break
		}
	}
	// Stop the container even when interrupted, within the shutdown timeout.
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtime.DefaultShutdownTimeout+5*time.Second)
	defer cancel()
	if err := rt.Close(closeCtx); err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime:", err)
	}
	if execErr != nil {
		var appErr *runtime.AppError
		if errors.As(execErr, &appErr) {
			if b, err := protocol.EncodePayload(map[string]any{"error_type": appErr.Type, "message": appErr.Message, "details": appErr.Details}); err == nil {
				_ = writeJSON(stdout, b, *pretty)
			}
		}
		return fail(stderr, ef.kind, execErr)
	}
	switch {
	case errors.Is(writeErr, syscall.EPIPE):
		// The reader took what it wanted (run ... | head): the handler
		// was cancelled and the container stopped.
		return exitOK
	case writeErr != nil:
		fmt.Fprintln(stderr, "ociapp-runtime: writing the response:", writeErr)
		return exitOther
	}
	return exitOK
}

// readAll reads r to its end, or until ctx ends; a read that does not
// return is left to end with the process.
func readAll(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		return res.b, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// writeJSON prints a msgpack payload as JSON (package jsonpayload, as the
// daemon's JSON API writes it), indented when pretty.
func writeJSON(w io.Writer, payload []byte, pretty bool) error {
	b, err := jsonpayload.ToJSON(payload)
	if err != nil {
		return err
	}
	if pretty {
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return err
		}
		b = buf.Bytes()
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
