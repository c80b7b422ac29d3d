// Package kubernetes implements engine.Engine on one node of a Kubernetes
// cluster. Images go into the node's containerd (namespace k8s.io) without a
// registry; containers are pods pinned to the node (spec.nodeName) whose
// socket directory is a hostPath, so the runtime reaches them through the
// same Unix sockets as on Docker. See docs/engine.md for the mapping.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ociapp/ociapp/engine"
)

// Defaults of the options.
const (
	// DefaultContainerd is the node's containerd socket.
	DefaultContainerd = "/run/containerd/containerd.sock"
	// ContainerdNamespace is the containerd namespace the kubelet's CRI
	// plugin uses: images imported there are the node's images.
	ContainerdNamespace = "k8s.io"
	// DefaultSnapshotter is the snapshotter the CRI plugin runs pods on;
	// imported images are unpacked for it.
	DefaultSnapshotter = "overlayfs"
	// DefaultCPURequest is the CPU each pod requests, in CPUs: see
	// WithCPURequest.
	DefaultCPURequest = 0.1
)

// Engine runs containers as pods on one node. It is safe for concurrent
// use; Close it to release its connections.
type Engine struct {
	pods        podsClient
	httpClient  *http.Client
	apiHost     string
	ctrd        *containerd.Client
	ctrdAddr    string
	namespace   string
	node        string
	snapshotter string
	cpuRequest  int64 // millicores
	log         *slog.Logger
}

var _ engine.Engine = (*Engine)(nil)

type config struct {
	kubeconfig  string
	rest        *rest.Config
	namespace   string
	node        string
	containerd  string
	snapshotter string
	cpuRequest  int64 // millicores
	log         *slog.Logger
}

// Option configures New.
type Option func(*config) error

// WithKubeconfig reads the API server's address and credentials from a
// kubeconfig file. The default is $KUBECONFIG or ~/.kube/config, and inside
// a pod its service account.
func WithKubeconfig(path string) Option {
	return func(c *config) error {
		if path == "" {
			return errors.New("kubeconfig path must not be empty")
		}
		c.kubeconfig = path
		return nil
	}
}

// WithRESTConfig sets the API server's address and credentials directly;
// it overrides WithKubeconfig.
func WithRESTConfig(rc *rest.Config) Option {
	return func(c *config) error {
		if rc == nil {
			return errors.New("REST config must not be nil")
		}
		c.rest = rc
		return nil
	}
}

// WithNamespace sets the namespace of the pods. The default is the
// kubeconfig context's namespace (inside a pod: its own), else "default".
func WithNamespace(ns string) Option {
	return func(c *config) error {
		if ns == "" {
			return errors.New("namespace must not be empty")
		}
		c.namespace = ns
		return nil
	}
}

// WithNode sets the node that runs the pods: the one this process runs on,
// since the runtime reaches the pods through sockets in host directories.
// The default is the host name, which is the kubelet's default node name.
func WithNode(name string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New("node name must not be empty")
		}
		c.node = name
		return nil
	}
}

// WithContainerd sets the address of the node's containerd socket
// (default DefaultContainerd).
func WithContainerd(address string) Option {
	return func(c *config) error {
		if address == "" {
			return errors.New("containerd address must not be empty")
		}
		c.containerd = address
		return nil
	}
}

// WithSnapshotter sets the containerd snapshotter the kubelet's runtime
// uses (default DefaultSnapshotter).
func WithSnapshotter(name string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New("snapshotter must not be empty")
		}
		c.snapshotter = name
		return nil
	}
}

// WithCPURequest sets the CPU each pod requests, in CPUs (0.25 is a
// quarter; default DefaultCPURequest), at most the runtime's CPU limit
// when it sets one. The kubelet weighs a container's CPU time by its
// request (1 CPU: 1,024 shares, a Docker container's weight; no request:
// 2, far below any neighbour that has one), and admits a pod to the node
// only while the requests of its pods fit the node's allocatable CPU: a
// request is a share of the node reserved for every pod of the pool.
// Zero requests nothing (with a CPU limit, an explicit zero: the API
// server would otherwise make the request the limit).
func WithCPURequest(cpus float64) Option {
	return func(c *config) error {
		if cpus < 0 || math.IsNaN(cpus) || math.IsInf(cpus, 0) {
			return fmt.Errorf("CPU request must be a non-negative number, got %v", cpus)
		}
		if cpus > 0 && cpus < 0.001 {
			return fmt.Errorf("CPU request %v is below Kubernetes' smallest, 0.001 (1m)", cpus)
		}
		c.cpuRequest = int64(math.Round(cpus * 1000))
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

// connectTimeout bounds connecting to containerd.
const connectTimeout = 5 * time.Second

// New connects to the API server and the node's containerd and checks that
// both answer; an unreachable one is reported as *engine.UnavailableError.
func New(ctx context.Context, opts ...Option) (*Engine, error) {
	cfg := config{
		containerd:  DefaultContainerd,
		snapshotter: DefaultSnapshotter,
		cpuRequest:  int64(math.Round(DefaultCPURequest * 1000)),
		log:         slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("configuring kubernetes engine: %w", err)
		}
	}
	rc, ns, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.namespace != "" {
		ns = cfg.namespace
	}
	if cfg.node == "" {
		if cfg.node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("finding the node name: %w", err)
		}
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	cs, err := kubernetes.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	e := &Engine{
		pods:        cs.CoreV1().Pods(ns),
		httpClient:  hc,
		apiHost:     rc.Host,
		ctrdAddr:    cfg.containerd,
		namespace:   ns,
		node:        cfg.node,
		snapshotter: cfg.snapshotter,
		cpuRequest:  cfg.cpuRequest,
		log:         cfg.log,
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		utilnet.CloseIdleConnectionsFor(hc.Transport)
		return nil, e.wrap("asking the API server for its version", err)
	}
	// A missing socket fails here at once; the client would retry it until
	// its timeout.
	if path, ok := strings.CutPrefix(cfg.containerd, "unix://"); ok || !strings.Contains(cfg.containerd, "://") {
		if _, err := os.Stat(path); err != nil {
			utilnet.CloseIdleConnectionsFor(hc.Transport)
			return nil, fmt.Errorf("connecting to containerd: %w", &engine.UnavailableError{Engine: "containerd", Host: cfg.containerd, Err: err})
		}
	}
	ctrd, err := containerd.New(cfg.containerd, containerd.WithDefaultNamespace(ContainerdNamespace), containerd.WithTimeout(connectTimeout))
	if err != nil {
		utilnet.CloseIdleConnectionsFor(hc.Transport)
		return nil, fmt.Errorf("connecting to containerd: %w", &engine.UnavailableError{Engine: "containerd", Host: cfg.containerd, Err: err})
	}
	e.ctrd = ctrd
	if err := e.Ping(ctx); err != nil {
		_ = e.Close()
		return nil, err
	}
	e.log.Debug("connected to kubernetes", "api", rc.Host, "namespace", ns, "node", cfg.node, "containerd", cfg.containerd)
	return e, nil
}

// restConfig loads the client configuration: the given one, a kubeconfig
// file, or the pod's service account; and the namespace it names.
func restConfig(cfg config) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.kubeconfig != "" {
		rules.ExplicitPath = cfg.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	ns := "default"
	if cfg.rest == nil || cfg.namespace == "" {
		if n, _, err := cc.Namespace(); err == nil && n != "" {
			ns = n
		}
	}
	rc := cfg.rest
	if rc == nil {
		var err error
		if rc, err = cc.ClientConfig(); err != nil {
			// No kubeconfig and not in a pod: there is no API server to
			// talk to, as with Docker's missing default socket.
			return nil, "", fmt.Errorf("loading the Kubernetes client configuration: %w", &engine.UnavailableError{Engine: "the Kubernetes API server", Err: err})
		}
	}
	rc = rest.CopyConfig(rc)
	// The runtime's requests are few and latency-bound: client-side
	// throttling would only add delay to container starts.
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 200, 400
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "ociapp-runtime"
	}
	return rc, ns, nil
}

// Close releases the connections to containerd and the API server.
func (e *Engine) Close() error {
	// The client's transport is wrapped (authentication, user agent):
	// CloseIdleConnectionsFor finds the HTTP/2 connections underneath.
	utilnet.CloseIdleConnectionsFor(e.httpClient.Transport)
	if e.ctrd != nil {
		return e.ctrd.Close()
	}
	return nil
}

// Namespace returns the namespace of the pods.
func (e *Engine) Namespace() string { return e.namespace }

// Node returns the node that runs the pods.
func (e *Engine) Node() string { return e.node }

// Ping checks that the API server and containerd answer; a failure is
// *engine.UnavailableError (or the context's error).
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.pods.List(ctx, listOne); err != nil {
		return e.wrap("listing pods", err)
	}
	if _, err := e.ctrd.Version(ctx); err != nil {
		return e.wrapContainerd("asking containerd for its version", err)
	}
	return nil
}

// wrap maps an API error to the engine's error types: connection failures
// become *engine.UnavailableError and missing pods wrap engine.ErrNotFound.
func (e *Engine) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", op, engine.ErrNotFound, err)
	case isConnErr(err):
		return fmt.Errorf("%s: %w", op, &engine.UnavailableError{Engine: "the Kubernetes API server", Host: e.apiHost, Err: err})
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

func isConnErr(err error) bool {
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) ||
		apierrors.IsServiceUnavailable(err)
}

// wrapContainerd maps a containerd error like wrap does.
func (e *Engine) wrapContainerd(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", op, engine.ErrNotFound, err)
	case cerrdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable || isConnErr(err):
		return fmt.Errorf("%s: %w", op, &engine.UnavailableError{Engine: "containerd", Host: e.ctrdAddr, Err: err})
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}
