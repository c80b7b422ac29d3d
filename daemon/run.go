package daemon

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/runtime"
)

// Config configures Run. Apart from Engine, which is required, its zero
// value is valid: a Unix socket at DefaultListen, state in DefaultStateDir,
// no token, default limits.
type Config struct {
	// Listen is "unix:///PATH" or "tcp://HOST:PORT" (default DefaultListen()).
	// A TCP listener requires Token.
	Listen string
	// StateDir holds the artifact store (StateDir/artifacts, kept across
	// restarts) and the runtime's state directory (StateDir/rt, its socket
	// directories and locks). Default DefaultStateDir().
	StateDir string
	// Token, when set, is required as a bearer token on every request but
	// the health check.
	Token string
	// TLSCertFile and TLSKeyFile, when both set, make the listener speak TLS.
	TLSCertFile, TLSKeyFile string
	// SocketMode is the Unix socket's mode (default DefaultSocketMode).
	SocketMode os.FileMode
	// Engine runs the containers (engine/docker, engine/kubernetes). It is
	// required; Run does not close it.
	Engine engine.Engine
	// MaxArtifactSize and MaxRequestSize bound upload and execute bodies
	// (defaults api.DefaultMaxArtifactSize and api.DefaultMaxRequestSize).
	MaxArtifactSize, MaxRequestSize int64
	// MaxBodyMemory bounds the bytes of execute bodies held at once
	// (default DefaultMaxBodyMemory).
	MaxBodyMemory int64
	// BodyTimeout and MinBodyRate bound how long a body may take: the
	// timeout plus one second per MinBodyRate bytes (defaults
	// DefaultBodyTimeout and DefaultMinBodyRate; a negative rate: none).
	BodyTimeout time.Duration
	MinBodyRate int64
	// StoreQuota bounds the bytes of stored artifacts and uploads in
	// progress (default DefaultStoreQuota); UploadTTL is how long an
	// artifact no request used is kept (default DefaultUploadTTL).
	StoreQuota int64
	UploadTTL  time.Duration
	// DrainTimeout bounds how long in-flight requests may finish at
	// shutdown (default DefaultDrainTimeout).
	DrainTimeout time.Duration
	// CloseTimeout bounds stopping the containers after the drain (default
	// DefaultCloseTimeout); what is left then is removed by the next daemon.
	CloseTimeout time.Duration
	// Logger receives the daemon's and the runtime's logs (default: none).
	Logger *slog.Logger
	// Ready, when set, is called with the listener's address once the
	// daemon accepts connections.
	Ready func(net.Addr)
}

// DefaultCloseTimeout bounds how long Run waits for the runtime to stop its
// containers.
const DefaultCloseTimeout = 2 * time.Minute

// DefaultStateDir is /var/lib/ociapp-runtime for root, else
// $XDG_STATE_HOME/ociapp-runtime, else ~/.local/state/ociapp-runtime.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ociapp-runtime"
	}
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "ociapp-runtime")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "ociapp-runtime")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ociapp-runtime-%d", os.Geteuid()))
}

// DefaultListen is unix:///run/ociapp-runtime.sock for root, else a socket
// in $XDG_RUNTIME_DIR, else in the default state directory.
func DefaultListen() string {
	if os.Geteuid() == 0 {
		return "unix:///run/ociapp-runtime.sock"
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return "unix://" + filepath.Join(x, "ociapp-runtime.sock")
	}
	return "unix://" + filepath.Join(DefaultStateDir(), "daemon.sock")
}

// Run runs a daemon until ctx ends: it creates a runtime on cfg.Engine (with rtOpts; the engine and state directory are Run's), opens the
// artifact store and serves. When ctx ends it stops accepting connections,
// drains in-flight requests, then closes the runtime, which stops every
// container. A daemon started again on the same state directory keeps the
// stored artifacts and removes the containers a crashed one left behind.
func Run(ctx context.Context, cfg Config, rtOpts ...runtime.Option) (err error) {
	log := cfg.Logger
	if log == nil {
		log = discardLogger()
	}
	stateDir := cfg.StateDir
	if stateDir == "" {
		stateDir = DefaultStateDir()
	}
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen()
	}
	if strings.HasPrefix(listen, "tcp://") && cfg.Token == "" {
		return errors.New("a TCP listener requires a token: anyone who can reach the port could run containers")
	}
	if cfg.Engine == nil {
		return errors.New("no container engine: set Config.Engine")
	}
	tlsConf, err := loadTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return err
	}

	opts := []Option{WithLogger(log)}
	if cfg.Token != "" {
		opts = append(opts, WithToken(cfg.Token))
	}
	if cfg.MaxArtifactSize != 0 {
		opts = append(opts, WithMaxArtifactSize(cfg.MaxArtifactSize))
	}
	if cfg.MaxRequestSize != 0 {
		opts = append(opts, WithMaxRequestSize(cfg.MaxRequestSize))
	}
	if cfg.DrainTimeout != 0 {
		opts = append(opts, WithDrainTimeout(cfg.DrainTimeout))
	}
	if cfg.MaxBodyMemory != 0 {
		opts = append(opts, WithMaxBodyMemory(cfg.MaxBodyMemory))
	}
	if cfg.BodyTimeout != 0 || cfg.MinBodyRate != 0 {
		timeout, rate := cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout), cmp.Or(cfg.MinBodyRate, DefaultMinBodyRate)
		opts = append(opts, WithBodyTimeouts(timeout, max(rate, 0)))
	}
	var storeOpts []StoreOption
	if cfg.StoreQuota != 0 {
		storeOpts = append(storeOpts, WithStoreQuota(cfg.StoreQuota))
	}
	if cfg.UploadTTL != 0 {
		storeOpts = append(storeOpts, WithUploadTTL(cfg.UploadTTL))
	}
	if quota, largest := cmp.Or(cfg.StoreQuota, DefaultStoreQuota), cmp.Or(cfg.MaxArtifactSize, api.DefaultMaxArtifactSize); quota < largest {
		return fmt.Errorf("the store quota (%d bytes) must hold at least the largest artifact accepted (%d bytes)", quota, largest)
	}
	store, err := OpenStore(filepath.Join(stateDir, "artifacts"), log, storeOpts...)
	if err != nil {
		return err
	}

	ln, err := Listen(listen, cfg.SocketMode)
	if err != nil {
		return err
	}
	defer ln.Close() // Serve closes it; this covers the early returns
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	} else if cfg.Token != "" && ln.Addr().Network() == "tcp" {
		log.Warn("serving TCP without TLS: the token and requests travel in clear; use --tls-cert and --tls-key off a trusted network")
	}

	eng := cfg.Engine
	rtState := filepath.Join(stateDir, "rt")
	rt, err := runtime.New(ctx, slices.Concat(
		[]runtime.Option{runtime.WithEngine(eng), runtime.WithLogger(log)},
		rtOpts,
		[]runtime.Option{runtime.WithStateDir(rtState)},
	)...)
	if err != nil {
		return fmt.Errorf("starting the runtime: %w", err)
	}
	opts = append(opts, WithContainers(eng, map[string]string{runtime.LabelStateDir: rtState}))
	srv, err := New(rt, store, opts...)
	if err != nil {
		_ = rt.Close(context.WithoutCancel(ctx))
		return err
	}

	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	serveErr := srv.Serve(ctx, ln)

	closeTimeout := cfg.CloseTimeout
	if closeTimeout <= 0 {
		closeTimeout = DefaultCloseTimeout
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	log.Info("daemon stopping its containers")
	closeErr := rt.Close(closeCtx)
	// Requests cut off by the drain timeout end with the runtime; one
	// stuck in a call that does not honour its context ends with the
	// process.
	if !srv.waitIdle(closeCtx) {
		log.Warn("requests still running after the runtime closed; exiting without them")
	}
	log.Info("daemon stopped")
	return errors.Join(serveErr, closeErr)
}

func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate and a key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}
