package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// runtimeFlags are the runtime's settings on the command line: the
// containers' sandbox (memory, CPUs, network, user) and the pool (sizes,
// timeouts). Each flag is defined here once, with the runtime's default;
// run, bench and serve register the ones they offer.
type runtimeFlags struct {
	registered []string

	memory, socketDirLimit string // sizes, as bytesize.Parse reads them
	cpus                   float64
	network, stateDir      string
	allowRoot              bool

	busyPoll, startupTimeout, requestTimeout, shutdownTimeout, idleTimeout, reaperInterval time.Duration
	maxContainers, minContainers, containerConcurrency, queueSize                          int
}

// register adds the named flags to fs. "timeout" and "request-timeout"
// are the same setting (run calls it the former). An unknown name is a
// mistake in the caller, and panics.
func (f *runtimeFlags) register(fs *flag.FlagSet, names ...string) {
	for _, name := range names {
		switch name {
		case "memory":
			fs.StringVar(&f.memory, name, bytesize.Short(runtime.DefaultMemoryLimit), `container memory limit, e.g. 512m or 2g; "0" for none`)
		case "cpus":
			fs.Float64Var(&f.cpus, name, 0, "container CPU limit in CPUs (0: none)")
		case "network":
			fs.StringVar(&f.network, name, runtime.DefaultNetwork, `container network mode: "none", or e.g. "bridge" to give the app a network`)
		case "allow-root":
			fs.BoolVar(&f.allowRoot, name, false, "let images that run as root do so (default: run them as 65532)")
		case "socket-dir-limit":
			fs.StringVar(&f.socketDirLimit, name, bytesize.Short(runtime.DefaultSocketDirLimit), `size of the tmpfs under each container's socket directory; "0" for a plain directory (needed when the daemon runs in another mount namespace than the engine)`)
		case "state-dir":
			fs.StringVar(&f.stateDir, name, "", "directory for runtime state and sockets (default: /run/ociapp-runtime, or $XDG_RUNTIME_DIR/ociapp)")
		case "busy-poll":
			fs.DurationVar(&f.busyPoll, name, protocol.DefaultBusyPoll, "how long to poll a container's connection for a response before sleeping (0: never poll)")
		case "startup-timeout":
			fs.DurationVar(&f.startupTimeout, name, runtime.DefaultStartupTimeout, "container startup timeout")
		case "timeout", "request-timeout":
			fs.DurationVar(&f.requestTimeout, name, runtime.DefaultRequestTimeout, "request timeout")
		case "shutdown-timeout":
			fs.DurationVar(&f.shutdownTimeout, name, runtime.DefaultShutdownTimeout, "grace between SIGTERM and SIGKILL when a container stops")
		case "idle-timeout":
			fs.DurationVar(&f.idleTimeout, name, runtime.DefaultIdleTimeout, "how long an idle container is kept")
		case "reaper-interval":
			fs.DurationVar(&f.reaperInterval, name, runtime.DefaultReaperInterval, "how often idle containers are looked for")
		case "max-containers":
			fs.IntVar(&f.maxContainers, name, 0, "containers per artifact at most (default: the runtime's, one per CPU)")
		case "min-containers":
			fs.IntVar(&f.minContainers, name, 0, "containers per artifact kept running once it is used")
		case "container-concurrency":
			fs.IntVar(&f.containerConcurrency, name, runtime.DefaultContainerConcurrency, "requests in flight per container at most")
		case "queue-size":
			fs.IntVar(&f.queueSize, name, runtime.DefaultQueueSize, "requests per artifact that may wait for a container before overload errors")
		default:
			panic("runtimeFlags: no flag " + name)
		}
		f.registered = append(f.registered, name)
	}
}

// options turns the registered flags into runtime options. A flag whose
// value cannot be right is an error that names it.
func (f *runtimeFlags) options() ([]runtime.Option, error) {
	var opts []runtime.Option
	for _, name := range f.registered {
		var opt runtime.Option
		var negative bool
		switch name {
		case "memory", "socket-dir-limit":
			text, with := f.memory, runtime.WithMemoryLimit
			if name == "socket-dir-limit" {
				text, with = f.socketDirLimit, runtime.WithSocketDirLimit
			}
			n, err := bytesize.Parse(text)
			if err != nil {
				return nil, fmt.Errorf("--%s: %w", name, err)
			}
			opt = with(n)
		case "cpus":
			opt, negative = runtime.WithCPULimit(f.cpus), f.cpus < 0
		case "network":
			opt = runtime.WithNetwork(f.network)
		case "allow-root":
			opt = runtime.WithAllowRoot(f.allowRoot)
		case "state-dir":
			if f.stateDir != "" {
				opt = runtime.WithStateDir(f.stateDir)
			}
		case "busy-poll":
			opt, negative = runtime.WithBusyPoll(f.busyPoll), f.busyPoll < 0
		case "startup-timeout":
			opt, negative = runtime.WithStartupTimeout(f.startupTimeout), f.startupTimeout < 0
		case "timeout", "request-timeout":
			opt, negative = runtime.WithRequestTimeout(f.requestTimeout), f.requestTimeout < 0
		case "shutdown-timeout":
			opt, negative = runtime.WithShutdownTimeout(f.shutdownTimeout), f.shutdownTimeout < 0
		case "idle-timeout":
			opt, negative = runtime.WithIdleTimeout(f.idleTimeout), f.idleTimeout < 0
		case "reaper-interval":
			opt, negative = runtime.WithReaperInterval(f.reaperInterval), f.reaperInterval < 0
		case "max-containers":
			// 0 leaves the runtime's default, which has no constant: it
			// depends on the machine.
			if f.maxContainers != 0 {
				opt = runtime.WithMaxContainers(f.maxContainers)
			}
			negative = f.maxContainers < 0
		case "min-containers":
			opt, negative = runtime.WithMinContainers(f.minContainers), f.minContainers < 0
		case "container-concurrency":
			opt, negative = runtime.WithContainerConcurrency(f.containerConcurrency), f.containerConcurrency < 0
		case "queue-size":
			opt, negative = runtime.WithQueueSize(f.queueSize), f.queueSize < 0
		}
		if negative {
			return nil, fmt.Errorf("--%s must not be negative", name)
		}
		if opt != nil {
			opts = append(opts, opt)
		}
	}
	return opts, nil
}
