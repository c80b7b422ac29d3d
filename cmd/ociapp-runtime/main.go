// Command ociapp-runtime runs .ociapp artifacts from the command line.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/ociapp/ociapp/runtime"
)

const usage = `usage: ociapp-runtime <command> [arguments]

commands:
  run ARTIFACT [JSON | -]   execute one request and print the response as JSON
  inspect ARTIFACT          show an artifact's metadata
  bench ARTIFACT            measure an artifact's latency and throughput
  serve                     run the runtime as a daemon for other processes
  version                   print the version
  help                      show this help

Run "ociapp-runtime <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// The first signal cancels ctx and lets the command clean up; a second
	// one ends the process at once.
	context.AfterFunc(ctx, stop)
	// A reader of standard output that goes away (run ... | head) makes
	// writes fail with EPIPE rather than kill the process before it has
	// stopped its containers.
	signal.Ignore(syscall.SIGPIPE)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return interruptible(ctx, stdout, stderr, runCleanupGrace, func(stdout, stderr io.Writer) int {
			return runRun(ctx, args[1:], stdin, stdout, stderr)
		})
	case "inspect":
		return interruptible(ctx, stdout, stderr, 0, func(stdout, stderr io.Writer) int {
			return runInspect(ctx, args[1:], stdout, stderr)
		})
	case "bench":
		return interruptible(ctx, stdout, stderr, benchCleanupGrace, func(stdout, stderr io.Writer) int {
			return runBench(ctx, args[1:], stdout, stderr)
		})
	case "serve":
		// The daemon bounds its own shutdown (--drain-timeout, then
		// stopping its containers).
		return runServe(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "ociapp-runtime", version())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "ociapp-runtime: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// How long run and bench may take, once interrupted, to stop their
// containers and report.
const (
	runCleanupGrace   = runtime.DefaultShutdownTimeout + 10*time.Second
	benchCleanupGrace = closeRuntimeTimeout + 10*time.Second
)

// interruptible runs a command and returns its exit status; once ctx ends
// (SIGINT or SIGTERM), it waits at most grace for the command to finish
// before returning exitOther. The command sees ctx end and should stop at
// once; the grace covers its cleanup, and the limit covers a library call
// that does not honour ctx (its goroutine ends with the process, and
// writes nothing more).
func interruptible(ctx context.Context, stdout, stderr io.Writer, grace time.Duration, cmd func(stdout, stderr io.Writer) int) int {
	out, errOut := &gatedWriter{w: stdout}, &gatedWriter{w: stderr}
	done := make(chan int, 1)
	go func() { done <- cmd(out, errOut) }()
	select {
	case code := <-done:
		return code
	case <-ctx.Done():
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case code := <-done:
		return code
	case <-t.C:
		out.close()
		errOut.close()
		fmt.Fprintln(stderr, "ociapp-runtime: interrupted")
		return exitOther
	}
}

// gatedWriter passes writes on until it is closed, then drops them.
type gatedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(p), nil
	}
	return g.w.Write(p)
}

func (g *gatedWriter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// version is the module version the binary was built from, and its Go
// version.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	return v + " " + info.GoVersion
}
