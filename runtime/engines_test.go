package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/engine/kubernetes"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
)

// End-to-end tests: real containers, from one table, on every engine.
// Each test runs once per engine as a subtest named after it, e.g.
// TestEngineEcho/kubernetes.

// testEngine is an engine the end-to-end tests run on, and the few things
// that differ between engines.
type testEngine struct {
	name string
	open func(ctx context.Context) (testableEngine, error)
	// start says how to make the engine available.
	start string
	// badEntryExit is the exit code of a container whose entrypoint does
	// not exist: 127 from Docker's init, 128 from runc under the kubelet.
	badEntryExit int
	// pid1 is the init that reaps orphans in each container.
	pid1 string
	// pidsLimit is the per-container process limit the probe sees.
	pidsLimit string
	// interfaces are the probe's network interfaces with the default
	// network: Docker's "none" gives loopback only, a pod always has the
	// cluster network (restrict it with a NetworkPolicy).
	interfaces string
	// removeImage removes an image behind the runtime's back.
	removeImage func(tb testing.TB, eng engine.Engine, ref string)
}

// testableEngine is an engine the tests own and close.
type testableEngine interface {
	engine.Engine
	Close() error
}

var testEngines = []testEngine{
	{
		name:         "docker",
		open:         func(ctx context.Context) (testableEngine, error) { return docker.New(ctx) },
		start:        "start it with scripts/ensure-docker.sh",
		badEntryExit: 127,
		pid1:         "docker-init",
		pidsLimit:    fmt.Sprint(DefaultPidsLimit),
		interfaces:   "[lo]",
		removeImage:  func(tb testing.TB, _ engine.Engine, ref string) { removeImage(tb, ref) },
	},
	{
		name:         "kubernetes",
		open:         openTestCluster,
		start:        "start the test cluster with scripts/ensure-kubernetes.sh",
		badEntryExit: 128,
		pid1:         "pause",
		pidsLimit:    "max",
		interfaces:   "[lo eth0]",
		removeImage:  removeClusterImage,
	},
}

// The test cluster's addresses, unless the environment (the env file of
// scripts/ensure-kubernetes.sh) says otherwise.
const (
	testClusterKubeconfig = "/var/lib/ociapp-k8s/admin.kubeconfig"
	testClusterContainerd = "/run/ociapp-k8s/containerd.sock"
)

func openTestCluster(ctx context.Context) (testableEngine, error) {
	opts := []kubernetes.Option{kubernetes.WithContainerd(testClusterContainerd)}
	if s := os.Getenv("OCIAPP_K8S_CONTAINERD"); s != "" {
		opts = []kubernetes.Option{kubernetes.WithContainerd(s)}
	}
	if os.Getenv("KUBECONFIG") == "" {
		opts = append(opts, kubernetes.WithKubeconfig(testClusterKubeconfig))
	}
	if n := os.Getenv("OCIAPP_K8S_NODE"); n != "" {
		opts = append(opts, kubernetes.WithNode(n))
	}
	return kubernetes.New(ctx, opts...)
}

func removeClusterImage(tb testing.TB, eng engine.Engine, ref string) {
	tb.Helper()
	if err := eng.(*kubernetes.Engine).RemoveImage(tb.Context(), ref); err != nil {
		tb.Fatal(err)
	}
}

// requireEngine returns te's engine, closed when the test ends. Without it
// the test is skipped, or fails when CI=true.
func requireEngine(tb testing.TB, te testEngine) engine.Engine {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	eng, err := te.open(ctx)
	if err != nil {
		testenv.Need(tb, te.name, te.start, err)
	}
	tb.Cleanup(func() { _ = eng.Close() })
	return eng
}

// forEachEngine runs test once per engine.
func forEachEngine(t *testing.T, test func(t *testing.T, te testEngine, eng engine.Engine)) {
	for _, te := range testEngines {
		t.Run(te.name, func(t *testing.T) {
			test(t, te, requireEngine(t, te))
		})
	}
}

func TestEngineEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng)
		echo := testArtifact(t, "echo-go")
		start := time.Now()
		resp, err := rt.Execute(t.Context(), echo, map[string]any{"value": "hi"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cold start to first response: %v", time.Since(start))
		if resp["value"] != "hi" {
			t.Fatalf("response %v", resp)
		}
		for i := range 5 {
			resp, err := rt.Execute(t.Context(), echo, map[string]any{"value": fmt.Sprint(i)})
			if err != nil || resp["value"] != fmt.Sprint(i) {
				t.Fatalf("warm request: %v, %v", resp, err)
			}
		}
		st := rt.Stats()
		if st.ColdStarts != 1 || st.WarmHits != 5 {
			t.Fatalf("stats %+v: want 1 cold start, 5 warm hits", st)
		}
		if n := containersOf(t, eng, rt); n != 1 {
			t.Fatalf("%d containers, want 1", n)
		}
		// Its CPU time can be read from its cgroup, for bench's CPU per
		// request: by its ID, or by the one the engine says names it.
		list, err := eng.ListContainers(t.Context(), map[string]string{LabelInstance: rt.inst.id})
		if err != nil || len(list) != 1 {
			t.Fatalf("containers %v, %v", list, err)
		}
		cgroupID := list[0].ID
		if ider, ok := eng.(engine.CgroupIDer); ok {
			if cgroupID, err = ider.CgroupID(t.Context(), list[0].ID); err != nil {
				t.Fatal(err)
			}
		}
		path, err := cpustat.ContainerCgroup(cpustat.CgroupRoot, cgroupID)
		if err != nil {
			t.Fatal(err)
		}
		if used, err := cpustat.ReadCgroup(path); err != nil || used <= 0 {
			t.Fatalf("the container's cgroup says %v, %v", used, err)
		}

		// A second runtime finds the image the engine already has.
		rt2 := newRuntime(t, eng)
		if _, err := rt2.Execute(t.Context(), echo, map[string]any{"value": "again"}); err != nil {
			t.Fatal(err)
		}
		if n := rt2.Stats().ImageLoads; n != 0 {
			t.Fatalf("second runtime loaded the image %d times, want 0", n)
		}
	})
}

func TestEnginePythonEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		// Python artifacts are built with Docker; any engine runs them.
		path := pythonArtifact(t, dockertest.Engine(t), "echo-py")
		rt := newRuntime(t, eng)
		a, err := artifact.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if a.Format != artifact.FormatOCILayout || a.DockerLoadable {
			t.Fatalf("fixture is %v (docker-loadable %v), want an OCI layout only, like buildx output", a.Format, a.DockerLoadable)
		}
		start := time.Now()
		resp, err := rt.Execute(t.Context(), path, map[string]any{"value": "hi"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("first response after %v", time.Since(start))
		if resp["value"] != "hi" {
			t.Fatalf("response %v", resp)
		}
		_, err = rt.Execute(t.Context(), path, map[string]any{"value": 5})
		var ae *AppError
		if !errors.As(err, &ae) || ae.Type != protocol.ErrorTypeValidation || ae.Message != protocol.ValidationMessage {
			t.Fatalf("got %v, want a ValidationError", err)
		}
		if rt.Stats().ColdStarts != 1 {
			t.Fatal("the app error cost the container")
		}
	})
}

func TestEngineHardenedSandbox(t *testing.T) {
	forEachEngine(t, func(t *testing.T, te testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng, WithMemoryLimit(64<<20))
		resp, err := rt.Execute(t.Context(), testArtifact(t, "probe"), map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("probe: %v", resp)
		want := map[string]any{
			"uid":           int64(65532), // the image says root; the runtime refuses
			"gid":           int64(65532),
			"cap_eff":       "0000000000000000",
			"no_new_privs":  "1",
			"root_writable": false,
			"tmp_writable":  true,
			"memory_limit":  fmt.Sprint(64 << 20),
			"pids_limit":    te.pidsLimit,
			"pid1":          te.pid1,
			"interfaces":    te.interfaces,
		}
		for k, v := range want {
			if fmt.Sprint(resp[k]) != fmt.Sprint(v) {
				t.Errorf("%s = %v, want %v", k, resp[k], v)
			}
		}
		if cpu := fmt.Sprint(resp["cpu_max"]); cpu != "-1" && !strings.HasPrefix(cpu, "max") {
			t.Errorf("cpu limit %s, want none by default", cpu)
		}

		// One option gives the container the host's network, another a
		// CPU limit.
		rt2 := newRuntime(t, eng, WithNetwork("host"), WithCPULimit(0.5))
		resp, err = rt2.Execute(t.Context(), testArtifact(t, "probe"), map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		if ifaces := resp["interfaces"].([]any); len(ifaces) < 2 {
			t.Errorf("with host networking, interfaces %v, want more than loopback", ifaces)
		}
		if cpu := fmt.Sprint(resp["cpu_max"]); cpu != "50000" && cpu != "50000 100000" {
			t.Errorf("cpu limit %s, want half a CPU", cpu)
		}
	})
}

func TestEngineRequestTimeoutKeepsContainer(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		// Generous for a loaded machine, far below the sleep.
		rt := newRuntime(t, eng, WithRequestTimeout(2*time.Second), WithShutdownTimeout(time.Second))
		sleeper := testArtifact(t, "sleeper")
		first, err := rt.Execute(t.Context(), sleeper, map[string]any{"millis": 0})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = rt.Execute(t.Context(), sleeper, map[string]any{"millis": 60000})
		var te *RequestTimeoutError
		if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want *RequestTimeoutError", err)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("timed out after %v", d)
		}
		again, err := rt.Execute(t.Context(), sleeper, map[string]any{"millis": 0})
		if err != nil {
			t.Fatal(err)
		}
		if again["hostname"] != first["hostname"] {
			t.Fatalf("served by %v after the timeout, want the same container %v", again["hostname"], first["hostname"])
		}
	})
}

func TestEngineCrashMidRequest(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng, WithMaxContainers(1))
		crasher := testArtifact(t, "crasher")
		first, err := rt.Execute(t.Context(), crasher, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 2 {
			wg.Go(func() {
				_, err := rt.Execute(t.Context(), crasher, map[string]any{"millis": 10000})
				errs <- err
			})
		}
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		wg.Go(func() {
			_, err := rt.Execute(t.Context(), crasher, map[string]any{"crash": true, "millis": 100})
			errs <- err
		})
		wg.Wait()
		t.Logf("in-flight requests failed %v after the crash request", time.Since(start))
		close(errs)
		for err := range errs {
			var ce *WorkerCrashError
			if !errors.As(err, &ce) || !ce.Exited || ce.ExitCode != 3 || ce.OOMKilled || !strings.Contains(ce.Logs, "crashing as asked") {
				t.Fatalf("got %v, want *WorkerCrashError with exit code 3 and the log", err)
			}
		}
		next, err := rt.Execute(t.Context(), crasher, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		if next["hostname"] == first["hostname"] {
			t.Fatal("the request after the crash went to the crashed container")
		}
	})
}

func TestEngineOOMKilled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng, WithMemoryLimit(32<<20))
		_, err := rt.Execute(t.Context(), testArtifact(t, "memhog"), map[string]any{"mb": 256})
		var ce *WorkerCrashError
		if !errors.As(err, &ce) || !ce.OOMKilled || !ce.Exited || ce.ExitCode != 137 {
			t.Fatalf("got %v, want *WorkerCrashError, OOM killed, exit 137", err)
		}
		t.Log(err)
		// Within the limit it works, in a fresh container.
		if _, err := rt.Execute(t.Context(), testArtifact(t, "memhog"), map[string]any{"mb": 4}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEngineStartupFailures(t *testing.T) {
	forEachEngine(t, func(t *testing.T, te testEngine, eng engine.Engine) {
		tests := []struct {
			app      string
			exited   bool
			exitCode int
			logs     string
			within   time.Duration
		}{
			{app: "exitstart", exited: true, exitCode: 3, logs: "ImportError", within: 5 * time.Second},
			{app: "badentry", exited: true, exitCode: te.badEntryExit, logs: "", within: 5 * time.Second},
			{app: "nobind", logs: "never listen", within: 6 * time.Second},
		}
		for _, tt := range tests {
			t.Run(tt.app, func(t *testing.T) {
				rt := newRuntime(t, eng, WithStartupTimeout(3*time.Second), WithStartupBackoff(10*time.Second, time.Minute))
				path := testArtifact(t, tt.app)
				if _, err := rt.Prepare(t.Context(), path); err != nil { // load the image first: time the start only
					t.Fatal(err)
				}
				start := time.Now()
				_, err := rt.Execute(t.Context(), path, map[string]any{})
				elapsed := time.Since(start)
				var se *StartupError
				if !errors.As(err, &se) || se.Exited != tt.exited || (tt.exited && se.ExitCode != tt.exitCode) || !strings.Contains(se.Logs, tt.logs) {
					t.Fatalf("got %#v, want *StartupError exited=%v code=%d logs with %q", err, tt.exited, tt.exitCode, tt.logs)
				}
				t.Logf("failed after %v: %v", elapsed, err)
				if elapsed > tt.within {
					t.Fatalf("failed after %v, want within %v", elapsed, tt.within)
				}
				// No tight restart loop: the next request fails at once with
				// the same error, without a new container.
				start = time.Now()
				_, err2 := rt.Execute(t.Context(), path, map[string]any{})
				if err2 != err || time.Since(start) > 100*time.Millisecond {
					t.Fatalf("second request: %v after %v, want the same error at once", err2, time.Since(start))
				}
				if n := rt.Stats().Failures.StartupFailures; n != 1 {
					t.Fatalf("%d containers failed to start, want 1", n)
				}
				waitFor(t, 15*time.Second, "the failed container to be removed", func() bool { return containersOf(t, eng, rt) == 0 })
			})
		}
	})
}

// TestEngineImageRemoved: an image removed from the engine behind the
// runtime's back is loaded again by the next start, which succeeds; and
// the engine refuses to remove an image a container runs.
func TestEngineImageRemoved(t *testing.T) {
	forEachEngine(t, func(t *testing.T, te testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng)
		path := testArtifact(t, "sleeper")
		rep, err := rt.Prepare(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		ref := rep.Image
		loads := rt.Stats().ImageLoads
		te.removeImage(t, eng, ref)
		if _, err := rt.Execute(t.Context(), path, map[string]any{"millis": 0}); err != nil {
			t.Fatal(err)
		}
		if n := rt.Stats().ImageLoads - loads; n != 1 {
			t.Fatalf("%d image loads after the removal, want 1", n)
		}
		// An image a container runs is not removed.
		if rep, err = rt.Prepare(t.Context(), path); err != nil {
			t.Fatal(err)
		}
		if err := eng.(engine.ImageRemover).RemoveImage(t.Context(), rep.Image); !errors.Is(err, engine.ErrInUse) {
			t.Fatalf("removing the image of a running container: %v, want engine.ErrInUse", err)
		}
	})
}

func TestEngineIdleReaping(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng, WithIdleTimeout(time.Second), WithReaperInterval(100*time.Millisecond))
		sleeper := testArtifact(t, "sleeper")
		// A request longer than the idle timeout keeps its container.
		if _, err := rt.Execute(t.Context(), sleeper, map[string]any{"millis": 2500}); err != nil {
			t.Fatal(err)
		}
		if rt.Stats().ColdStarts != 1 {
			t.Fatal("the busy container was replaced")
		}
		entries, _ := os.ReadDir(rt.inst.dir)
		if len(entries) != 2 { // the lock and one socket directory
			t.Fatalf("runtime directory holds %d entries", len(entries))
		}
		waitFor(t, 20*time.Second, "the idle container to be reaped", func() bool { return containersOf(t, eng, rt) == 0 })
		waitFor(t, 5*time.Second, "the socket directory to be removed", func() bool {
			entries, _ := os.ReadDir(rt.inst.dir)
			return len(entries) == 1
		})
	})
}

func TestEngineCloseFailsInFlight(t *testing.T) {
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		dir := testenv.ShortTempDir(t)
		rt, err := New(t.Context(), WithEngine(eng), WithStateDir(dir), WithShutdownTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		sleeper := testArtifact(t, "sleeper")
		if err := rt.Warm(t.Context(), sleeper); err != nil {
			t.Fatal(err)
		}
		instance := rt.inst.id
		failed := make(chan time.Time, 1)
		go func() {
			_, err := rt.Execute(context.Background(), sleeper, map[string]any{"millis": 60000})
			if !errors.Is(err, ErrClosed) {
				t.Errorf("in-flight request: %v, want ErrClosed", err)
			}
			failed <- time.Now()
		}()
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		if err := rt.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Logf("Close took %v", time.Since(start))
		if d := (<-failed).Sub(start); d > 2*time.Second {
			t.Fatalf("in-flight request failed %v after Close began", d)
		}
		list, err := eng.ListContainers(t.Context(), map[string]string{LabelInstance: instance})
		if err != nil || len(list) != 0 {
			t.Fatalf("containers left: %v %v", list, err)
		}
		// What verified the artifact (the runtime's verified/) is kept for later runtimes.
		if entries, _ := os.ReadDir(dir); len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "verified" {
			t.Fatalf("state directory still holds %v", entries)
		}
	})
}

// The crash helper is this test binary run as a child that starts a
// runtime on the engine named by crashHelperEnv, starts a container,
// reports it, and waits to be killed.
const (
	crashHelperEnv      = "OCIAPP_RUNTIME_TEST_CRASH_HELPER"
	crashHelperEngine   = "OCIAPP_RUNTIME_TEST_ENGINE"
	crashHelperStateDir = "OCIAPP_RUNTIME_TEST_STATE_DIR"
)

func crashHelper() int {
	stateDir, artifactPath, engineName := os.Getenv(crashHelperStateDir), os.Getenv(crashHelperEnv), os.Getenv(crashHelperEngine)
	ctx := context.Background()
	for _, te := range testEngines {
		if te.name != engineName {
			continue
		}
		eng, err := te.open(ctx)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		rt, err := New(ctx, WithEngine(eng), WithStateDir(stateDir))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if _, err := rt.Execute(ctx, artifactPath, map[string]any{"value": "x"}); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("instance", rt.inst.id)
		select {} // killed by the parent
	}
	fmt.Println("error: no engine", engineName)
	return 1
}

func TestEngineRemovesOrphansOfCrashedRuntime(t *testing.T) {
	forEachEngine(t, func(t *testing.T, te testEngine, eng engine.Engine) {
		dir := testenv.ShortTempDir(t)
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"="+testArtifact(t, "echo-go"), crashHelperStateDir+"="+dir, crashHelperEngine+"="+te.name)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		owner, ok := strings.CutPrefix(strings.TrimSpace(line), "instance ")
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper said %q", line)
		}
		// A live runtime's containers are left alone.
		rt, err := New(t.Context(), WithEngine(eng), WithStateDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		list, _ := eng.ListContainers(t.Context(), map[string]string{LabelInstance: owner})
		if len(list) != 1 {
			t.Fatalf("a live runtime's container was touched: %v", list)
		}
		if err := rt.Close(t.Context()); err != nil {
			t.Fatal(err)
		}

		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		rt, err = New(t.Context(), WithEngine(eng), WithStateDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close(context.Background())
		list, _ = eng.ListContainers(t.Context(), map[string]string{LabelInstance: owner})
		if len(list) != 0 {
			t.Fatalf("orphaned containers remain: %v", list)
		}
		if _, err := os.Stat(filepath.Join(dir, owner)); !os.IsNotExist(err) {
			t.Fatalf("orphaned directory remains: %v", err)
		}
	})
}

// capableApps are the capabilities' test apps, one per SDK, declaring
// cancel and deadline; and the Go one again declaring nothing.
func capableApps(t *testing.T) []struct {
	name, path string
	caps       bool
} {
	return []struct {
		name, path string
		caps       bool
	}{
		{"go", testArtifact(t, "capable"), true},
		{"python", pythonArtifact(t, dockertest.Engine(t), "capable-py"), true},
		{"go without capabilities", testArtifact(t, "capable-nocap"), false},
	}
}

// TestEngineRequestDeadline: a handler in an artifact that declares the
// deadline capability sees the request's deadline (the request timeout
// here); the same app in an artifact that declares none gets exactly
// protocol v1, without one.
func TestEngineRequestDeadline(t *testing.T) {
	apps := capableApps(t)
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng, WithRequestTimeout(20*time.Second))
		for _, app := range apps {
			resp, err := rt.Execute(t.Context(), app.path, map[string]any{"op": "deadline"})
			if err != nil {
				t.Fatal(err)
			}
			left, _ := resp["n"].(int64)
			if app.caps && (left <= 0 || left > 20000) || !app.caps && left != -1 {
				t.Errorf("%s: the handler has %v ms", app.name, resp["n"])
			}
		}
	})
}

// TestEngineCancel: a caller that gives up (its context cancelled, or the
// request timeout) gets its error at once, the handler of an artifact that
// declares the cancel capability is cancelled (a Python one sees
// asyncio.CancelledError in its await), and the same container answers the
// next request. Without the capability the handler is not told.
func TestEngineCancel(t *testing.T) {
	apps := capableApps(t)
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		for _, app := range apps {
			t.Run(app.name, func(t *testing.T) {
				rt := newRuntime(t, eng, WithRequestTimeout(2*time.Second))
				count := func() int64 {
					t.Helper()
					resp, err := rt.Execute(t.Context(), app.path, map[string]any{"op": "cancelled"})
					if err != nil {
						t.Fatal(err)
					}
					return resp["n"].(int64)
				}
				// awaitCount waits until the app's handlers report want
				// cancellations: the cancel reaches the container after
				// the caller has its error.
				awaitCount := func(want int64) {
					t.Helper()
					for start := time.Now(); count() != want; time.Sleep(10 * time.Millisecond) {
						if time.Since(start) > 30*time.Second {
							t.Fatalf("%d handlers cancelled, want %d", count(), want)
						}
					}
				}
				awaitCount(0) // the container is started

				// The caller's context.
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() {
					_, err := rt.Execute(ctx, app.path, map[string]any{"op": "block"})
					done <- err
				}()
				time.Sleep(100 * time.Millisecond) // the request is in the handler, or will be
				cancelledAt := time.Now()
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("Execute returned %v, want context.Canceled", err)
				}
				var want int64
				if app.caps {
					want++
				}
				awaitCount(want)
				// A handler with a deadline would end at the request
				// timeout anyway, 1.9 s after the cancel: it must have
				// ended well before, through the cancel.
				if app.caps {
					resp, err := rt.Execute(t.Context(), app.path, map[string]any{"op": "cancelled_at"})
					if err != nil {
						t.Fatal(err)
					}
					if seen := time.Unix(0, resp["n"].(int64)).Sub(cancelledAt); seen > time.Second {
						t.Fatalf("the handler ended %v after its caller cancelled: by its deadline, not the cancel", seen)
					}
				}

				// The request timeout.
				_, err := rt.Execute(t.Context(), app.path, map[string]any{"op": "block"})
				var te *RequestTimeoutError
				if !errors.As(err, &te) {
					t.Fatalf("Execute returned %v, want *RequestTimeoutError", err)
				}
				if app.caps {
					want++
				}
				awaitCount(want)
				if st := rt.Stats(); st.ColdStarts != 1 || st.Failures.ContainerCrashes != 0 {
					t.Fatalf("stats %+v: want the one container throughout", st)
				}
			})
		}
	})
}
