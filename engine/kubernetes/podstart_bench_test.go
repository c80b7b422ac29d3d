package kubernetes

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ociapp/ociapp/engine"
)

// BenchmarkPodStart measures where the kubelet spends a pod's start, for
// the pod the runtime makes (a hostPath socket directory and an emptyDir
// /tmp) and for the same pod with fewer volumes or on the host network,
// interleaved so that each round sees the same machine load:
//
//	go test ./engine/kubernetes -run '^$' -bench PodStart -benchtime 10x
//
// Times come from containerd's task events: "sandbox" from the pod's POST
// to its sandbox's start (volume set-up, the pod network, the pause
// process), "app" from there to the app container's start. The container
// runs the pause image, so the app's own start-up is not in the figures.
func BenchmarkPodStart(b *testing.B) {
	e := requireCluster(b)
	if ok, err := e.ImageExists(b.Context(), testSandboxImage); err != nil || !ok {
		b.Fatalf("the test cluster's image %s is missing (%v): restart it with scripts/ensure-kubernetes.sh", testSandboxImage, err)
	}
	variants := []struct {
		name string
		edit func(*engine.ContainerSpec)
	}{
		{"hostpath+emptydir", func(*engine.ContainerSpec) {}},
		{"hostpath", func(s *engine.ContainerSpec) { s.Tmpfs = nil }},
		{"novolume", func(s *engine.ContainerSpec) { s.Tmpfs, s.Mounts = nil, nil }},
		{"novolume-hostnet", func(s *engine.ContainerSpec) { s.Tmpfs, s.Mounts, s.NetworkMode = nil, nil, "host" }},
	}
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	events, errs := e.ctrd.Subscribe(ctx, `namespace=="k8s.io",topic=="/tasks/start"`)
	// taskStart waits for the start of the pod's sandbox or app container.
	taskStart := func(pod, kind string) time.Time {
		for {
			select {
			case ev := <-events:
				v, err := typeurl.UnmarshalAny(ev.Event)
				if err != nil {
					b.Fatal(err)
				}
				start, ok := v.(*eventtypes.TaskStart)
				if !ok {
					continue
				}
				c, err := e.ctrd.LoadContainer(ctx, start.ContainerID)
				if err != nil {
					continue // gone already
				}
				labels, err := c.Labels(ctx)
				if err != nil {
					continue
				}
				if labels["io.kubernetes.pod.name"] == pod && labels["io.cri-containerd.kind"] == kind {
					return ev.Timestamp
				}
			case err := <-errs:
				b.Fatalf("containerd events: %v", err)
			case <-time.After(time.Minute):
				b.Fatalf("pod %s: no %s started within a minute", pod, kind)
			}
		}
	}
	phases := map[string][]time.Duration{}
	dir := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		for _, v := range variants {
			spec := hardenedSpec()
			spec.Name = fmt.Sprintf("ociapp-bench-podstart-%s-%d-%s", v.name, i, randomSuffix())
			spec.Image, spec.Cmd, spec.Env, spec.Mounts[0].Source = testSandboxImage, nil, nil, dir
			v.edit(&spec)
			pod, err := podFor(spec, testSandboxImage, e.namespace, e.node, e.cpuRequest)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, err := e.pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			sandbox := taskStart(pod.Name, "sandbox")
			app := taskStart(pod.Name, "container")
			phases[v.name+"-sandbox"] = append(phases[v.name+"-sandbox"], sandbox.Sub(t0))
			phases[v.name+"-app"] = append(phases[v.name+"-app"], app.Sub(sandbox))
			phases[v.name+"-total"] = append(phases[v.name+"-total"], app.Sub(t0))
			b.StopTimer()
			if err := e.RemoveContainer(ctx, pod.Name); err != nil {
				b.Fatal(err)
			}
			if _, err := e.watchPod(ctx, pod.Name, func(p *corev1.Pod) (bool, error) { return p == nil, nil }); err != nil {
				b.Fatal(err)
			}
			// Let the kubelet tear the sandbox down before the next start.
			time.Sleep(time.Second)
			b.StartTimer()
		}
	}
	b.StopTimer()
	for name, ds := range phases {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1e3, name+"-ms")
	}
}
