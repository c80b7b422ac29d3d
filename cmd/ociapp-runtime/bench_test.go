package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine/kubernetes"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/loadgen"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestParseBenchArgs(t *testing.T) {
	// The payload keeps the JSON's key order.
	hello, _ := protocol.EncodePayload(struct {
		Value string `json:"value"`
		N     int64  `json:"n"`
	}{"hello", 3})
	empty, _ := protocol.EncodePayload(map[string]any{})
	defaults := benchConfig{
		artifact:    "a.ociapp",
		payloadJSON: "{}",
		payload:     empty,
		concurrency: 1,
		requests:    defaultBenchRequests,
		warmup:      defaultBenchWarmup,
		runtime: runtimeFlags{
			memory:               "1g",
			maxContainers:        runtime.DefaultMaxContainers(),
			busyPoll:             protocol.DefaultBusyPoll,
			requestTimeout:       runtime.DefaultRequestTimeout,
			containerConcurrency: runtime.DefaultContainerConcurrency,
		},
		engine: engineFlags{kind: engineDocker, containerd: kubernetes.DefaultContainerd, cpuRequest: kubernetes.DefaultCPURequest, cgroup: cgroupParentAuto},
	}
	with := func(f func(*benchConfig)) benchConfig {
		c := defaults
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		args    []string
		want    benchConfig
		wantErr string
	}{
		{name: "defaults", args: []string{"a.ociapp"}, want: defaults},
		{name: "flags after the artifact", args: []string{"a.ociapp", "-c", "64", "-n", "500", "--warmup", "0", "--cold", "3", "--json"},
			want: with(func(c *benchConfig) { c.concurrency, c.requests, c.warmup, c.cold, c.json = 64, 500, 0, 3, true })},
		{name: "flags on both sides", args: []string{"-c=8", "a.ociapp", "--payload", `{"value": "hello", "n": 3}`},
			want: with(func(c *benchConfig) {
				c.concurrency, c.payloadJSON, c.payload = 8, `{"value": "hello", "n": 3}`, hello
			})},
		{name: "duration replaces the count", args: []string{"a.ociapp", "-d", "30s"},
			want: with(func(c *benchConfig) { c.requests, c.duration = 0, 30*time.Second })},
		{name: "runtime flags", args: []string{"--max-containers", "4", "--container-concurrency", "16", "--request-timeout", "2s", "--busy-poll", "0", "--cpus", "1.5", "--memory", "512m", "--docker-host", "unix:///x.sock", "--state-dir", "/tmp/s", "-v", "a.ociapp"},
			want: with(func(c *benchConfig) {
				r := &c.runtime
				r.maxContainers, r.containerConcurrency, r.requestTimeout, r.busyPoll, r.cpus = 4, 16, 2*time.Second, 0, 1.5
				r.memory, c.engine.dockerHost, r.stateDir, c.verbose = "512m", "unix:///x.sock", "/tmp/s", true
			})},
		{name: "kubernetes", args: []string{"--engine", "kubernetes", "--node", "n1", "--namespace", "apps", "--kubeconfig", "/k", "--containerd", "/c.sock", "--pod-cpu-request", "0.5", "a.ociapp"},
			want: with(func(c *benchConfig) {
				c.engine = engineFlags{kind: engineKubernetes, node: "n1", namespace: "apps", kubeconfig: "/k", containerd: "/c.sock", cpuRequest: 0.5, cgroup: cgroupParentAuto}
			})},
		{name: "unknown engine", args: []string{"--engine", "podman", "a.ociapp"}, wantErr: `--engine "podman": use "docker" or "kubernetes"`},
		{name: "artifact only", args: []string{"a.ociapp", "-n", "0"}, want: with(func(c *benchConfig) { c.requests = 0 })},
		{name: "no artifact", args: []string{"-c", "2"}, wantErr: "missing the artifact"},
		{name: "two artifacts", args: []string{"a.ociapp", "b.ociapp"}, wantErr: "one artifact at a time"},
		{name: "count and duration", args: []string{"a.ociapp", "-n", "5", "-d", "1s"}, wantErr: "not both"},
		{name: "zero concurrency", args: []string{"a.ociapp", "-c", "0"}, wantErr: "-c must be at least 1"},
		{name: "negative count", args: []string{"a.ociapp", "-n", "-1"}, wantErr: "-n must not be negative"},
		{name: "zero duration", args: []string{"a.ociapp", "-d", "0s"}, wantErr: "-d must be positive"},
		{name: "negative warm-up", args: []string{"a.ociapp", "--warmup", "-5"}, wantErr: "--warmup"},
		{name: "negative cold", args: []string{"a.ociapp", "--cold", "-1"}, wantErr: "--cold"},
		{name: "negative limit", args: []string{"a.ociapp", "--max-containers", "-1"}, wantErr: "must not be negative"},
		{name: "negative busy poll", args: []string{"a.ociapp", "--busy-poll", "-1us"}, wantErr: "--busy-poll"},
		{name: "payload not an object", args: []string{"a.ociapp", "--payload", "[1]"}, wantErr: "--payload: the request must be a JSON object"},
		{name: "payload not JSON", args: []string{"a.ociapp", "--payload", "{"}, wantErr: "--payload: the request is not valid JSON"},
		{name: "bad memory", args: []string{"a.ociapp", "--memory", "lots"}, wantErr: "--memory"},
		{name: "unknown flag", args: []string{"a.ociapp", "--nope"}, wantErr: "flag provided but not defined"},
		{name: "bad number", args: []string{"a.ociapp", "-n", "many"}, wantErr: "invalid value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBenchArgs(tt.args, io.Discard, func(string) string { return "" })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Which runtime flags bench offers is seen in the cases above.
			tt.want.runtime.registered = got.runtime.registered
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runBench(t.Context(), []string{"-h"}, &stdout, &stderr); code != exitOK {
		t.Errorf("-h exits %d, want %d", code, exitOK)
	}
	for _, want := range []string{"usage: ociapp-runtime bench ARTIFACT", "-payload", "-cold", "-json"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stderr.String())
		}
	}
	stderr.Reset()
	if code := runBench(t.Context(), []string{"a.ociapp", "-c", "0"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("bad flag exits %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr.String(), "-c must be at least 1") || stdout.Len() != 0 {
		t.Errorf("bad flag: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestBenchMissingArtifact(t *testing.T) {
	dockertest.Engine(t)
	var stdout, stderr bytes.Buffer
	code := runBench(t.Context(), []string{"--state-dir", testenv.ShortTempDir(t), "/no/such.ociapp"}, &stdout, &stderr)
	if code != exitBenchFailed || !strings.Contains(stderr.String(), "/no/such.ociapp") || stdout.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestErrorType(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&runtime.AppError{Type: "ValidationError", Message: "bad"}, "app:ValidationError"},
		{fmt.Errorf("wrapped: %w", &runtime.AppError{Type: "KeyError"}), "app:KeyError"},
		{&runtime.RequestTimeoutError{Artifact: "a", Timeout: time.Second}, "timeout"},
		{&runtime.OverloadedError{Artifact: "a", Queued: 3}, "overloaded"},
		{&runtime.WorkerCrashError{Artifact: "a", Reason: "exited"}, "worker_crash"},
		{&runtime.StartupError{Artifact: "a", Reason: "exited"}, "startup"},
		{&runtime.ArtifactError{Path: "a", Err: errors.New("corrupt")}, "artifact"},
		{fmt.Errorf("x: %w", &runtime.EngineUnavailableError{}), "engine_unavailable"},
		{&protocol.PayloadError{Message: "not a map"}, "payload"},
		{runtime.ErrClosed, "closed"},
		{fmt.Errorf("executing: %w", context.Canceled), "canceled"},
		{context.DeadlineExceeded, "deadline"},
		{errors.New("something else"), "other"},
	}
	for _, tt := range tests {
		if got := errorType(tt.err); got != tt.want {
			t.Errorf("errorType(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// sampleReport is a report with every section filled, built the way bench
// builds it from a loadgen result.
func sampleReport() *benchReport {
	run := newRunReport(loadgen.Result{
		Succeeded: 9990,
		Failed:    10,
		Elapsed:   1250 * time.Millisecond,
		Latency: loadgen.Summary{
			Count: 9990, Exact: true,
			Min: 18200, Mean: 31500, P50: 28700, P90: 41300, P99: 97100, Max: 2400000,
		},
		Errors: []loadgen.ErrorCount{
			{Type: "app:ValidationError", Count: 7, Example: "ValidationError: application payload validation failed"},
			{Type: "timeout", Count: 3, Example: "request to echo-go 0.1.0 timed out after 1s; raise the request timeout or make the request cheaper"},
		},
	})
	containersUS := 11.75
	run.CPU = &cpuReport{CallerUSPerRequest: 14.5, ContainersUSPerRequest: &containersUS, CallerS: 0.145, ContainersS: 0.1175, Containers: 2}
	return &benchReport{
		Artifact: artifactReport{
			Path:         "dist/echo-go-0.1.0.ociapp",
			Name:         "echo-go",
			Version:      "0.1.0",
			Digest:       "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ConfigDigest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
			SizeBytes:    1380352,
			VerifyMS:     4.25,
			CheckMS:      1.5,
			LoadMS:       812.5,
		},
		Settings:   benchSettings{Concurrency: 64, Requests: 10000, Warmup: 1000, Cold: 3, PayloadBytes: 13, MaxContainers: 2},
		Run:        run,
		ColdStart:  &coldReport{SamplesMS: []float64{231.5, 210.25, 250}, MinMS: 210.25, P50MS: 231.5, MaxMS: 250},
		Containers: containerReport{Started: 2, Peak: 2, Max: 2},
	}
}

func TestBenchReportGolden(t *testing.T) {
	rep := sampleReport()
	hist := sampleReport()
	hist.Settings.Requests, hist.Settings.DurationS = 0, 30
	hist.Run.LatencyUS.Recording, hist.Run.LatencyUS.MaxErrorPct = "histogram", 0.390625
	hist.Run.Errors = []errorReport{}
	hist.Run.CPU = &cpuReport{CallerUSPerRequest: 20, CallerS: 0.6, ContainersUnavailable: "finding the cgroup of container 0123456789ab under /sys/fs/cgroup: no cgroup of the container on this host"}
	hist.Artifact.ImagePresent, hist.Artifact.LoadMS = true, 0
	hist.ColdStart = &coldReport{SamplesMS: []float64{}, Failed: 2, Errors: []errorReport{{Type: "startup", Count: 2, Example: "container for echo-go 0.1.0 failed to start: exited\nlast lines"}}}
	hist.Interrupted = true

	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		t.Fatal(err)
	}
	golden(t, "bench-report.json", js.Bytes())

	var text bytes.Buffer
	writeBenchText(&text, rep)
	text.WriteString("---\n")
	writeBenchText(&text, hist)
	golden(t, "bench-report.txt", text.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (rerun with -update if the change is intended)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestStatusLine(t *testing.T) {
	var quiet bytes.Buffer
	s := newStatusLine(&quiet) // not a terminal: draws nothing
	s.show("starting")
	s.progress("measuring", loadgen.Progress{Done: 5}, 10, 1)
	s.clear()
	if quiet.Len() != 0 {
		t.Errorf("status line drawn on a non-terminal: %q", quiet.String())
	}

	tests := []struct {
		total int
		want  string
	}{
		{5000, "measuring: 1200/5000 requests, 800 req/s, 3 errors, 2 containers, 1.5s"},
		{0, "measuring: 1200 requests, 800 req/s, 3 errors, 2 containers, 1.5s"}, // -d: no total
	}
	for _, tt := range tests {
		if got := progressText("measuring", loadgen.Progress{Elapsed: 1500 * time.Millisecond, Done: 1200, Failed: 3, Rate: 800.4}, tt.total, 2); got != tt.want {
			t.Errorf("progress of %d: %q, want %q", tt.total, got, tt.want)
		}
	}
}

func TestBenchEndToEnd(t *testing.T) {
	dockertest.Engine(t)
	art := testArtifact(t, "echo-go")
	state := testenv.ShortTempDir(t)

	var stdout, stderr bytes.Buffer
	args := []string{art, "--state-dir", state, "--payload", `{"value": "hi"}`, "-n", "200", "-c", "4", "--warmup", "20", "--cold", "2", "--json"}
	code := runBench(t.Context(), args, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet got %q", stderr.String())
	}
	var rep benchReport
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout.String())
	}
	if rep.Artifact.Name != "echo-go" || !strings.HasPrefix(rep.Artifact.Digest, "sha256:") || rep.Artifact.SizeBytes <= 0 || rep.Artifact.VerifyMS <= 0 {
		t.Errorf("artifact section: %+v", rep.Artifact)
	}
	r := rep.Run
	if r == nil {
		t.Fatal("no run section")
	}
	if r.Succeeded != 200 || r.Failed != 0 || len(r.Errors) != 0 || r.ThroughputRPS <= 0 {
		t.Errorf("run: %+v", r)
	}
	l := r.LatencyUS
	if l.Recording != "exact" || l.Count != 200 || l.Min <= 0 || l.P50 < l.Min || l.P90 < l.P50 || l.P99 < l.P90 || l.Max < l.P99 {
		t.Errorf("latency: %+v", l)
	}
	c := rep.ColdStart
	if cpu := r.CPU; cpu == nil || cpu.CallerUSPerRequest <= 0 || cpu.ContainersUSPerRequest == nil || *cpu.ContainersUSPerRequest <= 0 || cpu.Containers < 1 {
		t.Errorf("cpu: %+v", cpu)
	}
	if c == nil || len(c.SamplesMS) != 2 || c.Failed != 0 || c.MinMS <= 0 || c.MinMS > c.P50MS || c.P50MS > c.MaxMS {
		t.Errorf("cold start: %+v", c)
	}
	if rep.Containers.Started < 1 || rep.Containers.Peak < 1 || rep.Containers.Peak > rep.Containers.Max {
		t.Errorf("containers: %+v", rep.Containers)
	}

	// A request the app rejects: every failure counted under the app's type.
	stdout.Reset()
	stderr.Reset()
	code = runBench(t.Context(), []string{art, "--state-dir", state, "--payload", `{"value": 5}`, "-n", "20", "--warmup", "0"}, &stdout, &stderr)
	if code != exitBenchFailed {
		t.Errorf("all requests failing exits %d, want %d", code, exitBenchFailed)
	}
	for _, want := range []string{"0 succeeded, 20 failed", "20 app:ValidationError: ", "already loaded"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout.String())
		}
	}
	// What verified the artifact (the runtime's verified/) is kept for later runtimes.
	if entries, _ := os.ReadDir(state); len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "verified" {
		t.Errorf("state directory holds %v after the runs", entries)
	}
}
