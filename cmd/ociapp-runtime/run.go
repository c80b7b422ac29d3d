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
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// Exit statuses of ociapp-runtime run.
const (
	exitOK          = 0
	exitAppError    = 1 // the application returned an error
	exitUsage       = 2 // bad flags, arguments or request JSON
	exitTimeout     = 3 // the request timed out
	exitStartup     = 4 // the container failed to start
	exitUnavailable = 5 // the artifact cannot be used or the engine cannot be reached
	exitCrash       = 6 // the container crashed while serving the request
	exitOther       = 7 // anything else (overloaded, interrupted, ...)
)

const runUsage = `usage: ociapp-runtime run [flags] ARTIFACT [JSON | -]

Executes one request against the application in ARTIFACT and prints its
response as JSON. The request is the JSON object given as an argument, read
from standard input when it is "-", or {} when omitted.

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
	request, err := parseRequest(input)
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
	resp, execErr := rt.Execute(ctx, artifactPath, request)
	// Stop the container even when interrupted, within the shutdown timeout.
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtime.DefaultShutdownTimeout+5*time.Second)
	defer cancel()
	if err := rt.Close(closeCtx); err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime:", err)
	}
	if execErr != nil {
		var appErr *runtime.AppError
		if errors.As(execErr, &appErr) {
			_ = writeJSON(stdout, map[string]any{"error_type": appErr.Type, "message": appErr.Message, "details": appErr.Details}, *pretty)
		}
		return fail(stderr, ef.kind, execErr)
	}
	if err := writeJSON(stdout, resp, *pretty); err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime: writing the response:", err)
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

// fail reports err and returns its exit status.
func fail(stderr io.Writer, engineKind string, err error) int {
	printError(stderr, "ociapp-runtime", engineKind, err)
	return exitCode(err)
}

// exitCode maps an error to the documented exit statuses.
func exitCode(err error) int {
	var (
		appErr     *runtime.AppError
		timeoutErr *runtime.RequestTimeoutError
		startErr   *runtime.StartupError
		artErr     *runtime.ArtifactError
		engErr     *runtime.EngineUnavailableError
		crashErr   *runtime.WorkerCrashError
		payloadErr *protocol.PayloadError
		configErr  *runtime.ConfigError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &appErr):
		return exitAppError
	case errors.As(err, &timeoutErr):
		return exitTimeout
	case errors.As(err, &startErr):
		return exitStartup
	case errors.As(err, &crashErr):
		return exitCrash
	case errors.As(err, &artErr), errors.As(err, &engErr):
		return exitUnavailable
	case errors.As(err, &payloadErr), errors.As(err, &configErr):
		return exitUsage
	}
	return exitOther
}

// parseRequest decodes a JSON object, keeping integers integers: msgpack
// distinguishes them from floats, and applications validate the difference.
func parseRequest(text string) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the request is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("the request has trailing data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the request must be a JSON object, not %s", jsonKind(v))
	}
	return convertNumbers(m).(map[string]any), nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}

// convertNumbers replaces json.Numbers by int64, uint64 or float64.
func convertNumbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = convertNumbers(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = convertNumbers(e)
		}
		return v
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return u
		}
		f, _ := strconv.ParseFloat(string(v), 64) // valid JSON numbers parse (or round to ±Inf)
		return f
	}
	return v
}

// writeJSON prints a response. Floats keep a decimal point so they stay
// floats; values JSON cannot hold become strings: non-finite floats, and
// the keys of maps with non-string keys.
func writeJSON(w io.Writer, v any, pretty bool) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if pretty {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(jsonable(v)); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonable(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonable(e)
		}
		return out
	case float64:
		return jsonFloat(v, 64)
	case float32:
		return jsonFloat(float64(v), 32)
	}
	return v
}

// jsonFloat prints a float so that it reads back as a float: 1.0, not 1.
func jsonFloat(f float64, bits int) any {
	s := strconv.FormatFloat(f, 'g', -1, bits)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return s
	}
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return json.Number(s)
}
