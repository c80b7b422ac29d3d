package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/runtime"
)

const serveUsage = `usage: ociapp-runtime serve [flags]

Runs the runtime as a daemon that other processes, on this host or others,
use over HTTP: they upload artifacts (once per content digest) and execute
requests against them (API: docs/daemon.md).

It listens on a Unix socket (who may connect is decided by the socket's
mode, --socket-mode) or on TCP, where a bearer token is required and TLS
is available (--tls-cert, --tls-key). The token is read from --token-file
or from the OCIAPP_RUNTIME_TOKEN environment variable, never from the
command line, where other users could read it.

On SIGTERM or SIGINT it stops accepting connections, lets the requests in
flight finish (--drain-timeout) and stops its containers. Uploaded artifacts
stay in the state directory; a daemon started again on it keeps them and
removes the containers a crashed daemon left behind.

Unless the GOMAXPROCS environment variable says otherwise, its own Go code
runs on a quarter of the processors, at least one: its containers need the
rest (docs/daemon.md, Overhead).

Exit status: 0 after a clean shutdown, 1 when the daemon failed, 2 for bad
usage, 5 when the container engine cannot be reached.

flags:
`

// exitDaemonFailed is serve's status for a daemon that could not start or
// failed while serving.
const exitDaemonFailed = 1

// tokenEnv names the environment variable serve reads the token from.
const tokenEnv = "OCIAPP_RUNTIME_TOKEN"

// serveConfig is the parsed command line of serve.
type serveConfig struct {
	daemon           daemonFlags
	runtime          []runtime.Option
	tokenFile        string
	engine           engineFlags
	logLevel         slog.Level
	stopOnStdinClose bool
	// procs is the GOMAXPROCS to set (daemon.Procs), 0 to leave it: the
	// GOMAXPROCS environment variable sets it.
	procs int
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseServeArgs(args, stderr, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		if !errors.Is(err, errUsageShown) {
			fmt.Fprintln(stderr, "ociapp-runtime serve:", err)
		}
		return exitUsage
	}
	if cfg.procs > 0 {
		goruntime.GOMAXPROCS(cfg.procs)
	}
	if cfg.stopOnStdinClose {
		var cancel context.CancelFunc
		ctx, cancel = stopOnClose(ctx, os.Stdin)
		defer cancel()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	cfg.daemon.Logger = log
	// The address on stdout tells a wrapper where to connect, e.g. which
	// port tcp://HOST:0 got.
	cfg.daemon.Ready = func(addr net.Addr) { fmt.Fprintf(stdout, "listening on %s://%s\n", addr.Network(), addr) }
	eng, err := cfg.engine.open(ctx, log)
	if err != nil {
		printError(stderr, "ociapp-runtime serve", cfg.engine.kind, err)
		return exitCode(err)
	}
	defer eng.Close()
	if err := daemon.Run(ctx, eng, append(cfg.daemon.options(), daemon.WithRuntimeOptions(cfg.runtime...))...); err != nil {
		printError(stderr, "ociapp-runtime serve", cfg.engine.kind, err)
		var engErr *runtime.EngineUnavailableError
		if errors.As(err, &engErr) {
			return exitUnavailable
		}
		return exitDaemonFailed
	}
	return exitOK
}

// stopOnClose returns a context that ends with ctx or when r reaches its
// end (or fails). The reading goroutine ends with r: for standard input,
// when the parent closes it or the process exits.
func stopOnClose(ctx context.Context, r io.Reader) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, r)
		cancel()
	}()
	return ctx, cancel
}

// errUsageShown is a usage error the flag package has already reported.
var errUsageShown = errors.New("bad usage")

// parseServeArgs parses serve's flags; getenv reads the environment.
func parseServeArgs(args []string, usageOut io.Writer, getenv func(string) string) (serveConfig, error) {
	var cfg serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(usageOut, serveUsage)
		fs.PrintDefaults()
	}
	d := &cfg.daemon
	fs.StringVar(&d.Listen, "listen", daemon.DefaultListen(), "where to listen: unix:///PATH or tcp://HOST:PORT")
	fs.StringVar(&d.StateDir, "state-dir", daemon.DefaultStateDir(), "directory for uploaded artifacts (DIR/artifacts) and the runtime's sockets (DIR/rt)")
	fs.StringVar(&cfg.tokenFile, "token-file", "", "file holding the bearer token clients must send (default: $"+tokenEnv+"); required for TCP")
	fs.StringVar(&d.TLSCertFile, "tls-cert", "", "TLS certificate `file` (PEM); with --tls-key the listener speaks TLS")
	fs.StringVar(&d.TLSKeyFile, "tls-key", "", "TLS private key `file` (PEM)")
	socketMode := fs.String("socket-mode", fmt.Sprintf("%#o", daemon.DefaultSocketMode), "mode of the Unix socket, in octal (0660 lets the socket's group connect)")
	maxArtifact := fs.String("max-artifact-size", bytesize.Short(api.DefaultMaxArtifactSize), "largest artifact upload accepted, e.g. 512m or 4g")
	maxRequest := fs.String("max-request-size", strconv.FormatInt(api.DefaultMaxRequestSize, 10), "largest execute request body accepted, in bytes (16 MiB less 1 KiB, the most a frame to a container holds)")
	maxBodyMemory := fs.String("max-body-memory", bytesize.Short(daemon.DefaultMaxBodyMemory), "total size of execute request bodies held at once; a request that does not fit within a second is answered overloaded")
	fs.DurationVar(&d.BodyTimeout, "body-timeout", daemon.DefaultBodyTimeout, "how long a request body may take, beyond one second per --min-body-rate bytes")
	minBodyRate := fs.String("min-body-rate", bytesize.Short(daemon.DefaultMinBodyRate), "slowest average rate, in bytes per second, a request body may arrive at once --body-timeout has passed (0: no rate)")
	storeQuota := fs.String("store-quota", bytesize.Short(daemon.DefaultStoreQuota), "most bytes of uploaded artifacts kept (uploads in progress included); least recently used ones not in use are removed to make room")
	fs.DurationVar(&d.UploadTTL, "upload-ttl", daemon.DefaultUploadTTL, "how long an uploaded artifact no request used is kept")
	fs.DurationVar(&d.DrainTimeout, "drain-timeout", daemon.DefaultDrainTimeout, "how long requests in flight may finish at shutdown")
	cfg.engine.register(fs, getenv)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&cfg.stopOnStdinClose, "stop-on-stdin-close", false, "also stop, as on SIGTERM, when standard input closes: a parent that keeps it open ties the daemon's life to its own")

	var rf runtimeFlags
	rf.register(fs, "startup-timeout", "request-timeout", "shutdown-timeout", "idle-timeout", "reaper-interval",
		"max-containers", "min-containers", "container-concurrency", "queue-size",
		"memory", "cpus", "busy-poll", "network", "allow-root", "socket-dir-limit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errUsageShown
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return cfg, errUsageShown
	}

	if err := cfg.engine.check(); err != nil {
		return cfg, err
	}
	if getenv("GOMAXPROCS") == "" {
		cfg.procs = daemon.Procs(goruntime.GOMAXPROCS(0))
	}
	mode, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || mode == 0 || mode > 0o777 {
		return cfg, fmt.Errorf("--socket-mode %q: expected an octal mode such as 0600 or 0660", *socketMode)
	}
	d.SocketMode = os.FileMode(mode)
	for _, s := range []struct {
		flag string
		in   string
		out  *int64
	}{
		{"--max-artifact-size", *maxArtifact, &d.MaxArtifactSize},
		{"--max-request-size", *maxRequest, &d.MaxRequestSize},
		{"--max-body-memory", *maxBodyMemory, &d.MaxBodyMemory},
		{"--store-quota", *storeQuota, &d.StoreQuota},
	} {
		n, err := bytesize.Parse(s.in)
		if err != nil || n <= 0 {
			return cfg, fmt.Errorf("%s %q: expected a positive size such as 16m or 2g", s.flag, s.in)
		}
		*s.out = n
	}
	if d.MinBodyRate, err = bytesize.Parse(*minBodyRate); err != nil {
		return cfg, fmt.Errorf("--min-body-rate: %w", err)
	}
	if d.BodyTimeout <= 0 || d.UploadTTL <= 0 {
		return cfg, errors.New("--body-timeout and --upload-ttl must be positive")
	}
	if d.MaxBodyMemory < d.MaxRequestSize {
		return cfg, fmt.Errorf("--max-body-memory (%d bytes) must hold at least one request of --max-request-size (%d bytes)", d.MaxBodyMemory, d.MaxRequestSize)
	}
	if d.StoreQuota < d.MaxArtifactSize {
		return cfg, fmt.Errorf("--store-quota (%d bytes) must hold at least one artifact of --max-artifact-size (%d bytes)", d.StoreQuota, d.MaxArtifactSize)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	if d.Token, err = readToken(cfg.tokenFile, getenv); err != nil {
		return cfg, err
	}
	if strings.HasPrefix(d.Listen, "tcp://") && d.Token == "" {
		return cfg, fmt.Errorf("listening on TCP requires a token: put one in a file and pass --token-file, or set $%s", tokenEnv)
	}
	if d.MaxRequestSize > api.DefaultMaxRequestSize {
		return cfg, fmt.Errorf("--max-request-size above %d bytes cannot be sent to a container: requests travel in frames of at most 16 MiB", api.DefaultMaxRequestSize)
	}

	if cfg.runtime, err = rf.options(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// readToken reads the token from file, else from the environment. A token
// file readable by others is refused: the token grants running containers.
func readToken(file string, getenv func(string) string) (string, error) {
	if file == "" {
		return strings.TrimSpace(getenv(tokenEnv)), nil
	}
	fi, err := os.Stat(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("--token-file %s is readable by other users (mode %04o); chmod o-rwx it", file, fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return token, nil
}
