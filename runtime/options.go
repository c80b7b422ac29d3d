package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// Defaults. The first five are the original runtime's.
const (
	DefaultStartupTimeout  = 10 * time.Second
	DefaultRequestTimeout  = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultIdleTimeout     = 900 * time.Second
	DefaultReaperInterval  = 1 * time.Second

	// DefaultContainerConcurrency is how many requests one container may
	// have in flight before further requests queue.
	DefaultContainerConcurrency = 64
	// DefaultQueueSize is how many requests may wait for a container per
	// artifact before Execute fails with *OverloadedError.
	DefaultQueueSize = 1024

	// DefaultMemoryLimit caps each container's memory (swap included).
	DefaultMemoryLimit int64 = 1 << 30
	// DefaultPidsLimit caps the processes and threads in each container.
	DefaultPidsLimit int64 = 256
	// DefaultNetwork is the network mode of containers: none at all.
	DefaultNetwork = "none"
	// DefaultTmpfsSize is the size of the writable /tmp of each container.
	DefaultTmpfsSize = "64m"
	// DefaultSocketDirLimit is the size of the tmpfs that holds each
	// container's socket directory (when the runtime is root).
	DefaultSocketDirLimit int64 = 1 << 20

	// DefaultImageRetention is how long an image the runtime loaded stays
	// in the engine once no container of the runtime uses it.
	DefaultImageRetention = 10 * time.Minute

	// DefaultStartupBackoff and DefaultMaxStartupBackoff bound the pause
	// after a failed container start, during which requests that would need
	// a new container fail at once with the same *StartupError.
	DefaultStartupBackoff    = 1 * time.Second
	DefaultMaxStartupBackoff = 30 * time.Second
)

// DefaultMaxContainers is the default cap on containers per artifact: one
// per CPU, since the typical app runs one request at a time on one core. A
// function, not a constant: it depends on the machine.
func DefaultMaxContainers() int { return max(1, goruntime.NumCPU()) }

// NonRootUser is the user containers run as when their image would run as
// root (the "nonroot" user of distroless images).
const NonRootUser = "65532:65532"

// Option configures New.
type Option func(*config) error

type config struct {
	engine   engine.Engine
	logger   *slog.Logger
	stateDir string

	startupTimeout  time.Duration
	requestTimeout  time.Duration
	shutdownTimeout time.Duration
	idleTimeout     time.Duration
	reaperInterval  time.Duration

	minContainers        int
	maxContainers        int
	containerConcurrency int
	queueSize            int

	memoryBytes int64
	nanoCPUs    int64
	pidsLimit   int64
	network     string
	allowRoot   bool

	socketDirLimit int64

	imageRetention time.Duration
	keepImages     bool

	startupBackoff    time.Duration
	maxStartupBackoff time.Duration

	busyPoll  time.Duration
	pollGroup *protocol.PollGroup // nil: the runtime's own

	// Seams for unit tests: how sessions are opened and artifacts read.
	dial         dialFunc
	openArtifact openFunc
	// exitGrace is how long a worker whose connection ended waits for its
	// container to exit on its own before reporting the crash without an
	// exit code.
	exitGrace time.Duration
}

func defaultConfig() config {
	return config{
		logger:               slog.New(slog.DiscardHandler),
		startupTimeout:       DefaultStartupTimeout,
		requestTimeout:       DefaultRequestTimeout,
		shutdownTimeout:      DefaultShutdownTimeout,
		idleTimeout:          DefaultIdleTimeout,
		reaperInterval:       DefaultReaperInterval,
		maxContainers:        DefaultMaxContainers(),
		containerConcurrency: DefaultContainerConcurrency,
		queueSize:            DefaultQueueSize,
		memoryBytes:          DefaultMemoryLimit,
		pidsLimit:            DefaultPidsLimit,
		network:              DefaultNetwork,
		socketDirLimit:       DefaultSocketDirLimit,
		imageRetention:       DefaultImageRetention,
		startupBackoff:       DefaultStartupBackoff,
		maxStartupBackoff:    DefaultMaxStartupBackoff,
		busyPoll:             protocol.DefaultBusyPoll,
		exitGrace:            2 * time.Second,
	}
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s must be positive, got %v", name, d)
	}
	return nil
}

// WithEngine sets the container engine (engine/docker, engine/kubernetes).
// It is required: the runtime knows no engine of its own. The runtime does
// not close it.
func WithEngine(e engine.Engine) Option {
	return func(c *config) error {
		if e == nil {
			return errors.New("engine must not be nil")
		}
		c.engine = e
		return nil
	}
}

// WithLogger sets the structured logger. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("logger must not be nil")
		}
		c.logger = l
		return nil
	}
}

// WithStateDir sets the directory that holds the runtime's lock files and
// the per-container socket directories (the original's runtime_root). It
// must be short: socket paths under it must fit the 108-byte limit of Unix
// socket addresses. The default is /run/ociapp-runtime when writable, else
// $XDG_RUNTIME_DIR/ociapp, else a directory under /tmp.
func WithStateDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("state directory must not be empty")
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		c.stateDir = abs
		return nil
	}
}

// WithStartupTimeout bounds how long a container may take from creation
// until its socket accepts a connection (default 10 s).
func WithStartupTimeout(d time.Duration) Option {
	return func(c *config) error {
		c.startupTimeout = d
		return positive("startup timeout", d)
	}
}

// WithRequestTimeout bounds each request once it is sent to a container
// (default 30 s). A timeout fails that request only; the container stays.
func WithRequestTimeout(d time.Duration) Option {
	return func(c *config) error {
		c.requestTimeout = d
		return positive("request timeout", d)
	}
}

// WithShutdownTimeout is how long a stopping container gets between SIGTERM
// and SIGKILL (default 10 s).
func WithShutdownTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("shutdown timeout must not be negative, got %v", d)
		}
		c.shutdownTimeout = d
		return nil
	}
}

// WithIdleTimeout is how long a container may sit without requests before
// it is stopped (default 900 s).
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) error {
		c.idleTimeout = d
		return positive("idle timeout", d)
	}
}

// WithReaperInterval is how often idle containers are looked for
// (default 1 s).
func WithReaperInterval(d time.Duration) Option {
	return func(c *config) error {
		c.reaperInterval = d
		return positive("reaper interval", d)
	}
}

// WithMaxContainers caps the containers per artifact (default:
// DefaultMaxContainers, the number of CPUs).
func WithMaxContainers(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("max containers must be at least 1, got %d", n)
		}
		c.maxContainers = n
		return nil
	}
}

// WithMinContainers keeps at least n containers per artifact running once
// the artifact has been used (default 0). Idle reaping stops no container
// below it, and crashed containers are replaced up to it.
func WithMinContainers(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("min containers must not be negative, got %d", n)
		}
		c.minContainers = n
		return nil
	}
}

// WithContainerConcurrency caps the requests in flight on one container
// (default 64). Requests beyond every container's cap queue.
func WithContainerConcurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("container concurrency must be at least 1, got %d", n)
		}
		c.containerConcurrency = n
		return nil
	}
}

// WithQueueSize bounds the requests per artifact waiting for a container
// (default 1024); past it Execute fails with *OverloadedError.
func WithQueueSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("queue size must be at least 1, got %d", n)
		}
		c.queueSize = n
		return nil
	}
}

// WithMemoryLimit caps each container's memory in bytes, swap included
// (default 1 GiB). Zero removes the limit.
func WithMemoryLimit(bytes int64) Option {
	return func(c *config) error {
		if bytes < 0 {
			return fmt.Errorf("memory limit must not be negative, got %d", bytes)
		}
		if bytes > 0 && bytes < 6<<20 {
			return fmt.Errorf("memory limit %d bytes is below Docker's minimum of 6 MiB", bytes)
		}
		c.memoryBytes = bytes
		return nil
	}
}

// WithCPULimit caps each container's CPU use, in CPUs (1.5 is one and a
// half). Zero (the default) leaves it unlimited.
func WithCPULimit(cpus float64) Option {
	return func(c *config) error {
		if cpus < 0 || math.IsNaN(cpus) || math.IsInf(cpus, 0) {
			return fmt.Errorf("CPU limit must be a non-negative number, got %v", cpus)
		}
		c.nanoCPUs = int64(cpus * 1e9)
		return nil
	}
}

// WithPidsLimit caps the processes and threads in each container
// (default 256). Zero removes the limit.
func WithPidsLimit(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("pids limit must not be negative, got %d", n)
		}
		c.pidsLimit = n
		return nil
	}
}

// WithNetwork sets the containers' network mode. The default, "none",
// gives them no network at all: an application reached only through its
// socket needs none, and a sandbox should not reach the network unless
// asked. "bridge" gives them Docker's default network.
func WithNetwork(mode string) Option {
	return func(c *config) error {
		if mode == "" || strings.ContainsAny(mode, " \t\n") {
			return fmt.Errorf("invalid network mode %q", mode)
		}
		c.network = mode
		return nil
	}
}

// WithAllowRoot lets containers run as root when their image says so. By
// default such images run as NonRootUser instead.
func WithAllowRoot(allow bool) Option {
	return func(c *config) error {
		c.allowRoot = allow
		return nil
	}
}

// WithSocketDirLimit bounds what an application can write into its socket
// directory, a host directory bound into the container (default 1 MiB). A
// runtime running as root mounts a tmpfs of this size there; one that is
// not root cannot, and the directory is then a plain one on the state
// directory's file system. Zero turns the tmpfs off.
func WithSocketDirLimit(bytes int64) Option {
	return func(c *config) error {
		if bytes < 0 {
			return fmt.Errorf("socket directory limit must not be negative, got %d", bytes)
		}
		if bytes > 0 && bytes < 4096 {
			return fmt.Errorf("socket directory limit %d bytes is below one page", bytes)
		}
		c.socketDirLimit = bytes
		return nil
	}
}

// WithImageRetention sets how long an image the runtime loaded stays in
// the engine once none of the runtime's containers uses it (default 10
// minutes; zero removes it at the next reaper pass). Close removes the
// images the runtime loaded. Images the engine already had are never
// removed, nor are images something else uses by then.
func WithImageRetention(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("image retention must not be negative, got %v", d)
		}
		c.imageRetention = d
		return nil
	}
}

// WithKeepImages keeps every image the runtime loads in the engine, also
// after Close (the next runtime finds them and does not load them again);
// the engine's storage then grows with every artifact version run.
func WithKeepImages(keep bool) Option {
	return func(c *config) error {
		c.keepImages = keep
		return nil
	}
}

// WithStartupBackoff sets the pause after a failed container start: first
// initial, doubling with each further failure up to maxBackoff, and reset
// by a successful start (defaults 1 s and 30 s).
func WithStartupBackoff(initial, maxBackoff time.Duration) Option {
	return func(c *config) error {
		if initial < 0 || maxBackoff < initial {
			return fmt.Errorf("startup backoff needs 0 <= initial <= max, got %v and %v", initial, maxBackoff)
		}
		c.startupBackoff, c.maxStartupBackoff = initial, maxBackoff
		return nil
	}
}

// WithBusyPoll sets how long the runtime polls a container's connection
// for an awaited response before it sleeps until the response arrives
// (protocol.DefaultBusyPoll by default; zero turns polling off). Polling
// spends up to d of processor time per request to spare the wake-up of a
// sleeping thread, which on virtual machines costs more than serving a
// small request; it backs off on connections whose responses take longer,
// and stops while more than two requests are in flight across all of the
// runtime's containers. See protocol.WithBusyPoll.
func WithBusyPoll(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("busy poll must not be negative, got %v", d)
		}
		c.busyPoll = d
		return nil
	}
}

// WithPollGroup makes the runtime count its requests in g, for busy
// polling (WithBusyPoll) to stop while more than two are in flight,
// instead of in a group of its own. The owner of g may count other work
// there too: a daemon counts each request of its execute channels from
// the moment it reads it, so that a batch read at once stops polling at
// once, before the runtime has seen the batch's requests; polling for the
// first of them would take the CPU the rest need (docs/daemon.md).
func WithPollGroup(g *protocol.PollGroup) Option {
	return func(c *config) error {
		c.pollGroup = g
		return nil
	}
}

// withDialer and withArtifactOpener replace the real protocol client and
// artifact reader in unit tests.
func withDialer(d dialFunc) Option {
	return func(c *config) error { c.dial = d; return nil }
}

func withArtifactOpener(o openFunc) Option {
	return func(c *config) error { c.openArtifact = o; return nil }
}

// defaultStateDir picks a short directory for sockets: /run/ociapp-runtime
// for root, $XDG_RUNTIME_DIR/ociapp for a user session, /tmp otherwise.
func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/run/ociapp-runtime"
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "ociapp")
	}
	return fmt.Sprintf("/tmp/ociapp-runtime-%d", os.Geteuid())
}
