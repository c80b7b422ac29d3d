package kubernetes

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ociapp/ociapp/engine"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// hardenedSpec is what the runtime asks for by default.
func hardenedSpec() engine.ContainerSpec {
	return engine.ContainerSpec{
		Name:  "ociapp-echo_Go-1a2b3c4d-5e6f7a8b",
		Image: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		Cmd:   []string{"serve", "--busy-poll=0"},
		Env:   []string{"A=1", "B=x=y"},
		User:  "65532:65532",
		Labels: map[string]string{
			"dev.ociapp.runtime":           "1",
			"dev.ociapp.runtime.instance":  "1a2b3c4d",
			"dev.ociapp.runtime.state-dir": "/run/ociapp-runtime",
			"dev.ociapp.artifact.digest":   "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"dev.ociapp.artifact.name":     "echo-go",
		},
		Mounts:          []engine.Mount{{Source: "/run/ociapp-runtime/1a2b3c4d/5e6f7a8b", Target: "/run/ociapp"}},
		Init:            true,
		ReadOnlyRootfs:  true,
		Tmpfs:           map[string]string{"/tmp": "rw,nosuid,nodev,size=64m"},
		CapDrop:         []string{"ALL"},
		NoNewPrivileges: true,
		PidsLimit:       256,
		MemoryBytes:     1 << 30,
		NanoCPUs:        1_500_000_000,
		NetworkMode:     "none",
		StopTimeout:     10 * time.Second,
	}
}

func TestPodForGolden(t *testing.T) {
	pod, err := podFor(hardenedSpec(), "docker.io/library/echo-go@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "apps", "node-1", 100)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "pod.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pod differs from %s (rerun with -update if the change is meant):\n%s", golden, got)
	}
}

func TestPodForHardening(t *testing.T) {
	pod, err := podFor(hardenedSpec(), "img", "apps", "node-1", 100)
	if err != nil {
		t.Fatal(err)
	}
	s := pod.Spec
	c := s.Containers[0]
	checks := []struct {
		what string
		ok   bool
	}{
		{"pinned to the node", s.NodeName == "node-1"},
		{"never restarted", s.RestartPolicy == corev1.RestartPolicyNever},
		{"no service account token", s.AutomountServiceAccountToken != nil && !*s.AutomountServiceAccountToken},
		{"no service links", s.EnableServiceLinks != nil && !*s.EnableServiceLinks},
		{"grace period from the stop timeout", *s.TerminationGracePeriodSeconds == 10},
		{"seccomp RuntimeDefault", s.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
		{"non-root", *s.SecurityContext.RunAsNonRoot && *s.SecurityContext.RunAsUser == 65532 && *s.SecurityContext.RunAsGroup == 65532},
		{"an init reaps orphans", s.ShareProcessNamespace != nil && *s.ShareProcessNamespace},
		{"not on the host network", !s.HostNetwork},
		{"image never pulled", c.ImagePullPolicy == corev1.PullNever},
		{"read-only root", *c.SecurityContext.ReadOnlyRootFilesystem},
		{"no privilege escalation", !*c.SecurityContext.AllowPrivilegeEscalation},
		{"all capabilities dropped", len(c.SecurityContext.Capabilities.Drop) == 1 && c.SecurityContext.Capabilities.Drop[0] == "ALL"},
		{"memory limit", c.Resources.Limits.Memory().Value() == 1<<30},
		{"CPU limit", c.Resources.Limits.Cpu().MilliValue() == 1500},
		{"command kept as arguments to the entrypoint", strings.Join(c.Args, " ") == "serve --busy-poll=0" && len(c.Command) == 0},
		{"environment", len(c.Env) == 2 && c.Env[1].Name == "B" && c.Env[1].Value == "x=y"},
		{"valid pod name", len(validation.IsDNS1123Subdomain(pod.Name)) == 0 && pod.Name == "ociapp-echo-go-1a2b3c4d-5e6f7a8b"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("pod is not %s", c.what)
		}
	}
	var sock, tmp *corev1.Volume
	for i, v := range s.Volumes {
		switch {
		case v.HostPath != nil:
			sock = &s.Volumes[i]
		case v.EmptyDir != nil:
			tmp = &s.Volumes[i]
		}
	}
	if sock == nil || sock.HostPath.Path != "/run/ociapp-runtime/1a2b3c4d/5e6f7a8b" || *sock.HostPath.Type != corev1.HostPathDirectory {
		t.Errorf("socket directory volume %+v, want the runtime's directory, which must exist", sock)
	}
	if tmp == nil || tmp.EmptyDir.Medium != corev1.StorageMediumMemory || tmp.EmptyDir.SizeLimit.Value() != 64<<20 {
		t.Errorf("/tmp volume %+v, want 64 MiB of memory", tmp)
	}
	for k, v := range pod.Labels {
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label %s=%q is invalid: %v", k, v, errs)
		}
	}
	got := originalLabels(pod)
	for k, v := range hardenedSpec().Labels {
		if got[k] != v {
			t.Errorf("label %s reads back as %q, want %q", k, got[k], v)
		}
	}
}

func TestPodForRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*engine.ContainerSpec)
		want string
	}{
		{"user name", func(s *engine.ContainerSpec) { s.User = "app" }, `user "app" is not numeric`},
		{"negative gid", func(s *engine.ContainerSpec) { s.User = "1:-1" }, "not numeric"},
		{"tmpfs size", func(s *engine.ContainerSpec) { s.Tmpfs = map[string]string{"/tmp": "size=lots"} }, `invalid size "lots"`},
		{"label key", func(s *engine.ContainerSpec) { s.Labels = map[string]string{"a b": "c"} }, `label key "a b"`},
		{"label value not UTF-8", func(s *engine.ContainerSpec) { s.Labels = map[string]string{"dev.ociapp.artifact.name": "\xff"} }, "is not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := hardenedSpec()
			tc.edit(&spec)
			_, err := podFor(spec, "img", "ns", "node", 100)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPodForRootAndHostNetwork(t *testing.T) {
	spec := hardenedSpec()
	spec.User, spec.NetworkMode, spec.Init, spec.MemoryBytes, spec.NanoCPUs = "0", "host", false, 0, 0
	pod, err := podFor(spec, "img", "ns", "node", 100)
	if err != nil {
		t.Fatal(err)
	}
	if *pod.Spec.SecurityContext.RunAsNonRoot || !pod.Spec.HostNetwork || pod.Spec.ShareProcessNamespace != nil || len(pod.Spec.Containers[0].Resources.Limits) != 0 {
		t.Fatalf("pod spec %+v: want root allowed, host network, no init, no limits", pod.Spec)
	}
	spec.User, spec.Name = "", ""
	if pod, err = podFor(spec, "img", "ns", "node", 100); err != nil || pod.Spec.SecurityContext.RunAsUser != nil || pod.GenerateName != "ociapp-" {
		t.Fatalf("image's own user: %+v, %v", pod, err)
	}
}

func TestLabelSelector(t *testing.T) {
	sel, err := labelSelector(map[string]string{"dev.ociapp.runtime.state-dir": "/run/x", "dev.ociapp.runtime": ""})
	if err != nil {
		t.Fatal(err)
	}
	want := LabelManagedBy + "=ociapp-runtime,dev.ociapp.runtime,dev.ociapp.runtime.state-dir=" + labelValue("/run/x")
	if sel != want {
		t.Fatalf("selector %q, want %q", sel, want)
	}
	if v := labelValue("/run/x"); len(validation.IsValidLabelValue(v)) > 0 || v == labelValue("/run/y") {
		t.Fatalf("encoded value %q is invalid or not distinct", v)
	}
	if v := labelValue("echo-go"); v != "echo-go" {
		t.Fatalf("valid value changed to %q", v)
	}
}

func TestTmpfsOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		size int64
		ro   bool
	}{
		{"rw,nosuid,size=64m", 64 << 20, false},
		{"size=2g,ro", 2 << 30, true},
		{"size=512k", 512 << 10, false},
		{"size=1000", 1000, false},
		{"", 0, false},
	} {
		size, ro, err := tmpfsOptions(tc.in)
		if err != nil || size != tc.size || ro != tc.ro {
			t.Errorf("tmpfsOptions(%q) = %d, %v, %v; want %d, %v", tc.in, size, ro, err, tc.size, tc.ro)
		}
	}
	if _, _, err := tmpfsOptions("size=99999999999g"); err == nil {
		t.Error("an overflowing size was accepted")
	}
}

func TestStateOf(t *testing.T) {
	started := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	pod := func(phase corev1.PodPhase, st corev1.ContainerState) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Status: corev1.PodStatus{Phase: phase, Reason: "OutOfmemory", Message: "node lacks memory",
				ContainerStatuses: []corev1.ContainerStatus{{Name: containerName, State: st}}},
		}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want engine.ContainerState
	}{
		{"creating", pod(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}),
			engine.ContainerState{ID: "p", Status: "created"}},
		{"missing image", pod(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: "no image"}}),
			engine.ContainerState{ID: "p", Status: "created", Error: "ErrImageNeverPull: no image"}},
		{"running", pod(corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}),
			engine.ContainerState{ID: "p", Status: "running", Running: true, StartedAt: started.Time}},
		{"exited", pod(corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}),
			engine.ContainerState{ID: "p", Status: "exited", ExitCode: 3}},
		{"OOM killed", pod(corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}),
			engine.ContainerState{ID: "p", Status: "exited", ExitCode: 137, OOMKilled: true}},
		{"could not start", pod(corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: "exec: no such file"}}),
			engine.ContainerState{ID: "p", Status: "exited", ExitCode: 128, Error: "StartError: exec: no such file"}},
		{"refused by the node", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "OutOfmemory", Message: "node lacks memory"}},
			engine.ContainerState{ID: "p", Status: "exited", Error: "OutOfmemory: node lacks memory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stateOf(tc.pod); got != tc.want {
				t.Fatalf("state %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStartedOrFailed(t *testing.T) {
	waiting := func(reason string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{
			{Name: containerName, Image: "img", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}},
		}}}
	}
	if done, err := startedOrFailed(waiting("ContainerCreating")); done || err != nil {
		t.Errorf("creating: %v, %v; want to wait on", done, err)
	}
	if _, err := startedOrFailed(waiting("ErrImageNeverPull")); err == nil || !strings.Contains(err.Error(), "no image img") {
		t.Errorf("missing image: %v", err)
	}
	if _, err := startedOrFailed(waiting("CreateContainerConfigError")); err == nil {
		t.Error("a config error is waited on")
	}
	refused := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "OutOfcpu", Message: "no room"}}
	if _, err := startedOrFailed(refused); err == nil || !strings.Contains(err.Error(), "refused the pod: OutOfcpu: no room") {
		t.Errorf("refused: %v", err)
	}
}

// TestPodForCPURequest: every pod requests some CPU for its weight, never
// more than its limit; a limit alone would make the request the limit,
// and a pool of such pods would not fit the node (OutOfcpu).
func TestPodForCPURequest(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nanoCPUs    int64
		request     int64
		wantRequest string // "" for none
		wantLimit   string // "" for none
	}{
		{name: "no limit", request: 100, wantRequest: "100m"},
		{name: "no limit, no request", request: 0},
		{name: "limit above the request", nanoCPUs: 1_500_000_000, request: 100, wantRequest: "100m", wantLimit: "1500m"},
		{name: "limit below the request", nanoCPUs: 50_000_000, request: 100, wantRequest: "50m", wantLimit: "50m"},
		{name: "limit, no request", nanoCPUs: 2_000_000_000, request: 0, wantRequest: "0", wantLimit: "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := hardenedSpec()
			spec.NanoCPUs = tc.nanoCPUs
			pod, err := podFor(spec, "img", "ns", "node", tc.request)
			if err != nil {
				t.Fatal(err)
			}
			res := pod.Spec.Containers[0].Resources
			req, hasReq := res.Requests[corev1.ResourceCPU]
			if got := map[bool]string{true: req.String()}[hasReq]; got != tc.wantRequest {
				t.Errorf("CPU request %q, want %q", got, tc.wantRequest)
			}
			limit, hasLimit := res.Limits[corev1.ResourceCPU]
			if got := map[bool]string{true: limit.String()}[hasLimit]; got != tc.wantLimit {
				t.Errorf("CPU limit %q, want %q", got, tc.wantLimit)
			}
			if _, ok := res.Requests[corev1.ResourceMemory]; ok {
				t.Error("memory request set: it is the API server's to default")
			}
		})
	}
}

func TestWithCPURequest(t *testing.T) {
	for _, tc := range []struct {
		cpus    float64
		want    int64
		wantErr string
	}{
		{cpus: 0.25, want: 250},
		{cpus: 2, want: 2000},
		{cpus: 0, want: 0},
		{cpus: DefaultCPURequest, want: 100},
		{cpus: -1, wantErr: "non-negative"},
		{cpus: math.NaN(), wantErr: "non-negative"},
		{cpus: math.Inf(1), wantErr: "non-negative"},
		{cpus: 0.0004, wantErr: "smallest"},
	} {
		var c config
		err := WithCPURequest(tc.cpus)(&c)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("WithCPURequest(%v): error %v, want one containing %q", tc.cpus, err, tc.wantErr)
			}
		case err != nil || c.cpuRequest != tc.want:
			t.Errorf("WithCPURequest(%v) = %dm, %v; want %dm", tc.cpus, c.cpuRequest, err, tc.want)
		}
	}
}
