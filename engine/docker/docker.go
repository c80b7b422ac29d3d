// Package docker implements engine.Engine with the Docker Engine API.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"

	"github.com/ociapp/ociapp/engine"
)

// Engine talks to one Docker daemon. It is safe for concurrent use; Close it
// to release the client's idle connections.
type Engine struct {
	cli *client.Client
	log *slog.Logger

	// cgroupParent is where containers' cgroups go, once known: set by
	// WithCgroupParent, else chosen at the first container (cgroupParentFor).
	mu                sync.Mutex
	cgroupParent      string
	cgroupParentKnown bool
}

var (
	_ engine.Engine       = (*Engine)(nil)
	_ engine.Builder      = (*Engine)(nil)
	_ engine.ImageRemover = (*Engine)(nil)
)

type config struct {
	host            string
	log             *slog.Logger
	cgroupParent    string
	cgroupParentSet bool
}

// Option configures New.
type Option func(*config) error

// WithHost sets the daemon address (e.g. "unix:///var/run/docker.sock",
// "tcp://host:2375"), overriding DOCKER_HOST.
func WithHost(host string) Option {
	return func(c *config) error {
		if host == "" {
			return errors.New("docker host must not be empty")
		}
		c.host = host
		return nil
	}
}

// WithLogger sets the logger for debug messages; the default discards them.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("logger must not be nil")
		}
		c.log = l
		return nil
	}
}

// WithCgroupParent sets the cgroup under which every container's own is
// created (HostConfig.CgroupParent); DaemonCgroupParent ("") keeps the
// daemon's (dockerd --cgroup-parent: /docker, or system.slice with the
// systemd driver). Without this option the engine gives each container
// a process's CPU weight, choosing when it creates its first container:
// with the cgroupfs driver it uses "/", making each container a cgroup of
// its own at the top, where under /docker all containers together weigh
// as one process; the systemd driver already gives each container a scope
// of its own, and keeps the daemon's parent. docs/engine.md, "CPU share
// under contention", has the measurements.
func WithCgroupParent(parent string) Option {
	return func(c *config) error {
		c.cgroupParent, c.cgroupParentSet = parent, true
		return nil
	}
}

// DaemonCgroupParent, given to WithCgroupParent, keeps the daemon's
// parent cgroup.
const DaemonCgroupParent = ""

// topCgroupParent is the parent that gives each container a process's
// CPU weight with the cgroupfs driver.
const topCgroupParent = "/"

// New connects to the Docker daemon named by the options, or else by the
// environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
// DOCKER_API_VERSION), or else the platform default socket. It negotiates
// the API version with the daemon, so an unreachable daemon is reported
// here as *engine.UnavailableError.
func New(ctx context.Context, opts ...Option) (*Engine, error) {
	cfg := config{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("configuring docker engine: %w", err)
		}
	}
	copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.host != "" {
		copts = append(copts, client.WithHost(cfg.host))
	}
	cli, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("creating docker client: %w", err)
	}
	e := &Engine{cli: cli, log: cfg.log, cgroupParent: cfg.cgroupParent, cgroupParentKnown: cfg.cgroupParentSet}
	p, err := e.ping(ctx)
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	// Negotiate once, here, before the engine is shared: the client reads
	// its version without a lock on every request.
	cli.NegotiateAPIVersionPing(p)
	if versions.LessThan(cli.ClientVersion(), minAPIVersion) {
		_ = cli.Close()
		return nil, fmt.Errorf("docker at %s speaks API %s, older than the %s this engine needs; upgrade Docker", cli.DaemonHost(), cli.ClientVersion(), minAPIVersion)
	}
	e.log.Debug("connected to docker", "host", cli.DaemonHost(), "api_version", cli.ClientVersion())
	return e, nil
}

// CgroupParent returns the parent under which containers' cgroups are
// created ("" is the daemon's), asking the daemon for its cgroup driver
// the first time when WithCgroupParent did not set it: only an engine
// that creates containers pays for the question. A failed question is
// asked again at the next container, which meanwhile keeps the daemon's
// parent.
func (e *Engine) CgroupParent(ctx context.Context) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cgroupParentKnown {
		return e.cgroupParent
	}
	info, err := e.cli.Info(ctx)
	if err != nil {
		e.log.Debug("docker info failed; the container keeps the daemon's cgroup parent", "err", err)
		return DaemonCgroupParent
	}
	e.cgroupParent, e.cgroupParentKnown = DaemonCgroupParent, true
	if info.CgroupDriver == "cgroupfs" {
		e.cgroupParent = topCgroupParent
	}
	e.log.Debug("containers' cgroup parent chosen", "driver", info.CgroupDriver, "cgroup_parent", e.cgroupParent)
	return e.cgroupParent
}

// minAPIVersion is the oldest API with everything used here: wait
// conditions and the build's image ID in its aux message (1.30), init,
// NanoCPUs and the mount API (1.25).
const minAPIVersion = "1.30"

// Close releases the client's connections.
func (e *Engine) Close() error {
	return e.cli.Close()
}

// Host returns the daemon address in use.
func (e *Engine) Host() string { return e.cli.DaemonHost() }

// APIVersion returns the negotiated API version, e.g. "1.41".
func (e *Engine) APIVersion() string { return e.cli.ClientVersion() }

// Ping checks that the daemon answers; a failure is *engine.UnavailableError
// (or the context's error when ctx was canceled).
func (e *Engine) Ping(ctx context.Context) error {
	_, err := e.ping(ctx)
	return err
}

func (e *Engine) ping(ctx context.Context) (types.Ping, error) {
	p, err := e.cli.Ping(ctx)
	if err == nil {
		return p, nil
	}
	if errors.Is(err, context.Canceled) {
		return p, fmt.Errorf("pinging docker: %w", err)
	}
	// Anything else, including a daemon that does not answer before the
	// deadline or something other than Docker answering at the address,
	// means there is no usable daemon there.
	return p, fmt.Errorf("pinging docker: %w", &engine.UnavailableError{Host: e.cli.DaemonHost(), Err: err})
}

// wrap maps a client error to the engine's error types: connection
// failures become *engine.UnavailableError and missing objects wrap
// engine.ErrNotFound.
func (e *Engine) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case isConnErr(err):
		return fmt.Errorf("%s: %w", op, &engine.UnavailableError{Host: e.cli.DaemonHost(), Err: err})
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", op, engine.ErrNotFound, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// isConnErr reports whether err means the daemon could not be reached or
// dropped the connection, as opposed to an error the daemon returned.
func isConnErr(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if client.IsErrConnectionFailed(err) {
		return true
	}
	// Failures while a response body streams (a daemon that dies mid-build or
	// mid-wait) surface from the body reader, not from the client.
	return errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}
