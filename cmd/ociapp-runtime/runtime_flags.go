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
// timeouts). Each flag is defined once, in definitions, with the runtime's
// default; run, bench and serve register the ones they offer.
type runtimeFlags struct {
	registered []string

	memory, socketDirLimit string // sizes, as bytesize.Parse reads them
	cpus                   float64
	network, stateDir      string
	allowRoot              bool

	busyPoll, startupTimeout, requestTimeout, shutdownTimeout, idleTimeout, reaperInterval time.Duration
	maxContainers, minContainers, containerConcurrency, queueSize                          int
}

// register adds the named flags to fs. An unknown name is a mistake in the
// caller, and panics.
func (f *runtimeFlags) register(fs *flag.FlagSet, names ...string) {
	defs := f.definitions()
	for _, name := range names {
		def, ok := defs[name]
		if !ok {
			panic("runtimeFlags: no flag " + name)
		}
		def.define(fs, name)
		f.registered = append(f.registered, name)
	}
}

// options turns the registered flags into runtime options. A value that
// cannot be right is an error that names its flag.
func (f *runtimeFlags) options() ([]runtime.Option, error) {
	defs := f.definitions()
	var opts []runtime.Option
	for _, name := range f.registered {
		opt, err := defs[name].option(name)
		if err != nil {
			return nil, err
		}
		if opt != nil {
			opts = append(opts, opt)
		}
	}
	return opts, nil
}

// runtimeFlag is one flag: how it is defined, and the runtime option its
// value gives (nil: the runtime's default).
type runtimeFlag struct {
	define func(fs *flag.FlagSet, name string)
	option func(name string) (runtime.Option, error)
}

// definitions are the runtime flags by name. "timeout" and
// "request-timeout" are the same setting: run calls it the former.
func (f *runtimeFlags) definitions() map[string]runtimeFlag {
	requestTimeout := runtimeFlag{
		func(fs *flag.FlagSet, name string) {
			fs.DurationVar(&f.requestTimeout, name, runtime.DefaultRequestTimeout, "request timeout")
		},
		func(name string) (runtime.Option, error) {
			return nonNegative(name, f.requestTimeout, runtime.WithRequestTimeout)
		},
	}
	return map[string]runtimeFlag{
		"memory": {
			func(fs *flag.FlagSet, name string) {
				fs.StringVar(&f.memory, name, bytesize.Short(runtime.DefaultMemoryLimit), `container memory limit, e.g. 512m or 2g; "0" for none`)
			},
			func(name string) (runtime.Option, error) { return size(name, f.memory, runtime.WithMemoryLimit) },
		},
		"cpus": {
			func(fs *flag.FlagSet, name string) {
				fs.Float64Var(&f.cpus, name, 0, "container CPU limit in CPUs (0: none)")
			},
			func(name string) (runtime.Option, error) { return nonNegative(name, f.cpus, runtime.WithCPULimit) },
		},
		"network": {
			func(fs *flag.FlagSet, name string) {
				fs.StringVar(&f.network, name, runtime.DefaultNetwork, `container network mode: "none", or e.g. "bridge" to give the app a network`)
			},
			func(string) (runtime.Option, error) { return runtime.WithNetwork(f.network), nil },
		},
		"allow-root": {
			func(fs *flag.FlagSet, name string) {
				fs.BoolVar(&f.allowRoot, name, false, "let images that run as root do so (default: run them as 65532)")
			},
			func(string) (runtime.Option, error) { return runtime.WithAllowRoot(f.allowRoot), nil },
		},
		"socket-dir-limit": {
			func(fs *flag.FlagSet, name string) {
				fs.StringVar(&f.socketDirLimit, name, bytesize.Short(runtime.DefaultSocketDirLimit), `size of the tmpfs under each container's socket directory; "0" for a plain directory (needed when the daemon runs in another mount namespace than the engine)`)
			},
			func(name string) (runtime.Option, error) {
				return size(name, f.socketDirLimit, runtime.WithSocketDirLimit)
			},
		},
		"state-dir": {
			func(fs *flag.FlagSet, name string) {
				fs.StringVar(&f.stateDir, name, "", "directory for runtime state and sockets (default: /run/ociapp-runtime, or $XDG_RUNTIME_DIR/ociapp)")
			},
			func(string) (runtime.Option, error) {
				if f.stateDir == "" {
					return nil, nil
				}
				return runtime.WithStateDir(f.stateDir), nil
			},
		},
		"busy-poll": {
			func(fs *flag.FlagSet, name string) {
				fs.DurationVar(&f.busyPoll, name, protocol.DefaultBusyPoll, "how long to poll a container's connection for a response before sleeping (0: never poll)")
			},
			func(name string) (runtime.Option, error) { return nonNegative(name, f.busyPoll, runtime.WithBusyPoll) },
		},
		"startup-timeout": {
			func(fs *flag.FlagSet, name string) {
				fs.DurationVar(&f.startupTimeout, name, runtime.DefaultStartupTimeout, "container startup timeout")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.startupTimeout, runtime.WithStartupTimeout)
			},
		},
		"timeout":         requestTimeout,
		"request-timeout": requestTimeout,
		"shutdown-timeout": {
			func(fs *flag.FlagSet, name string) {
				fs.DurationVar(&f.shutdownTimeout, name, runtime.DefaultShutdownTimeout, "grace between SIGTERM and SIGKILL when a container stops")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.shutdownTimeout, runtime.WithShutdownTimeout)
			},
		},
		"idle-timeout": {
			func(fs *flag.FlagSet, name string) {
				fs.DurationVar(&f.idleTimeout, name, runtime.DefaultIdleTimeout, "how long an idle container is kept")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.idleTimeout, runtime.WithIdleTimeout)
			},
		},
		"reaper-interval": {
			func(fs *flag.FlagSet, name string) {
				fs.DurationVar(&f.reaperInterval, name, runtime.DefaultReaperInterval, "how often idle containers are looked for")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.reaperInterval, runtime.WithReaperInterval)
			},
		},
		"max-containers": {
			func(fs *flag.FlagSet, name string) {
				fs.IntVar(&f.maxContainers, name, runtime.DefaultMaxContainers(), "containers per artifact at most, at least 1; the default is the number of CPUs")
			},
			func(name string) (runtime.Option, error) {
				// Unlike --cpus and --memory, 0 cannot mean "no limit":
				// an artifact needs a container.
				if f.maxContainers == 0 {
					return nil, fmt.Errorf("--%s must be at least 1", name)
				}
				return nonNegative(name, f.maxContainers, runtime.WithMaxContainers)
			},
		},
		"min-containers": {
			func(fs *flag.FlagSet, name string) {
				fs.IntVar(&f.minContainers, name, 0, "containers per artifact kept running once it is used")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.minContainers, runtime.WithMinContainers)
			},
		},
		"container-concurrency": {
			func(fs *flag.FlagSet, name string) {
				fs.IntVar(&f.containerConcurrency, name, runtime.DefaultContainerConcurrency, "requests in flight per container at most")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.containerConcurrency, runtime.WithContainerConcurrency)
			},
		},
		"queue-size": {
			func(fs *flag.FlagSet, name string) {
				fs.IntVar(&f.queueSize, name, runtime.DefaultQueueSize, "requests per artifact that may wait for a container before overload errors")
			},
			func(name string) (runtime.Option, error) {
				return nonNegative(name, f.queueSize, runtime.WithQueueSize)
			},
		},
	}
}

// nonNegative is the option with(v), or an error naming the flag when v is
// negative; the runtime checks the other bounds.
func nonNegative[T int | float64 | time.Duration](name string, v T, with func(T) runtime.Option) (runtime.Option, error) {
	if v < 0 {
		return nil, fmt.Errorf("--%s must not be negative", name)
	}
	return with(v), nil
}

// size is the option with(n) of the size text reads as.
func size(name, text string, with func(int64) runtime.Option) (runtime.Option, error) {
	n, err := bytesize.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", name, err)
	}
	return with(n), nil
}
