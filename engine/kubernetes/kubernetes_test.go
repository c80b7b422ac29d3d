package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The test cluster of scripts/ensure-kubernetes.sh, unless the environment
// (its env file) says otherwise.
const (
	testKubeconfig = "/var/lib/ociapp-k8s/admin.kubeconfig"
	testContainerd = "/run/ociapp-k8s/containerd.sock"
	// testSandboxImage is the cluster's pause image, always on its node.
	testSandboxImage = "localhost/ociapp-k8s-pause:1"
)

func testClusterOptions() []Option {
	opts := []Option{WithContainerd(testContainerd)}
	if s := os.Getenv("OCIAPP_K8S_CONTAINERD"); s != "" {
		opts = []Option{WithContainerd(s)}
	}
	if os.Getenv("KUBECONFIG") == "" {
		opts = append(opts, WithKubeconfig(testKubeconfig))
	}
	if n := os.Getenv("OCIAPP_K8S_NODE"); n != "" {
		opts = append(opts, WithNode(n))
	}
	return opts
}

// requireCluster returns an engine on the test cluster. Without one the
// test is skipped, or fails when CI=true.
func requireCluster(t testing.TB, opts ...Option) *Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := New(ctx, append(testClusterOptions(), opts...)...)
	if err != nil {
		testenv.Need(t, "the test cluster", "start it with scripts/ensure-kubernetes.sh", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func TestUnreachableAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := New(ctx, WithRESTConfig(&rest.Config{Host: "https://127.0.0.1:1"}), WithNode("n"))
	var ue *engine.UnavailableError
	if !errors.As(err, &ue) || ue.Engine != "the Kubernetes API server" || ue.Host != "https://127.0.0.1:1" {
		t.Fatalf("got %v, want *engine.UnavailableError for the API server", err)
	}
}

func TestUnreachableContainerd(t *testing.T) {
	requireCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := New(ctx, append(testClusterOptions(), WithContainerd("/nonexistent/containerd.sock"))...)
	var ue *engine.UnavailableError
	if !errors.As(err, &ue) || ue.Engine != "containerd" || ue.Host != "/nonexistent/containerd.sock" {
		t.Fatalf("got %v, want *engine.UnavailableError for containerd", err)
	}
}

// TestImageTheNodeLacks: a pod whose image the node does not have fails
// to start at once (the kubelet's ErrImageNeverPull), with an error that
// wraps engine.ErrNotFound, instead of waiting out the startup timeout.
func TestImageTheNodeLacks(t *testing.T) {
	e := requireCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id, err := e.CreateContainer(ctx, engine.ContainerSpec{
		Name:   "ociapp-test-missing-image-" + randomSuffix(),
		Image:  "ociapp.local/no-such-image:1",
		User:   "65532:65532",
		Labels: map[string]string{"dev.ociapp.test": "missing-image"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.RemoveContainer(context.Background(), id); err != nil {
			t.Error(err)
		}
	}()
	err = e.StartContainer(ctx, id)
	if !errors.Is(err, engine.ErrNotFound) || !strings.Contains(err.Error(), "node has no image ociapp.local/no-such-image:1") {
		t.Fatalf("got %v, want a missing image error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the start waited for the deadline")
	}
	list, err := e.ListContainers(ctx, map[string]string{"dev.ociapp.test": "missing-image"})
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].State != "created" || list[0].Labels["dev.ociapp.test"] != "missing-image" {
		t.Fatalf("listed %+v, %v; want the pod, not started", list, err)
	}
}

// TestCPULimitedPodsFitTheNode: pods whose CPU limit is the whole node
// request only the engine's CPU request, so that a pool of them is
// admitted. With the limit as their request, the API server's default, the
// kubelet would refuse the second (OutOfcpu).
func TestCPULimitedPodsFitTheNode(t *testing.T) {
	e := requireCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	suffix := randomSuffix()
	for i := range 2 {
		id, err := e.CreateContainer(ctx, engine.ContainerSpec{
			Name:     fmt.Sprintf("ociapp-test-cpu-limit-%d-%s", i, suffix),
			Image:    testSandboxImage,
			User:     "65532:65532",
			NanoCPUs: int64(goruntime.NumCPU()) * 1e9,
			Labels:   map[string]string{"dev.ociapp.test": "cpu-limit"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := e.RemoveContainer(context.Background(), id); err != nil {
				t.Error(err)
			}
		}()
		if err := e.StartContainer(ctx, id); err != nil {
			t.Fatalf("pod %d of 2, each limited to the node's %d CPUs: %v", i+1, goruntime.NumCPU(), err)
		}
	}
}

func randomSuffix() string {
	return strings.ToLower(strings.ReplaceAll(time.Now().Format("150405.000000"), ".", ""))
}
