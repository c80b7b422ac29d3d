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
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/protocol"
)

// End-to-end tests: real containers on the local Docker daemon.

func containersOf(t *testing.T, eng *docker.Engine, rt *Runtime) int {
	t.Helper()
	list, err := eng.ListContainers(t.Context(), map[string]string{LabelInstance: rt.inst.id})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func TestDockerEchoColdThenWarm(t *testing.T) {
	rt, eng := newDockerRuntime(t)
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

	// A second runtime finds the image the engine already has.
	rt2, _ := newDockerRuntime(t)
	if _, err := rt2.Execute(t.Context(), echo, map[string]any{"value": "again"}); err != nil {
		t.Fatal(err)
	}
	if n := rt2.Stats().ImageLoads; n != 0 {
		t.Fatalf("second runtime loaded the image %d times, want 0", n)
	}
}

func TestDockerImageLoadedOncePerDigest(t *testing.T) {
	eng := requireDocker(t)
	echo := testArtifact(t, "echo-go")
	a, err := artifact.Open(t.Context(), echo)
	if err != nil {
		t.Fatal(err)
	}
	// Remove the image so this runtime must load it (ignore "in use":
	// the test then checks the reuse path only).
	removeImage(t, eng, a.ConfigDigest.String())
	rt, _ := newDockerRuntime(t)
	copyPath := filepath.Join(t.TempDir(), "copy.ociapp")
	b, err := os.ReadFile(echo)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range []string{echo, copyPath, echo, copyPath} {
		wg.Go(func() {
			if _, err := rt.Execute(t.Context(), p, map[string]any{"value": "x"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st := rt.Stats()
	if st.ImageLoads > 1 || len(st.Pools) != 1 {
		t.Fatalf("stats %+v: want at most one load and one pool for two copies", st)
	}
}

func removeImage(t *testing.T, eng *docker.Engine, id string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "docker", "image", "rm", "-f", id).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such image") {
		t.Logf("removing image %s: %v: %s", id, err, out)
	}
}

func TestDockerCorruptArtifact(t *testing.T) {
	rt, _ := newDockerRuntime(t)
	b, err := os.ReadFile(testArtifact(t, "echo-go"))
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in the middle of the largest blob (the binary's layer).
	b[len(b)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.ociapp")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = rt.Execute(t.Context(), bad, map[string]any{"value": "x"})
	var ae *ArtifactError
	var fe *artifact.Error
	if !errors.As(err, &ae) || !errors.As(err, &fe) {
		t.Fatalf("got %v, want *ArtifactError wrapping *artifact.Error", err)
	}
	t.Log(err)
}

func TestDockerHardenedSandbox(t *testing.T) {
	rt, _ := newDockerRuntime(t, WithMemoryLimit(64<<20))
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
		"pids_limit":    fmt.Sprint(DefaultPidsLimit),
		"pid1":          "docker-init",
	}
	for k, v := range want {
		if fmt.Sprint(resp[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, resp[k], v)
		}
	}
	if ifaces := fmt.Sprint(resp["interfaces"]); ifaces != "[lo]" {
		t.Errorf("interfaces %s, want only loopback (no network)", ifaces)
	}

	if cpu := fmt.Sprint(resp["cpu_max"]); cpu != "-1" && !strings.HasPrefix(cpu, "max") {
		t.Errorf("cpu limit %s, want none by default", cpu)
	}

	// One option gives the container a network. "host" is used here
	// because it works on every daemon (this machine's has no bridge).
	rt2, _ := newDockerRuntime(t, WithNetwork("host"), WithCPULimit(0.5))
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
}

func TestDockerColdStartsCoalesce(t *testing.T) {
	rt, eng := newDockerRuntime(t, WithMaxContainers(2))
	echo := testArtifact(t, "echo-go")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := rt.Execute(t.Context(), echo, map[string]any{"value": fmt.Sprint(i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// The second container may still be starting: requests never wait for
	// it while the first has room.
	if p := rt.Stats().Pools[0]; p.Containers+p.Starting != 2 {
		t.Fatalf("16 concurrent first requests: pool %+v, want 2 containers", p)
	}
	waitFor(t, 20*time.Second, "the second container", func() bool { return rt.Stats().ColdStarts == 2 })
	if n := containersOf(t, eng, rt); n != 2 {
		t.Fatalf("%d containers, want 2", n)
	}
}

func TestDockerScaleOutAndMinimum(t *testing.T) {
	rt, eng := newDockerRuntime(t, WithMaxContainers(3), WithMinContainers(2))
	sleeper := testArtifact(t, "sleeper")
	if err := rt.Warm(t.Context(), sleeper); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two warm containers", func() bool { return rt.Stats().Pools[0].Containers == 2 })
	var wg sync.WaitGroup
	hosts := make(chan string, 9)
	for range 9 {
		wg.Go(func() {
			resp, err := rt.Execute(t.Context(), sleeper, map[string]any{"millis": 1500})
			if err != nil {
				t.Error(err)
				return
			}
			hosts <- resp["hostname"].(string)
		})
	}
	wg.Wait()
	close(hosts)
	seen := map[string]int{}
	for h := range hosts {
		seen[h]++
	}
	if len(seen) < 2 {
		t.Fatalf("requests served by %v, want them spread over the warm containers", seen)
	}
	waitFor(t, 20*time.Second, "a third container for the load", func() bool { return containersOf(t, eng, rt) == 3 })
}

func TestDockerOverloaded(t *testing.T) {
	rt, _ := newDockerRuntime(t, WithMaxContainers(1), WithContainerConcurrency(1), WithQueueSize(1))
	sleeper := testArtifact(t, "sleeper")
	if err := rt.Warm(t.Context(), sleeper); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := rt.Execute(t.Context(), sleeper, map[string]any{"millis": 1000})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var ok, overloaded int
	for err := range errs {
		var oe *OverloadedError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &oe):
			overloaded++
		default:
			t.Fatal(err)
		}
	}
	if ok != 2 || overloaded != 1 {
		t.Fatalf("%d served, %d overloaded; want 2 and 1", ok, overloaded)
	}
}

func TestDockerRequestTimeoutKeepsContainer(t *testing.T) {
	// Generous for a loaded machine, far below the sleep.
	rt, _ := newDockerRuntime(t, WithRequestTimeout(2*time.Second), WithShutdownTimeout(time.Second))
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
}

func TestDockerAppErrorKeepsContainer(t *testing.T) {
	rt, eng := newDockerRuntime(t)
	echo := testArtifact(t, "echo-go")
	_, err := rt.Execute(t.Context(), echo, map[string]any{"value": 5})
	var ae *AppError
	if !errors.As(err, &ae) || ae.Type != protocol.ErrorTypeValidation {
		t.Fatalf("got %v, want a ValidationError", err)
	}
	if _, err := rt.Execute(t.Context(), echo, map[string]any{"value": "ok"}); err != nil {
		t.Fatal(err)
	}
	if n := containersOf(t, eng, rt); n != 1 || rt.Stats().ColdStarts != 1 {
		t.Fatalf("%d containers, %d cold starts; want the container kept", n, rt.Stats().ColdStarts)
	}
}

func TestDockerCrashMidRequest(t *testing.T) {
	rt, _ := newDockerRuntime(t, WithMaxContainers(1))
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
}

func TestDockerOOMKilled(t *testing.T) {
	rt, _ := newDockerRuntime(t, WithMemoryLimit(32<<20))
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
}

func TestDockerGarbageFrames(t *testing.T) {
	rt, _ := newDockerRuntime(t)
	_, err := rt.Execute(t.Context(), testArtifact(t, "garbage"), map[string]any{"x": 1})
	var ce *WorkerCrashError
	if !errors.As(err, &ce) || !protocol.IsMalformed(err) || !strings.Contains(ce.Logs, "not msgpack") {
		t.Fatalf("got %v, want *WorkerCrashError for a malformed frame, with logs", err)
	}
}

func TestDockerStartupFailures(t *testing.T) {
	tests := []struct {
		app      string
		exited   bool
		exitCode int
		logs     string
		within   time.Duration
	}{
		{app: "exitstart", exited: true, exitCode: 3, logs: "ImportError", within: 5 * time.Second},
		{app: "badentry", exited: true, exitCode: 127, logs: "", within: 5 * time.Second},
		{app: "nobind", logs: "never listen", within: 6 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.app, func(t *testing.T) {
			rt, eng := newDockerRuntime(t, WithStartupTimeout(3*time.Second), WithStartupBackoff(10*time.Second, time.Minute))
			path := testArtifact(t, tt.app)
			if _, err := rt.pool(t.Context(), path); err != nil { // load the image first: time the start only
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
}

func TestDockerIdleReaping(t *testing.T) {
	rt, eng := newDockerRuntime(t, WithIdleTimeout(time.Second), WithReaperInterval(100*time.Millisecond))
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
}

func TestDockerCloseFailsInFlight(t *testing.T) {
	eng := requireDocker(t)
	dir := shortTempDir(t)
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
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("state directory still holds %v", entries)
	}
}

// The crash helper is this test binary run as a child that starts a
// runtime, starts a container, reports it, and waits to be killed.
const crashHelperEnv = "OCIAPP_RUNTIME_TEST_CRASH_HELPER"

func crashHelper() int {
	stateDir, artifactPath := os.Getenv("OCIAPP_RUNTIME_TEST_STATE_DIR"), os.Getenv(crashHelperEnv)
	ctx := context.Background()
	rt, err := New(ctx, WithStateDir(stateDir))
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

func TestDockerRemovesOrphansOfCrashedRuntime(t *testing.T) {
	eng := requireDocker(t)
	dir := shortTempDir(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+testArtifact(t, "echo-go"), "OCIAPP_RUNTIME_TEST_STATE_DIR="+dir)
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
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
