package daemon

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// WithListen sets where Run listens: "unix:///PATH" or "tcp://HOST:PORT"
// (default DefaultListen()). A TCP listener requires WithToken. Run only.
func WithListen(addr string) Option {
	return func(c *config) error {
		if !strings.HasPrefix(addr, "unix://") && !strings.HasPrefix(addr, "tcp://") {
			return fmt.Errorf("listen address %q: use unix:///PATH or tcp://HOST:PORT", addr)
		}
		c.listen = addr
		return nil
	}
}

// WithStateDir sets the directory that holds the artifact store (DIR/
// artifacts, kept across restarts) and the runtime's state directory
// (DIR/rt: its socket directories, locks and the files it verified), by
// default DefaultStateDir(). Run only.
func WithStateDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("state directory must not be empty")
		}
		c.stateDir = dir
		return nil
	}
}

// WithTLS makes the listener speak TLS with the certificate and key in
// these PEM files. Run only.
func WithTLS(certFile, keyFile string) Option {
	return func(c *config) error {
		if certFile == "" || keyFile == "" {
			return errors.New("TLS needs both a certificate and a key")
		}
		c.tlsCert, c.tlsKey = certFile, keyFile
		return nil
	}
}

// WithSocketMode sets the Unix socket's mode (default DefaultSocketMode).
// Run only.
func WithSocketMode(mode os.FileMode) Option {
	return func(c *config) error {
		if mode == 0 || mode&^os.ModePerm != 0 {
			return fmt.Errorf("socket mode must be permission bits, got %v", mode)
		}
		c.socketMode = mode
		return nil
	}
}

// WithCloseTimeout bounds stopping the containers after the drain
// (default DefaultCloseTimeout); what is left then is removed by the next
// daemon. Run only.
func WithCloseTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("close timeout must be positive, got %v", d)
		}
		c.closeTimeout = d
		return nil
	}
}

// WithReady has Run call ready with the listener's address once the daemon
// accepts connections. Run only.
func WithReady(ready func(net.Addr)) Option {
	return func(c *config) error {
		c.ready = ready
		return nil
	}
}

// WithRuntimeOptions configures the runtime Run creates; its engine,
// logger and state directory are Run's. Run only.
func WithRuntimeOptions(opts ...runtime.Option) Option {
	return func(c *config) error {
		c.runtimeOptions = append(c.runtimeOptions, opts...)
		return nil
	}
}

// WithStoreOptions configures the artifact store Run opens (its quota,
// the uploads' time to live). Run only.
func WithStoreOptions(opts ...StoreOption) Option {
	return func(c *config) error {
		c.storeOptions = append(c.storeOptions, opts...)
		return nil
	}
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

// Procs is how many processors a process whose main work is a daemon
// should let its Go code run on (GOMAXPROCS), given the available ones: a
// quarter, and at least one. A daemon relays requests; its containers do
// the work and need the processors, and with processors to spare the Go
// scheduler wakes an idle thread for most goroutines it readies, which
// costs tens of microseconds on a virtual machine (docs/daemon.md,
// Overhead). Run does not set it: GOMAXPROCS belongs to the program
// (ociapp-runtime serve applies it unless GOMAXPROCS is set).
func Procs(available int) int { return max(1, available/4) }

// Run runs a daemon on eng until ctx ends: it creates a runtime on eng,
// opens the artifact store and serves. When ctx ends it stops accepting
// connections, drains in-flight requests, then closes the runtime, which
// stops every container; it does not close eng. A daemon started again on
// the same state directory keeps the stored artifacts and removes the
// containers a crashed one left behind. Without options it listens on
// DefaultListen() with its state in DefaultStateDir(), no token, and the
// default limits.
func Run(ctx context.Context, eng engine.Engine, opts ...Option) (err error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	log := cfg.log
	stateDir := cmp.Or(cfg.stateDir, DefaultStateDir())
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	listen := cmp.Or(cfg.listen, DefaultListen())
	if strings.HasPrefix(listen, "tcp://") && cfg.tokenHash == nil {
		return errors.New("a TCP listener requires a token: anyone who can reach the port could run containers")
	}
	if eng == nil {
		return errors.New("no container engine")
	}
	tlsConf, err := loadTLS(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return err
	}
	store, err := OpenStore(filepath.Join(stateDir, "artifacts"), log, cfg.storeOptions...)
	if err != nil {
		return err
	}
	if store.quota < cfg.maxArtifactSize {
		return fmt.Errorf("the store quota (%d bytes) must hold at least the largest artifact accepted (%d bytes)", store.quota, cfg.maxArtifactSize)
	}

	ln, err := Listen(listen, cfg.socketMode)
	if err != nil {
		return err
	}
	defer ln.Close() // Serve closes it; this covers the early returns
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	} else if cfg.tokenHash != nil && ln.Addr().Network() == "tcp" {
		log.Warn("serving TCP without TLS: the token and requests travel in clear; use TLS off a trusted network")
	}

	rtState := filepath.Join(stateDir, "rt")
	if cfg.polls == nil {
		cfg.polls = new(protocol.PollGroup)
	}
	rt, err := runtime.New(ctx, slices.Concat(
		[]runtime.Option{runtime.WithEngine(eng), runtime.WithLogger(log)},
		cfg.runtimeOptions,
		[]runtime.Option{runtime.WithStateDir(rtState), runtime.WithPollGroup(cfg.polls)},
	)...)
	if err != nil {
		return fmt.Errorf("starting the runtime: %w", err)
	}
	cfg.containers, cfg.containerLabels = eng, map[string]string{runtime.LabelStateDir: rtState}
	srv := newServer(rt, store, cfg)

	if cfg.ready != nil {
		cfg.ready(ln.Addr())
	}
	serveErr := srv.Serve(ctx, ln)

	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.closeTimeout)
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
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}
