package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ociapp/ociapp/protocol"
)

func TestWarmReuseAndImageLoadedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {readyAfter: 50 * time.Millisecond}})
		defer f.close()
		// A second copy of the file shares the first one's pool and image.
		b, _ := os.ReadFile(f.path("echo"))
		copyPath := filepath.Join(f.dir, "copy.ociapp")
		if err := os.WriteFile(copyPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for i, p := range []string{f.path("echo"), f.path("echo"), copyPath} {
			resp, err := f.rt.Execute(t.Context(), p, map[string]any{"value": i})
			if err != nil {
				t.Fatal(err)
			}
			if resp["value"] != int64(i) {
				t.Fatalf("response %v, want value %d", resp, i)
			}
		}
		created, _ := f.eng.counts()
		st := f.rt.Stats()
		if created != 1 || f.eng.loads != 1 || st.ColdStarts != 1 || st.ImageLoads != 1 {
			t.Fatalf("containers %d, loads %d, stats %+v; want one of each", created, f.eng.loads, st)
		}
		if st.WarmHits != 2 || st.QueueWaits != 1 {
			t.Fatalf("warm hits %d, queue waits %d; want 2 and 1", st.WarmHits, st.QueueWaits)
		}
		// Two files, one digest: verified once each, never again when warm.
		if f.opens != 2 {
			t.Fatalf("artifact verified %d times, want 2 (once per file)", f.opens)
		}
	})
}

func TestImageAlreadyPresentIsNotLoaded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}})
		defer f.close()
		f.eng.images["sha256:echo"] = true // the containerd store's name for it
		if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if f.eng.loads != 0 {
			t.Fatalf("loaded %d times, want 0", f.eng.loads)
		}
		if img := f.eng.container(0).spec.Image; img != "sha256:echo" {
			t.Fatalf("container image %q, want the present one", img)
		}
	})
}

func TestRebuiltFileGetsNewIdentity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"a": {}, "b": {}})
		defer f.close()
		if _, err := f.exec(t.Context(), "a", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		// Rebuild "a" in place with b's content.
		if err := os.WriteFile(f.path("a"), []byte("b"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // a later mtime, as a rebuild has
		now := time.Now()
		if err := os.Chtimes(f.path("a"), now, now); err != nil {
			t.Fatal(err)
		}
		if _, err := f.exec(t.Context(), "a", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if got := f.eng.container(1).spec.Labels[LabelArtifactDigest]; got != "sha256:b" {
			t.Fatalf("second container runs %q, want the rebuilt artifact", got)
		}
	})
}

func TestColdStartsCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {readyAfter: 200 * time.Millisecond}}, WithMaxContainers(3))
		defer f.close()
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Go(func() {
				_, err := f.exec(t.Context(), "echo", map[string]any{"i": i})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if created, _ := f.eng.counts(); created != 3 {
			t.Fatalf("20 concurrent first requests started %d containers, want the maximum of 3", created)
		}
	})
}

func TestSequentialRequestsUseOneContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {handle: sleepFor(10 * time.Millisecond)}}, WithMaxContainers(4))
		defer f.close()
		for range 10 {
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
		}
		if created, _ := f.eng.counts(); created != 1 {
			t.Fatalf("sequential requests started %d containers, want 1", created)
		}
	})
}

// A request never waits for a cold start while a warm container has room:
// the scale-out container starts in the background.
func TestScaleOutDoesNotDelayRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"slow": {readyAfter: 5 * time.Second, handle: sleepFor(time.Second)}}, WithMaxContainers(2))
		defer f.close()
		if err := f.rt.Warm(t.Context(), f.path("slow")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if _, err := f.exec(t.Context(), "slow", map[string]any{}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if d := time.Since(start); d != time.Second {
			t.Fatalf("two overlapping requests took %v, want 1s (served by the warm container)", d)
		}
		synctest.Wait()
		st := f.rt.Stats().Pools[0]
		if st.Containers+st.Starting != 2 {
			t.Fatalf("pool %+v: want a second container started for the load", st)
		}
		time.Sleep(5 * time.Second)
		// Now both are warm: concurrent requests spread over them.
		for range 4 {
			wg.Go(func() {
				if _, err := f.exec(t.Context(), "slow", map[string]any{}); err != nil {
					t.Error(err)
				}
			})
		}
		synctest.Wait()
		for i := range 2 {
			c := f.eng.container(i)
			f.eng.mu.Lock()
			inflight := c.inFlight
			f.eng.mu.Unlock()
			if inflight != 2 {
				t.Errorf("container %d has %d requests in flight, want 2 (least-loaded routing)", i, inflight)
			}
		}
		wg.Wait()
	})
}

func TestMinContainers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}},
			WithMinContainers(2), WithMaxContainers(3), WithIdleTimeout(10*time.Second))
		defer f.close()
		if err := f.rt.Warm(t.Context(), f.path("echo")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		created, running := f.eng.counts()
		if created != 2 || running != 2 {
			t.Fatalf("created %d, running %d; want 2 kept warm through idle reaping", created, running)
		}
		// A crashed one is replaced.
		f.eng.container(0).exit(1, false)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if created, running := f.eng.counts(); created != 3 || running != 2 {
			t.Fatalf("after a crash: created %d, running %d; want a replacement", created, running)
		}
	})
}

func TestQueueBoundAndOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"slow": {handle: sleepFor(time.Second)}},
			WithMaxContainers(1), WithContainerConcurrency(1), WithQueueSize(2))
		defer f.close()
		if err := f.rt.Warm(t.Context(), f.path("slow")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		finished := make(chan time.Duration, 3)
		start := time.Now()
		for range 3 { // one in flight, two queued
			wg.Go(func() {
				if _, err := f.exec(t.Context(), "slow", map[string]any{}); err != nil {
					t.Error(err)
				}
				finished <- time.Since(start)
			})
			synctest.Wait()
		}
		_, err := f.exec(t.Context(), "slow", map[string]any{})
		var oe *OverloadedError
		if !errors.As(err, &oe) || oe.Queued != 2 {
			t.Fatalf("fourth request: %v, want *OverloadedError with 2 queued", err)
		}
		wg.Wait()
		close(finished)
		want := time.Second
		for d := range finished { // FIFO, one at a time
			if d != want {
				t.Fatalf("request finished after %v, want %v", d, want)
			}
			want += time.Second
		}
		st := f.rt.Stats()
		if st.Failures.Overloaded != 1 || st.QueueWaits != 3 || st.QueueWaitTime != 3*time.Second {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestQueuedRequestCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"slow": {handle: sleepFor(time.Second)}},
			WithMaxContainers(1), WithContainerConcurrency(1))
		defer f.close()
		go f.exec(t.Context(), "slow", map[string]any{})
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := f.exec(ctx, "slow", map[string]any{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the caller's deadline", err)
		}
		var te *RequestTimeoutError
		if errors.As(err, &te) {
			t.Fatalf("the caller's deadline is not the request timeout: %v", err)
		}
		if q := f.rt.Stats().Pools[0].Queued; q != 0 {
			t.Fatalf("%d still queued", q)
		}
		time.Sleep(2 * time.Second)
	})
}

func TestRequestTimeoutKeepsContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			m, _ := protocol.DecodePayload(p)
			if m["sleep"] == true {
				return sleepFor(time.Hour)(ctx, c, p)
			}
			return p, nil
		}}}, WithRequestTimeout(3*time.Second))
		defer f.close()
		start := time.Now()
		_, err := f.exec(t.Context(), "app", map[string]any{"sleep": true})
		var te *RequestTimeoutError
		if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || te.Timeout != 3*time.Second {
			t.Fatalf("got %v, want *RequestTimeoutError after 3s", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("timed out after %v", d)
		}
		if _, err := f.exec(t.Context(), "app", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if created, running := f.eng.counts(); created != 1 || running != 1 {
			t.Fatalf("created %d, running %d: the timeout must keep the container", created, running)
		}
		if n := f.rt.Stats().Failures.Timeout; n != 1 {
			t.Fatalf("timeouts counted: %d", n)
		}
	})
}

func TestAppErrorKeepsContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			return nil, &protocol.AppError{Type: "ValueError", Message: "bad value", Details: map[string]any{"k": "v"}}
		}}})
		defer f.close()
		for range 2 {
			_, err := f.exec(t.Context(), "app", map[string]any{})
			var ae *AppError
			if !errors.As(err, &ae) || ae.Type != "ValueError" || ae.Message != "bad value" {
				t.Fatalf("got %v, want the app's error", err)
			}
		}
		if created, _ := f.eng.counts(); created != 1 {
			t.Fatalf("created %d containers, want 1", created)
		}
	})
}

func TestCrashFailsInFlightRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {logs: "allocating\nKilled", handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			m, _ := protocol.DecodePayload(p)
			if m["crash"] == true {
				time.Sleep(100 * time.Millisecond)
				c.exit(137, true)
				return nil, errors.New("unreachable")
			}
			return sleepFor(time.Hour)(ctx, c, p)
		}}}, WithMaxContainers(1))
		defer f.close()
		if err := f.rt.Warm(t.Context(), f.path("app")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 2 {
			wg.Go(func() {
				_, err := f.exec(t.Context(), "app", map[string]any{})
				errs <- err
			})
		}
		start := time.Now()
		wg.Go(func() {
			_, err := f.exec(t.Context(), "app", map[string]any{"crash": true})
			errs <- err
		})
		wg.Wait()
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Fatalf("in-flight requests failed after %v, want at the crash", d)
		}
		close(errs)
		for err := range errs {
			var ce *WorkerCrashError
			if !errors.As(err, &ce) || !ce.Exited || ce.ExitCode != 137 || !ce.OOMKilled || ce.Logs != "allocating\nKilled" {
				t.Fatalf("got %#v, want *WorkerCrashError with exit 137, OOM killed, logs", err)
			}
		}
		// The next request gets a fresh container.
		go f.exec(t.Context(), "app", map[string]any{})
		synctest.Wait()
		created, running := f.eng.counts()
		if created != 2 || running != 1 {
			t.Fatalf("created %d, running %d; want a fresh container", created, running)
		}
		c := f.eng.container(0)
		if c.stops != 0 || !c.removed {
			t.Fatalf("crashed container: stops %d, removed %v; want removed without a stop", c.stops, c.removed)
		}
		st := f.rt.Stats().Failures
		if st.Crash != 3 || st.ContainerCrashes != 1 {
			t.Fatalf("failures %+v", st)
		}
	})
}

func TestMalformedFrameRetiresContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"garbage": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			c.e.mu.Lock()
			s := c.sessions[0]
			c.e.mu.Unlock()
			s.fail(&protocol.FrameError{Fault: protocol.FaultZeroLength})
			<-ctx.Done()
			return nil, ctx.Err()
		}}})
		defer f.close()
		_, err := f.exec(t.Context(), "garbage", map[string]any{})
		var ce *WorkerCrashError
		var fe *protocol.FrameError
		if !errors.As(err, &ce) || ce.Exited || !errors.As(err, &fe) {
			t.Fatalf("got %v, want *WorkerCrashError from a frame error, container not exited", err)
		}
		synctest.Wait()
		c := f.eng.container(0)
		if c.stops != 1 || !c.removed {
			t.Fatalf("stops %d, removed %v; want stopped once and removed", c.stops, c.removed)
		}
	})
}

func TestClosedConnectionOfRunningContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			c.e.mu.Lock()
			s := c.sessions[0]
			c.e.mu.Unlock()
			s.fail(errors.New("server closed the connection"))
			return nil, errors.New("unreachable")
		}}})
		defer f.close()
		start := time.Now()
		_, err := f.exec(t.Context(), "app", map[string]any{})
		var ce *WorkerCrashError
		if !errors.As(err, &ce) || ce.Exited {
			t.Fatalf("got %v, want *WorkerCrashError, container still running", err)
		}
		if d := time.Since(start); d != f.rt.cfg.exitGrace {
			t.Fatalf("reported after %v, want after the exit grace", d)
		}
	})
}

func TestStartupExitFailsFastWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"bad": {readyAfter: 30 * time.Millisecond, exitAtStart: intp(3), logs: "ModuleNotFoundError: No module named 'app'"}},
			WithStartupBackoff(time.Second, 4*time.Second))
		defer f.close()
		start := time.Now()
		_, err := f.exec(t.Context(), "bad", map[string]any{})
		var se *StartupError
		if !errors.As(err, &se) || !se.Exited || se.ExitCode != 3 || se.Logs != "ModuleNotFoundError: No module named 'app'" || se.RetryIn != time.Second {
			t.Fatalf("got %#v, want *StartupError with exit 3, logs, retry in 1s", err)
		}
		if d := time.Since(start); d != 30*time.Millisecond {
			t.Fatalf("failed after %v, want as soon as the container exited", d)
		}
		// Within the backoff: the same error, at once, no new container.
		_, err2 := f.exec(t.Context(), "bad", map[string]any{})
		if err2 != err {
			t.Fatalf("within the backoff got %v, want the same error", err2)
		}
		if created, _ := f.eng.counts(); created != 1 {
			t.Fatalf("created %d containers within the backoff", created)
		}
		// After it: a new attempt, and a doubled backoff.
		time.Sleep(time.Second)
		_, err = f.exec(t.Context(), "bad", map[string]any{})
		if !errors.As(err, &se) || se.RetryIn != 2*time.Second {
			t.Fatalf("got %v, want a retry with a 2s backoff", err)
		}
		for range 3 {
			time.Sleep(5 * time.Second)
			f.exec(t.Context(), "bad", map[string]any{})
		}
		if !errors.As(err, &se) {
			t.Fatal(err)
		}
		_, err = f.exec(t.Context(), "bad", map[string]any{})
		if !errors.As(err, &se) || se.RetryIn != 4*time.Second {
			t.Fatalf("got %v, want the backoff capped at 4s", err)
		}
		if created, _ := f.eng.counts(); created != 5 {
			t.Fatalf("created %d containers, want 5 (one per backoff window)", created)
		}
		for i := range 5 {
			if c := f.eng.container(i); !c.removed {
				t.Fatalf("container %d not removed", i)
			}
		}
		if n := f.rt.Stats().Failures.StartupFailures; n != 5 {
			t.Fatalf("startup failures %d", n)
		}
	})
}

func TestStartupTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"nobind": {neverBinds: true, logs: "sleeping"}}, WithStartupTimeout(2*time.Second))
		defer f.close()
		start := time.Now()
		_, err := f.exec(t.Context(), "nobind", map[string]any{})
		var se *StartupError
		if !errors.As(err, &se) || se.Exited || se.Logs != "sleeping" {
			t.Fatalf("got %v, want *StartupError with logs, container not exited", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("failed after %v, want the startup timeout", d)
		}
		synctest.Wait()
		if c := f.eng.container(0); c.stops != 1 || !c.removed {
			t.Fatalf("stops %d, removed %v", c.stops, c.removed)
		}
	})
}

// A failed scale-out leaves the warm container serving.
func TestFailedScaleOutKeepsServing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {handle: sleepFor(time.Second)}}, WithMaxContainers(2))
		defer f.close()
		if err := f.rt.Warm(t.Context(), f.path("app")); err != nil {
			t.Fatal(err)
		}
		// Every further container of the image fails to start.
		f.eng.mu.Lock()
		f.eng.apps["cfg-app"] = fakeApp{exitAtStart: intp(1)}
		f.eng.mu.Unlock()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, err := f.exec(t.Context(), "app", map[string]any{}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})
}

func TestIdleReaping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"app": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
			m, _ := protocol.DecodePayload(p)
			if d, ok := m["sleep"].(int64); ok {
				return sleepFor(time.Duration(d)*time.Second)(ctx, c, p)
			}
			return p, nil
		}}}, WithIdleTimeout(10*time.Second), WithRequestTimeout(time.Minute))
		defer f.close()
		// A request longer than the idle timeout keeps its container.
		if _, err := f.exec(t.Context(), "app", map[string]any{"sleep": 25}); err != nil {
			t.Fatal(err)
		}
		if _, running := f.eng.counts(); running != 1 {
			t.Fatal("a container with a request in flight was reaped")
		}
		c := f.eng.container(0)
		dir := c.spec.Mounts[0].Source
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if _, running := f.eng.counts(); running != 1 {
			t.Fatal("reaped before the idle timeout")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c.stops != 1 || !c.removed {
			t.Fatalf("idle container: stops %d, removed %v", c.stops, c.removed)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("socket directory %s still there: %v", dir, err)
		}
		if p := f.rt.Stats().Pools[0]; p.Containers != 0 {
			t.Fatalf("pool %+v", p)
		}
	})
}

func TestCloseFailsRequestsAndStopsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{
			"hang":     {handle: sleepFor(time.Hour)},
			"starting": {readyAfter: time.Hour},
		}, WithMaxContainers(2), WithContainerConcurrency(1), WithRequestTimeout(2*time.Hour), WithStartupTimeout(2*time.Hour))
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for _, name := range []string{"hang", "hang", "hang", "starting"} { // two in flight, one queued, one starting
			wg.Go(func() {
				_, err := f.exec(t.Context(), name, map[string]any{})
				errs <- err
			})
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		var dirs []string
		for i := range 3 { // two serving "hang", one starting
			dirs = append(dirs, f.eng.container(i).spec.Mounts[0].Source)
		}
		start := time.Now()
		f.close()
		if d := time.Since(start); d != 0 {
			t.Fatalf("Close took %v", d)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		}
		created, running := f.eng.counts()
		if created != 3 || running != 0 {
			t.Fatalf("created %d, running %d", created, running)
		}
		for i := range created {
			if c := f.eng.container(i); c.stops != 1 || !c.removed {
				t.Fatalf("container %d: stops %d, removed %v; want exactly one stop", i, c.stops, c.removed)
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Fatalf("socket directory %s remains", d)
			}
		}
		if _, err := os.Stat(f.rt.inst.dir); !os.IsNotExist(err) {
			t.Fatal("runtime directory remains")
		}
		if _, err := f.exec(t.Context(), "hang", map[string]any{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
		if err := f.rt.Close(t.Context()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestEngineUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}})
		defer f.close()
		f.eng.mu.Lock()
		f.eng.unavailable = true
		f.eng.mu.Unlock()
		_, err := f.exec(t.Context(), "echo", map[string]any{})
		var ue *EngineUnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("got %v, want *EngineUnavailableError", err)
		}
		if n := f.rt.Stats().Failures.Engine; n != 1 {
			t.Fatalf("engine failures %d", n)
		}
	})
}

func TestMissingArtifact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		defer f.close()
		_, err := f.exec(t.Context(), "nope", map[string]any{})
		var ae *ArtifactError
		if !errors.As(err, &ae) || ae.Path != f.path("nope") {
			t.Fatalf("got %v, want *ArtifactError", err)
		}
	})
}

func TestBadRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}})
		defer f.close()
		_, err := f.rt.Execute(t.Context(), f.path("echo"), []int{1})
		var pe *protocol.PayloadError
		if !errors.As(err, &pe) {
			t.Fatalf("got %v, want *protocol.PayloadError", err)
		}
	})
}

func TestExecuteAs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}})
		defer f.close()
		type msg struct {
			Value string `msgpack:"value"`
			N     int    `msgpack:"n"`
		}
		got, err := ExecuteAs[msg](t.Context(), f.rt, f.path("echo"), msg{Value: "hi", N: 3})
		if err != nil || got != (msg{Value: "hi", N: 3}) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func TestContainerSpec(t *testing.T) {
	tests := []struct {
		name  string
		app   string
		opts  []Option
		check func(t *testing.T, spec engineSpec)
	}{
		{"defaults", "echo", nil, func(t *testing.T, s engineSpec) {
			if s.User != NonRootUser || !s.Init || !s.ReadOnlyRootfs || !s.NoNewPrivileges ||
				len(s.CapDrop) != 1 || s.CapDrop[0] != "ALL" || s.PidsLimit != DefaultPidsLimit ||
				s.MemoryBytes != DefaultMemoryLimit || s.NanoCPUs != 0 || s.NetworkMode != "none" || s.Tmpfs["/tmp"] == "" {
				t.Fatalf("spec %+v", s)
			}
			if len(s.Mounts) != 1 || s.Mounts[0].Target != "/run/ociapp" || s.Mounts[0].ReadOnly {
				t.Fatalf("mounts %+v", s.Mounts)
			}
			fi, err := os.Stat(s.Mounts[0].Source)
			if err != nil || fi.Mode().Perm() != 0o777 {
				t.Fatalf("socket dir: %v %v", fi, err)
			}
			for _, k := range []string{LabelManaged, LabelInstance, LabelStateDir, LabelArtifactDigest, LabelArtifactName} {
				if s.Labels[k] == "" {
					t.Fatalf("label %s missing: %v", k, s.Labels)
				}
			}
		}},
		{"imageuser", "user-app", nil, func(t *testing.T, s engineSpec) {
			if s.User != "1000:0" {
				t.Fatalf("user %q", s.User)
			}
		}},
		{"hostile", "hostile-app", nil, func(t *testing.T, s engineSpec) {
			want := map[string]string{"/tmp": "rw,nosuid,nodev,size=" + DefaultTmpfsSize, "/data": volumeTmpfsOptions, "/var/spool": volumeTmpfsOptions}
			if !maps.Equal(s.Tmpfs, want) {
				t.Fatalf("tmpfs %v, want %v", s.Tmpfs, want)
			}
			if s.Labels[LabelInstance] == "someone-else" || s.Labels["com.example.owner"] != "" {
				t.Fatalf("labels %v: the image's labels must be blank or overridden", s.Labels)
			}
		}},
		{"root", "echo", []Option{WithAllowRoot(true)}, func(t *testing.T, s engineSpec) {
			if s.User != "0:0" {
				t.Fatalf("user %q", s.User)
			}
		}},
		{"limits", "echo", []Option{WithMemoryLimit(64 << 20), WithCPULimit(1.5), WithNetwork("bridge"), WithPidsLimit(0)}, func(t *testing.T, s engineSpec) {
			if s.MemoryBytes != 64<<20 || s.NanoCPUs != 1_500_000_000 || s.NetworkMode != "bridge" || s.PidsLimit != 0 {
				t.Fatalf("spec %+v", s)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, map[string]fakeApp{tt.app: {}}, tt.opts...)
				defer f.close()
				if _, err := f.exec(t.Context(), tt.app, map[string]any{}); err != nil {
					t.Fatal(err)
				}
				tt.check(t, f.eng.container(0).spec)
			})
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  Option
	}{
		{"zero startup", WithStartupTimeout(0)},
		{"negative shutdown", WithShutdownTimeout(-1)},
		{"zero max", WithMaxContainers(0)},
		{"negative min", WithMinContainers(-1)},
		{"zero concurrency", WithContainerConcurrency(0)},
		{"tiny memory", WithMemoryLimit(1 << 20)},
		{"negative cpu", WithCPULimit(-1)},
		{"empty network", WithNetwork("")},
		{"inverted backoff", WithStartupBackoff(time.Minute, time.Second)},
		{"nil engine", WithEngine(nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(t.Context(), tt.opt, WithEngine(newFakeEngine()), WithStateDir(t.TempDir())); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := New(t.Context(), WithEngine(newFakeEngine()), WithStateDir(t.TempDir()), WithMinContainers(3), WithMaxContainers(2)); err == nil {
		t.Fatal("min above max accepted")
	}
}

func TestStateDirTooLong(t *testing.T) {
	long := filepath.Join(t.TempDir(), fmt.Sprintf("%0100d", 0))
	_, err := New(t.Context(), WithEngine(newFakeEngine()), WithStateDir(long))
	if err == nil {
		t.Fatal("accepted a state directory too long for socket paths")
	}
}

// recorder is a slog handler that keeps the messages it gets.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestStructuredLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		f := newFixture(t, map[string]fakeApp{
			"echo": {},
			"bad":  {exitAtStart: intp(1)},
		}, WithLogger(slog.New(rec)), WithIdleTimeout(time.Minute))
		defer f.close()
		if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		f.exec(t.Context(), "bad", map[string]any{})
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, want := range []string{"INFO image loaded", "INFO container ready", "WARN container failed to start", "INFO stopping idle container"} {
			if !slices.Contains(rec.msgs, want) {
				t.Errorf("no %q in the logs %q", want, rec.msgs)
			}
		}
	})
}

// Finding 7: images the runtime loaded stayed in the engine for good.
func TestUnusedImagesAreRemoved(t *testing.T) {
	opts := []Option{WithIdleTimeout(time.Second), WithReaperInterval(100 * time.Millisecond), WithImageRetention(5 * time.Second)}
	t.Run("removed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, map[string]fakeApp{"echo": {}}, opts...)
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second) // the container is reaped
			synctest.Wait()
			if !f.eng.hasImage("cfg-echo") {
				t.Fatal("the image was removed before the retention passed")
			}
			time.Sleep(5 * time.Second)
			synctest.Wait()
			if f.eng.hasImage("cfg-echo") || f.rt.Stats().ImageRemovals != 1 {
				t.Fatalf("the image is still there after the retention (stats %+v)", f.rt.Stats())
			}
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
			if n := f.eng.loadCount(); n != 2 {
				t.Fatalf("%d loads, want the image loaded again", n)
			}
			f.close()
			if f.eng.hasImage("cfg-echo") {
				t.Fatal("Close left the image it loaded")
			}
		})
	})
	t.Run("kept", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, map[string]fakeApp{"echo": {}}, append(opts, WithKeepImages(true))...)
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Second)
			f.close()
			if !f.eng.hasImage("cfg-echo") {
				t.Fatal("WithKeepImages: the image was removed")
			}
		})
	})
	t.Run("foreign", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, map[string]fakeApp{"echo": {}}, opts...)
			f.eng.images["cfg-echo"] = true // the engine had it already
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Second)
			f.close()
			if !f.eng.hasImage("cfg-echo") || f.eng.loadCount() != 0 {
				t.Fatal("an image the runtime did not load was removed")
			}
		})
	})
}

// Finding 5: an engine outage must not cost a request, a container or a
// removal.
func TestEngineOutageKeepsServing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, map[string]fakeApp{"echo": {}}, WithIdleTimeout(10*time.Second))
		defer f.close()
		if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		f.eng.setUnavailable(true)
		for range 5 {
			time.Sleep(time.Second)
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatalf("request during the outage: %v", err)
			}
		}
		if st := f.rt.Stats(); st.Failures.ContainerCrashes != 0 || st.ColdStarts != 1 {
			t.Fatalf("stats %+v: want the container kept", st)
		}
		// Reaped while the engine is away: its removal fails and waits.
		time.Sleep(15 * time.Second)
		synctest.Wait()
		c := f.eng.container(0)
		f.eng.mu.Lock()
		removed := c.removed
		f.eng.mu.Unlock()
		if removed || f.rt.Stats().Pools[0].Containers != 0 {
			t.Fatal("want the container out of the pool but not yet removed")
		}
		f.eng.setUnavailable(false)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		f.eng.mu.Lock()
		removed = c.removed
		f.eng.mu.Unlock()
		if !removed {
			t.Fatal("the container was not removed after the engine came back")
		}
	})
}

// The image is loaded from the file the request that needs it resolved,
// not from the one the pool was first created for: here that one is gone
// and a copy (same digest) is used.
func TestLoadFromRequestFile(t *testing.T) {
	opts := []Option{WithIdleTimeout(time.Second), WithReaperInterval(100 * time.Millisecond), WithImageRetention(5 * time.Second)}
	tests := []struct {
		name string
		// lose makes the engine lose the image once the first container
		// is gone.
		lose func(t *testing.T, f *fixture)
	}{
		// Collected by the runtime: the request loads it.
		{"collected", func(t *testing.T, f *fixture) {
			time.Sleep(5 * time.Second)
			synctest.Wait()
			if f.eng.hasImage("cfg-echo") {
				t.Fatal("the image was not collected")
			}
		}},
		// Removed behind the runtime's back: the container start loads it.
		{"removed", func(t *testing.T, f *fixture) {
			f.eng.mu.Lock()
			delete(f.eng.images, "cfg-echo")
			f.eng.mu.Unlock()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, map[string]fakeApp{"echo": {}}, opts...)
				defer f.close()
				if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
					t.Fatal(err)
				}
				copyPath := filepath.Join(f.dir, "copy.ociapp")
				if err := os.WriteFile(copyPath, []byte("echo"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(f.path("echo")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Second) // the container is reaped
				synctest.Wait()
				tt.lose(t, f)
				if _, err := f.rt.Execute(t.Context(), copyPath, map[string]any{}); err != nil {
					t.Fatalf("executing the copy: %v", err)
				}
				if n := f.eng.loadCount(); n != 2 {
					t.Fatalf("%d loads, want the image loaded again", n)
				}
			})
		})
	}
}

func TestPrepare(t *testing.T) {
	tests := []struct {
		name    string
		present bool // the engine has the image already
		file    string
		closed  bool
		wantErr func(error) bool
	}{
		{name: "loads an absent image", file: "echo"},
		{name: "finds a present image", present: true, file: "echo"},
		{name: "missing file", file: "missing", wantErr: func(err error) bool { return errors.As(err, new(*ArtifactError)) }},
		{name: "closed runtime", file: "echo", closed: true, wantErr: func(err error) bool { return errors.Is(err, ErrClosed) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, map[string]fakeApp{"echo": {}})
			defer f.close()
			if tt.present {
				f.eng.images["cfg-echo"] = true
			}
			if tt.closed {
				f.close()
			}
			rep, err := f.rt.Prepare(t.Context(), f.path(tt.file))
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("Prepare: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := PrepareReport{
				Artifact: Artifact{Path: f.path("echo"), Size: 4, Digest: "sha256:echo", ConfigDigest: "cfg-echo", Name: "echo", Version: "1"},
				Image:    "cfg-echo", ImagePresent: tt.present,
			}
			got := rep
			got.Verify, got.User, got.Check, got.Load = 0, 0, 0, 0
			if got != want {
				t.Fatalf("report %+v, want %+v", got, want)
			}
			if rep.Verify <= 0 || rep.Check <= 0 || (rep.Load > 0) == tt.present {
				t.Fatalf("timings: verify %v, check %v, load %v (image present: %v)", rep.Verify, rep.Check, rep.Load, tt.present)
			}
			wantLoads := 1
			if tt.present {
				wantLoads = 0
			}
			if n := f.eng.loadCount(); n != wantLoads {
				t.Fatalf("%d loads, want %d", n, wantLoads)
			}
			// The first Execute finds the artifact prepared: no second
			// verification, load or look-up.
			again, err := f.rt.Prepare(t.Context(), f.path("echo"))
			if err != nil || !again.ImagePresent || again.Check != 0 || again.Load != 0 {
				t.Fatalf("second Prepare: %+v, %v", again, err)
			}
			if _, err := f.exec(t.Context(), "echo", map[string]any{}); err != nil {
				t.Fatal(err)
			}
			if n := f.eng.loadCount(); n != wantLoads || f.opens != 1 {
				t.Fatalf("after Execute: %d loads, %d verifications", n, f.opens)
			}
		})
	}
}

// TestPollGroupCountsRequests checks that a runtime given a poll group
// counts its requests there, for its owner's other work to share.
func TestPollGroupCountsRequests(t *testing.T) {
	var g protocol.PollGroup
	g.Begin() // the owner's own request
	reached, release := make(chan struct{}), make(chan struct{})
	f := newFixture(t, map[string]fakeApp{"app": {handle: func(ctx context.Context, c *fakeContainer, p []byte) ([]byte, error) {
		reached <- struct{}{}
		<-release
		return p, nil
	}}}, WithPollGroup(&g))
	defer f.close()
	done := make(chan error)
	go func() {
		_, err := f.exec(t.Context(), "app", map[string]any{})
		done <- err
	}()
	<-reached
	if n := g.InFlight(); n != 2 {
		t.Errorf("while a request runs, the group counts %d, want 2 (the owner's and the runtime's)", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := g.InFlight(); n != 1 {
		t.Errorf("after the request, the group counts %d, want 1", n)
	}
}
