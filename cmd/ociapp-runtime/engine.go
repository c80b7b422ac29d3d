package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/engine/kubernetes"
)

// engineFlags choose the container engine and say how to reach it. They
// are shared by run, bench and serve.
type engineFlags struct {
	kind       string
	dockerHost string
	kubeconfig string
	namespace  string
	node       string
	containerd string
	cpuRequest float64
	cgroup     string
}

// Values of --cgroup-parent beside a path: the engine's choice, or the
// daemon's parent.
const (
	cgroupParentAuto   = "auto"
	cgroupParentDaemon = "daemon"
)

// Engine kinds of --engine.
const (
	engineDocker     = "docker"
	engineKubernetes = "kubernetes"
)

// register adds the engine flags to fs; getenv supplies the defaults that
// a DaemonSet (NODE_NAME) or the test cluster's env file sets.
func (f *engineFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.kind, "engine", engineDocker, `container engine: "docker", or "kubernetes" (pods on this node; see docs/kubernetes.md)`)
	fs.StringVar(&f.dockerHost, "docker-host", "", "Docker daemon address (default: $DOCKER_HOST or the local socket)")
	fs.StringVar(&f.cgroup, "cgroup-parent", cgroupParentAuto, `docker: the cgroup under which each container's is created: "auto" gives each container a process's CPU weight (with the cgroupfs driver, "/"; with systemd, the daemon's), "daemon" keeps the daemon's parent for all, or a parent path or slice (see docs/engine.md)`)
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubernetes: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the pod's service account)")
	fs.StringVar(&f.namespace, "namespace", "", "kubernetes: namespace of the pods (default: the kubeconfig's, or the pod's own)")
	fs.StringVar(&f.node, "node", firstOf(getenv("NODE_NAME"), getenv("OCIAPP_K8S_NODE")), "kubernetes: this node's name (default: $NODE_NAME, $OCIAPP_K8S_NODE, else the host name)")
	fs.Float64Var(&f.cpuRequest, "pod-cpu-request", kubernetes.DefaultCPURequest, "kubernetes: the CPU each pod requests, in CPUs: its weight against other work, and what the node reserves for it (see docs/kubernetes.md)")
	fs.StringVar(&f.containerd, "containerd", firstOf(getenv("OCIAPP_K8S_CONTAINERD"), getenv("CONTAINERD_ADDRESS"), kubernetes.DefaultContainerd), "kubernetes: the node's containerd socket (default: $OCIAPP_K8S_CONTAINERD, $CONTAINERD_ADDRESS, else "+kubernetes.DefaultContainerd+")")
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// closingEngine is an engine the command owns and closes.
type closingEngine interface {
	engine.Engine
	Close() error
}

// check validates the choice of engine before anything is started.
func (f *engineFlags) check() error {
	switch f.kind {
	case engineDocker, engineKubernetes:
		return nil
	}
	return fmt.Errorf("--engine %q: use %q or %q", f.kind, engineDocker, engineKubernetes)
}

// open connects to the chosen engine. An unreachable one is
// *engine.UnavailableError (printError says how to start it).
func (f *engineFlags) open(ctx context.Context, log *slog.Logger) (closingEngine, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.kind == engineKubernetes {
		opts := []kubernetes.Option{kubernetes.WithLogger(log), kubernetes.WithContainerd(f.containerd), kubernetes.WithCPURequest(f.cpuRequest)}
		if f.kubeconfig != "" {
			opts = append(opts, kubernetes.WithKubeconfig(f.kubeconfig))
		}
		if f.namespace != "" {
			opts = append(opts, kubernetes.WithNamespace(f.namespace))
		}
		if f.node != "" {
			opts = append(opts, kubernetes.WithNode(f.node))
		}
		eng, err := kubernetes.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to Kubernetes: %w", err)
		}
		return eng, nil
	}
	opts := []docker.Option{docker.WithLogger(log)}
	switch f.cgroup {
	case cgroupParentAuto:
	case cgroupParentDaemon:
		opts = append(opts, docker.WithCgroupParent(docker.DaemonCgroupParent))
	default:
		opts = append(opts, docker.WithCgroupParent(f.cgroup))
	}
	if f.dockerHost != "" {
		opts = append(opts, docker.WithHost(f.dockerHost))
	}
	eng, err := docker.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to the container engine: %w", err)
	}
	return eng, nil
}
