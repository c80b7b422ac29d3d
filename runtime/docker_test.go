package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
)

// End-to-end tests: real containers on the local Docker daemon.

func containersOf(t *testing.T, eng engine.Engine, rt *Runtime) int {
	t.Helper()
	list, err := eng.ListContainers(t.Context(), map[string]string{LabelInstance: rt.inst.id})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func TestDockerImageLoadedOncePerDigest(t *testing.T) {
	dockertest.Engine(t)
	echo := testArtifact(t, "echo-go")
	a, err := artifact.Open(t.Context(), echo)
	if err != nil {
		t.Fatal(err)
	}
	// Remove the image so this runtime must load it (ignore "in use":
	// the test then checks the reuse path only).
	removeImage(t, a.ConfigDigest.String())
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

func removeImage(t testing.TB, id string) {
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

func TestDockerGarbageFrames(t *testing.T) {
	rt, _ := newDockerRuntime(t)
	_, err := rt.Execute(t.Context(), testArtifact(t, "garbage"), map[string]any{"x": 1})
	var ce *WorkerCrashError
	if !errors.As(err, &ce) || !protocol.IsMalformed(err) || !strings.Contains(ce.Logs, "not msgpack") {
		t.Fatalf("got %v, want *WorkerCrashError for a malformed frame, with logs", err)
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
