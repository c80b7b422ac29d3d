package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/internal/testenv"
)

func TestPing(t *testing.T) {
	e := requireDocker(t)
	if err := e.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if e.APIVersion() == "" || e.Host() == "" {
		t.Errorf("APIVersion %q, Host %q: want both set after New", e.APIVersion(), e.Host())
	}
}

func TestNewOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"empty host", WithHost("")},
		{"nil logger", WithLogger(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e, err := New(context.Background(), tc.opt); err == nil {
				e.Close()
				t.Fatal("New accepted an invalid option")
			}
		})
	}
}

const missingSocket = "unix:///nonexistent/ociapp-enginetest.sock"

func TestNewUnavailable(t *testing.T) {
	_, err := New(testCtx(t), WithHost(missingSocket), WithLogger(slog.New(slog.DiscardHandler)))
	var ue *engine.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("New with a missing socket: got %v, want *engine.UnavailableError", err)
	}
	if ue.Host != missingSocket {
		t.Errorf("Host = %q, want %q", ue.Host, missingSocket)
	}
	for _, want := range []string{"cannot reach the Docker daemon at " + missingSocket} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not contain %q", err, want)
		}
	}
}

// TestMethodsUnavailable checks that every method, not only New, reports a
// daemon that went away as *engine.UnavailableError.
func TestMethodsUnavailable(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost(missingSocket), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{cli: cli, log: slog.New(slog.DiscardHandler)}
	defer e.Close()
	ctx := testCtx(t)
	calls := map[string]func() error{
		"Ping":             func() error { return e.Ping(ctx) },
		"ImageExists":      func() error { _, err := e.ImageExists(ctx, "x:y"); return err },
		"LoadImage":        func() error { _, err := e.LoadImage(ctx, strings.NewReader("x")); return err },
		"CreateContainer":  func() error { _, err := e.CreateContainer(ctx, engine.ContainerSpec{Image: "x"}); return err },
		"StartContainer":   func() error { return e.StartContainer(ctx, "x") },
		"StopContainer":    func() error { return e.StopContainer(ctx, "x", time.Second) },
		"RemoveContainer":  func() error { return e.RemoveContainer(ctx, "x") },
		"InspectContainer": func() error { _, err := e.InspectContainer(ctx, "x"); return err },
		"WaitContainer":    func() error { _, err := e.WaitContainer(ctx, "x"); return err },
		"ContainerLogs":    func() error { _, err := e.ContainerLogs(ctx, "x", 10); return err },
		"ListContainers":   func() error { _, err := e.ListContainers(ctx, nil); return err },
		"BuildImage": func() error {
			_, err := e.BuildImage(ctx, engine.BuildRequest{Context: strings.NewReader("x")}, nil)
			return err
		},
		"SaveImage": func() error { _, err := e.SaveImage(ctx, "x:y"); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			var ue *engine.UnavailableError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want *engine.UnavailableError", err)
			}
		})
	}
}

func TestLoadAndImageExists(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	if !slices.Contains(img.Loaded, img.Ref) {
		t.Errorf("LoadImage of a tagged archive reported %q, want it to include %q", img.Loaded, img.Ref)
	}
	loaded, err := e.LoadImage(ctx, bytes.NewReader(img.Untagged))
	if err != nil {
		t.Fatalf("LoadImage untagged: %v", err)
	}
	if len(loaded) != 1 || loaded[0] != img.ID {
		t.Errorf("LoadImage of an untagged archive reported %q, want [%s]", loaded, img.ID)
	}

	// The classic store identifies an image by its config digest; the
	// containerd store by the digest of the manifest it stored, which for a
	// docker-save archive is one it wrote itself.
	if containerdStore(t, e) {
		t.Logf("containerd image store: image ID %s (config %s, manifest %s)", img.ID, img.Config, img.Manifest)
	} else if img.ID != img.Config {
		t.Errorf("classic store image ID = %s, want the config digest %s", img.ID, img.Config)
	}
	for _, tc := range []struct {
		ref  string
		want bool
	}{
		{img.Ref, true},
		{img.ID, true},
		{strings.TrimPrefix(img.ID, "sha256:")[:12], true},
		{"ociapp-enginetest:missing-" + randomHex(4), false},
		{"sha256:" + strings.Repeat("0", 64), false},
	} {
		got, err := e.ImageExists(ctx, tc.ref)
		if err != nil {
			t.Errorf("ImageExists(%q): %v", tc.ref, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ImageExists(%q) = %t, want %t", tc.ref, got, tc.want)
		}
	}
	if _, err := e.ImageExists(ctx, ""); err == nil {
		t.Error("ImageExists(\"\") succeeded, want an error")
	}
}

func TestLoadImageRejected(t *testing.T) {
	e := requireDocker(t)
	for name, archive := range map[string][]byte{
		"not a tar": []byte("this is not an image archive"),
		"empty tar": emptyTar(t),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.LoadImage(testCtx(t), bytes.NewReader(archive))
			var le *engine.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want *engine.LoadError", err)
			}
			if le.Message == "" {
				t.Error("LoadError has no message")
			}
		})
	}
}

func TestLoadImageReadError(t *testing.T) {
	e := requireDocker(t)
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader(strings.Repeat("x", 4096)), &failingReader{err: boom})
	_, err := e.LoadImage(testCtx(t), r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the archive reader's error", err)
	}
	var ue *engine.UnavailableError
	if errors.As(err, &ue) {
		t.Errorf("a failing archive reader was reported as an unavailable daemon: %v", err)
	}
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

func emptyTar(t *testing.T) []byte {
	var b bytes.Buffer
	if err := tar.NewWriter(&b).Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestContainerLifecycle(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	id := createContainer(t, e, engine.ContainerSpec{Image: img.Ref, Cmd: []string{"exit", "3"}})
	st, err := e.InspectContainer(ctx, id)
	if err != nil {
		t.Fatalf("InspectContainer: %v", err)
	}
	if st.ID != id || st.Status != "created" || st.Running {
		t.Errorf("created container state = %+v", st)
	}
	start := time.Now()
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	st, err = e.WaitContainer(ctx, id)
	if err != nil {
		t.Fatalf("WaitContainer: %v", err)
	}
	if st.Running || st.Status != "exited" || st.ExitCode != 3 || st.OOMKilled {
		t.Errorf("final state = %+v, want exited with code 3", st)
	}
	// Both recent; the daemon stamps a fast exit's FinishedAt a little
	// before its StartedAt, so their order is not checked.
	for name, ts := range map[string]time.Time{"StartedAt": st.StartedAt, "FinishedAt": st.FinishedAt} {
		if ts.Before(start.Add(-time.Minute)) || ts.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s = %v, want close to %v", name, ts, start)
		}
	}

	// An exited container: the wait must return at once, not wait for a
	// next exit that never comes.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	again, err := e.WaitContainer(waitCtx, id)
	if err != nil || again.ExitCode != 3 {
		t.Errorf("second WaitContainer = %+v, %v; want the same final state at once", again, err)
	}

	logs, err := e.ContainerLogs(ctx, id, 0)
	if err != nil {
		t.Fatalf("ContainerLogs: %v", err)
	}
	for _, want := range []string{"stdout before exit", "stderr before exit", "exiting with 3"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs %q do not contain %q", logs, want)
		}
	}
}

func TestContainerLogsTail(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	id := createContainer(t, e, engine.ContainerSpec{Image: img.Ref, Cmd: []string{"lines", "10"}})
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Docker copies stdout and stderr separately, so lines written to the two
	// streams close together may be logged in either order: compare the
	// lines as sets, and check that the tail is the end of the log.
	all, err := e.ContainerLogs(ctx, id, 0)
	if err != nil {
		t.Fatalf("ContainerLogs(0): %v", err)
	}
	allLines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	if got := slices.Sorted(slices.Values(allLines)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("ContainerLogs(0) = %q, want lines 1 to 10 from both streams", all)
	}
	for _, tail := range []int{3, 1} {
		got, err := e.ContainerLogs(ctx, id, tail)
		if err != nil {
			t.Fatalf("ContainerLogs(%d): %v", tail, err)
		}
		if wantTail := strings.Join(allLines[len(allLines)-tail:], "\n") + "\n"; got != wantTail {
			t.Errorf("ContainerLogs(%d) = %q, want the log's last %d lines %q", tail, got, tail, wantTail)
		}
	}
}

func TestWaitContainerContextEnds(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	id := createContainer(t, e, engine.ContainerSpec{Image: img.Ref, Cmd: []string{"ignore-term"}})
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.WaitContainer(waitCtx, id)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitContainer on a running container with a 300ms deadline: got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("WaitContainer returned %v after its deadline", d)
	}
}

// TestWaitContainerRemoved: a runtime force-removes a worker while another
// goroutine waits for it; the wait reports the kill, not an error.
func TestWaitContainerRemoved(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	id := createContainer(t, e, engine.ContainerSpec{Image: img.Ref, Cmd: []string{"ignore-term"}})
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, e, id, "ignoring SIGTERM")
	type result struct {
		st  engine.ContainerState
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.WaitContainer(ctx, id)
		done <- result{st, err}
	}()
	time.Sleep(500 * time.Millisecond) // let the wait reach the daemon
	if err := e.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("WaitContainer: %v", r.err)
	}
	if r.st.Running || r.st.ExitCode != 137 {
		t.Errorf("state = %+v, want killed (exit code 137)", r.st)
	}
	t.Logf("state after removal: %+v", r.st)
}

func TestStopContainer(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)

	for _, tc := range []struct {
		name     string
		cmd      []string
		ready    string
		grace    time.Duration
		wantCode int
		minTime  time.Duration // the stop takes at least this long
		maxTime  time.Duration // and at most this long
	}{
		// Exits on SIGTERM: the stop returns long before the grace ends.
		{"handles SIGTERM", []string{"term-exit"}, "waiting for SIGTERM", 20 * time.Second, 0, 0, 10 * time.Second},
		// Ignores SIGTERM: killed once the grace has passed.
		{"ignores SIGTERM", []string{"ignore-term"}, "ignoring SIGTERM", 1500 * time.Millisecond, 137, 1500 * time.Millisecond, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			id := createContainer(t, e, engine.ContainerSpec{Image: img.Ref, Cmd: tc.cmd, Init: true})
			if err := e.StartContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
			waitForLog(t, e, id, tc.ready)
			start := time.Now()
			if err := e.StopContainer(ctx, id, tc.grace); err != nil {
				t.Fatalf("StopContainer: %v", err)
			}
			took := time.Since(start)
			if took < tc.minTime || took > tc.maxTime {
				t.Errorf("stop took %v, want between %v and %v", took, tc.minTime, tc.maxTime)
			}
			st, err := e.InspectContainer(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if st.Running || st.ExitCode != tc.wantCode {
				t.Errorf("state after stop = %+v, want stopped with exit code %d", st, tc.wantCode)
			}
			// Stopping a stopped container is fine.
			if err := e.StopContainer(ctx, id, time.Second); err != nil {
				t.Errorf("second StopContainer: %v", err)
			}
		})
	}
}

func TestOOMKilled(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	// containerd's shim starts watching a container for OOM kills only
	// after the process started, and misses one that came before: the
	// process allocates once StartContainer returned, which is after.
	dir := t.TempDir()
	id := createContainer(t, e, engine.ContainerSpec{
		Image:       img.Ref,
		Cmd:         []string{"alloc", "512", "/mnt/signal/go"},
		Mounts:      []engine.Mount{{Source: dir, Target: "/mnt/signal"}},
		MemoryBytes: 32 << 20,
	})
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := e.WaitContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 137 {
		logs, _ := e.ContainerLogs(ctx, id, 5)
		t.Fatalf("state = %+v, want killed (exit code 137); logs: %q", st, logs)
	}
	if !st.OOMKilled {
		t.Errorf("the container was killed but OOMKilled is false. If the host uses cgroup v1, "+
			"containerd's shim loses track of the container's cgroup when a hierarchy listed in "+
			"/proc/self/cgroup is not mounted (see docs/engine.md, \"OOM kills\"); state: %+v", st)
	}
}

func TestNotFound(t *testing.T) {
	e := requireDocker(t)
	ctx := testCtx(t)
	missing := "ociapp-enginetest-missing-" + randomHex(4)

	if err := e.RemoveContainer(ctx, missing); err != nil {
		t.Errorf("RemoveContainer of a missing container: %v, want nil", err)
	}
	for name, call := range map[string]func() error{
		"InspectContainer": func() error { _, err := e.InspectContainer(ctx, missing); return err },
		"StartContainer":   func() error { return e.StartContainer(ctx, missing) },
		"StopContainer":    func() error { return e.StopContainer(ctx, missing, time.Second) },
		"WaitContainer":    func() error { _, err := e.WaitContainer(ctx, missing); return err },
		"ContainerLogs":    func() error { _, err := e.ContainerLogs(ctx, missing, 1); return err },
		"CreateContainer": func() error {
			_, err := e.CreateContainer(ctx, engine.ContainerSpec{Image: "ociapp-enginetest:missing-" + randomHex(4)})
			return err
		},
		"SaveImage": func() error {
			rc, err := e.SaveImage(ctx, "ociapp-enginetest:missing-"+randomHex(4))
			if err == nil {
				rc.Close()
			}
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, engine.ErrNotFound) {
				t.Errorf("got %v, want an error wrapping engine.ErrNotFound", err)
			}
		})
	}
}

func TestListContainersByLabel(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)
	run := randomHex(6)
	const runKey = "dev.ociapp.enginetest.run"

	names := map[string]string{} // role -> container name
	for _, role := range []string{"a", "b"} {
		names[role] = "ociapp-enginetest-" + run + "-" + role
		createContainer(t, e, engine.ContainerSpec{
			Name:   names[role],
			Image:  img.Ref,
			Labels: map[string]string{runKey: run, "dev.ociapp.enginetest.role": role},
		})
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{"run", map[string]string{runKey: run}, []string{names["a"], names["b"]}},
		{"run and role", map[string]string{runKey: run, "dev.ociapp.enginetest.role": "b"}, []string{names["b"]}},
		{"other run", map[string]string{runKey: run + "x"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := e.ListContainers(ctx, tc.labels)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range list {
				if len(c.Names) != 1 {
					t.Errorf("container %s has names %q, want one", c.ID, c.Names)
					continue
				}
				got = append(got, c.Names[0])
				if c.State != "created" || c.Image != img.Ref || c.Labels[runKey] != run {
					t.Errorf("summary = %+v", c)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("listed %q, want %q", got, tc.want)
			}
		})
	}
	// A key with an empty value matches the key with any value.
	list, err := e.ListContainers(ctx, map[string]string{"dev.ociapp.enginetest.role": "", runKey: run})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Errorf("key-only filter listed %d containers, want 2", len(list))
	}
}

func TestHardenedContainer(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	dir := t.TempDir()
	// The container user is not root: it needs to write the shared directory.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	id := createContainer(t, e, engine.ContainerSpec{
		Image:           img.Ref,
		Cmd:             []string{"probe", "/mnt/shared"},
		Env:             []string{"OCIAPP_TEST=1"},
		User:            "65534:65534",
		Mounts:          []engine.Mount{{Source: dir, Target: "/mnt/shared"}},
		Init:            true,
		ReadOnlyRootfs:  true,
		Tmpfs:           map[string]string{"/tmp": "rw,noexec,nosuid,size=16m"},
		CapDrop:         []string{"ALL"},
		NoNewPrivileges: true,
		PidsLimit:       64,
		MemoryBytes:     128 << 20,
		NanoCPUs:        500_000_000,
		NetworkMode:     "none",
	})
	if err := e.StartContainer(ctx, id); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	st, err := e.WaitContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := e.ContainerLogs(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 0 {
		t.Fatalf("probe exited %d; logs:\n%s", st.ExitCode, logs)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"uid":             "65534",
		"rootfs_writable": "false",
		"tmp_writable":    "true",
		"mount_writable":  "true",
		"CapEff":          "0000000000000000",
		"CapBnd":          "0000000000000000",
		"NoNewPrivs":      "1",
		"interfaces":      "lo",
		"pids_max":        "64",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if !strings.Contains(got["pid1"], "init") {
		t.Errorf("PID 1 is %q, want the engine's init process", got["pid1"])
	}
	if b, err := os.ReadFile(filepath.Join(dir, "from-container")); err != nil || string(b) != "hello\n" {
		t.Errorf("file written through the mount: %q, %v", b, err)
	}
}

// contextTar makes a build context from name -> content.
func contextTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBuildImage(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	tag := "ociapp-enginetest-build:" + randomHex(6)
	removeImageLater(tag)
	files := map[string]string{
		"build/Containerfile": "FROM " + img.Ref + "\n" +
			"ARG GREETING\n" +
			"COPY hello.txt /hello.txt\n" +
			`RUN ["/testprog", "write", "/built.txt"]` + "\n" +
			"ENV GREETING=${GREETING}\n",
		"hello.txt": "hello\n",
	}
	greeting := "hi"
	build := func() (string, []engine.BuildEvent) {
		var events []engine.BuildEvent
		id, err := e.BuildImage(ctx, engine.BuildRequest{
			Context:       bytes.NewReader(contextTar(t, files)),
			Containerfile: "build/Containerfile",
			Tags:          []string{tag},
			Labels:        map[string]string{"dev.ociapp.enginetest": "build"},
			BuildArgs:     map[string]*string{"GREETING": &greeting},
		}, func(ev engine.BuildEvent) { events = append(events, ev) })
		if err != nil {
			t.Fatalf("BuildImage: %v", err)
		}
		return id, events
	}

	id, events := build()
	if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
		t.Errorf("BuildImage returned ID %q, want sha256:<64 hex>", id)
	}
	var steps []string
	for _, ev := range events {
		if ev.Step != "" {
			steps = append(steps, ev.Step)
		}
	}
	// Five instructions, and a LABEL step the classic builder adds for the
	// request's labels.
	first := regexp.MustCompile(`^Step 1/6 : FROM ` + regexp.QuoteMeta(img.Ref) + `$`)
	if len(steps) != 6 || !first.MatchString(steps[0]) {
		t.Errorf("steps = %q, want one per instruction starting with FROM", steps)
	}
	for _, ref := range []string{tag, id} {
		if ok, err := e.ImageExists(ctx, ref); err != nil || !ok {
			t.Errorf("ImageExists(%q) = %t, %v after the build", ref, ok, err)
		}
	}

	// The same build again: every step from the cache, the same image.
	start := time.Now()
	id2, events2 := build()
	if id2 != id {
		t.Errorf("rebuild gave %s, want the cached %s", id2, id)
	}
	cached := 0
	for _, ev := range events2 {
		if strings.Contains(ev.Stream, "Using cache") {
			cached++
		}
	}
	if cached < 3 {
		t.Errorf("rebuild used the cache %d times, want every step after FROM; events: %+v", cached, events2)
	}
	t.Logf("cached rebuild took %v", time.Since(start))

	// The built image runs: the file the RUN step wrote is there.
	cid := createContainer(t, e, engine.ContainerSpec{Image: id, Cmd: []string{"write", "/built.txt"}})
	if err := e.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if st, err := e.WaitContainer(ctx, cid); err != nil || st.ExitCode != 0 {
		t.Errorf("container from the built image: %+v, %v", st, err)
	}
}

func TestBuildImageFailure(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)

	for _, tc := range []struct {
		name          string
		containerfile string
		wantStep      string // "" : fails before the first step
		wantInMessage string
		wantInOutput  string
	}{
		{
			name:          "failing RUN",
			containerfile: "FROM " + img.Ref + "\n" + `RUN ["/testprog", "exit", "7"]` + "\n",
			wantStep:      `Step 2/2 : RUN ["/testprog", "exit", "7"]`,
			wantInMessage: "7",
			wantInOutput:  "exiting with 7",
		},
		{
			name:          "unknown instruction",
			containerfile: "FROM " + img.Ref + "\nFROBNICATE everything\n",
			wantInMessage: "FROBNICATE",
		},
		{
			name:          "missing base image without pull",
			containerfile: "FROM ociapp-enginetest-missing:" + randomHex(4) + "\n",
			wantStep:      "Step 1/1 : FROM ociapp-enginetest-missing:",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var events []engine.BuildEvent
			_, err := e.BuildImage(testCtx(t), engine.BuildRequest{
				Context:       bytes.NewReader(contextTar(t, map[string]string{"Containerfile": tc.containerfile})),
				Containerfile: "Containerfile",
			}, func(ev engine.BuildEvent) { events = append(events, ev) })
			var be *engine.BuildError
			if !errors.As(err, &be) {
				t.Fatalf("got %v, want *engine.BuildError", err)
			}
			if tc.wantStep == "" && be.Step != "" || !strings.HasPrefix(be.Step, tc.wantStep) {
				t.Errorf("Step = %q, want %q", be.Step, tc.wantStep)
			}
			if !strings.Contains(be.Message, tc.wantInMessage) {
				t.Errorf("Message = %q, want it to contain %q", be.Message, tc.wantInMessage)
			}
			if !strings.Contains(be.Output, tc.wantInOutput) {
				t.Errorf("Output = %q, want it to contain %q", be.Output, tc.wantInOutput)
			}
			if be.Step != "" && !strings.Contains(err.Error(), be.Step) {
				t.Errorf("error %q does not name the failing step", err)
			}
		})
	}
}

func TestSaveImage(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)

	rc, err := e.SaveImage(testCtx(t), img.Ref)
	if err != nil {
		t.Fatalf("SaveImage: %v", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the saved archive: %v", err)
		}
		if hdr.Name == "manifest.json" {
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				t.Fatalf("decoding manifest.json: %v", err)
			}
		}
	}
	if len(manifest) != 1 || !slices.Contains(manifest[0].RepoTags, img.Ref) || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json = %+v, want one image tagged %s with one layer", manifest, img.Ref)
	}
}

// containerdStore reports whether the daemon keeps images in containerd's
// image store rather than its classic one.
func containerdStore(t *testing.T, e *Engine) bool {
	t.Helper()
	info, err := e.cli.Info(testCtx(t))
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	for _, kv := range info.DriverStatus {
		if kv[0] == "driver-type" && kv[1] == "io.containerd.snapshotter.v1" {
			return true
		}
	}
	return false
}

// TestLoadOCILayout loads an OCI image layout archive that names its image
// only in the index annotations, as .ociapp artifacts do.
func TestLoadOCILayout(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	ref := "ociapp-enginetest-oci:" + randomHex(6)
	removeImageLater(ref)
	archive := ociLayoutArchive(t, img.Image, map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          "docker.io/library/" + ref,
	})
	loaded, err := e.LoadImage(ctx, bytes.NewReader(archive))
	if !containerdStore(t, e) {
		// The classic store reads only docker-save's manifest.json; Docker
		// 20.10 rejects an archive without one.
		var le *engine.LoadError
		if e.APIVersion() == "1.41" && !errors.As(err, &le) {
			t.Errorf("classic store, API 1.41: LoadImage = %q, %v; want *engine.LoadError", loaded, err)
		}
		t.Logf("classic store: OCI layout load gave %q, %v", loaded, err)
		return
	}
	if err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if !slices.Contains(loaded, ref) {
		t.Errorf("LoadImage reported %q, want it to include %q", loaded, ref)
	}
	// The containerd store knows the image by tag and by manifest digest,
	// not by config digest.
	for _, tc := range []struct {
		ref  string
		want bool
	}{
		{ref, true},
		{img.Manifest, true},
		{img.Config, false},
	} {
		got, err := e.ImageExists(ctx, tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("ImageExists(%q) = %t, %v; want %t", tc.ref, got, err, tc.want)
		}
	}
}

// ociLayoutArchive writes img as the single manifest of an OCI layout with
// the given index annotations, and tars it.
func ociLayoutArchive(t *testing.T, img v1.Image, annotations map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(annotations)); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestLoadCombinedArchive loads the .ociapp shape: an OCI layout that also
// carries a docker-save manifest.json over the same blobs. Every store must
// accept it and report the tag.
func TestLoadCombinedArchive(t *testing.T) {
	e := requireDocker(t)
	img := requireImage(t, e)
	ctx := testCtx(t)

	ref := "ociapp-enginetest-combined:" + randomHex(6)
	removeImageLater(ref)
	archive := combinedArchive(t, img.Image, ref)
	loaded, err := e.LoadImage(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if !slices.Contains(loaded, ref) {
		t.Errorf("LoadImage reported %q, want it to include %q", loaded, ref)
	}
	// The tag names the layout's manifest on the containerd store (not one
	// synthesized from manifest.json) and the config on the classic store.
	wantID, otherID := img.Config, img.Manifest
	if containerdStore(t, e) {
		wantID, otherID = img.Manifest, img.Config
	}
	insp, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if insp.ID != wantID {
		t.Errorf("%s has ID %s, want %s", ref, insp.ID, wantID)
	}
	want := map[string]bool{ref: true, wantID: true, otherID: false}
	for r, w := range want {
		if got, err := e.ImageExists(ctx, r); err != nil || got != w {
			t.Errorf("ImageExists(%q) = %t, %v; want %t", r, got, err, w)
		}
	}
}

// combinedArchive writes img as an OCI layout named ref in the index
// annotations, adds a docker-save manifest.json pointing at the layout's
// blobs, and tars it.
func combinedArchive(t *testing.T, img v1.Image, ref string) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          "docker.io/library/" + ref,
	})); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	entry := struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{Config: blob(m.Config.Digest), RepoTags: []string{ref}}
	for _, l := range m.Layers {
		entry.Layers = append(entry.Layers, blob(l.Digest))
	}
	mj, err := json.Marshal([]any{entry})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), mj, 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// variantImage loads a copy of the test image with its config changed by
// edit (so it has an ID of its own) and returns that ID.
func variantImage(t *testing.T, e *Engine, edit func(*v1.Config)) string {
	t.Helper()
	img := requireImage(t, e).Image
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, "VARIANT="+randomHex(6))
	edit(&cf.Config)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// A digest reference writes no RepoTags: the image is loaded untagged,
	// as the runtime loads artifacts.
	ref, err := name.NewDigest("ociapp-enginetest@" + dg.String())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	loaded, err := e.LoadImage(testCtx(t), &buf)
	if err != nil || len(loaded) != 1 || !strings.HasPrefix(loaded[0], "sha256:") {
		t.Fatalf("loading the variant: %v %v", loaded, err)
	}
	removeImageLater(loaded[0])
	return loaded[0]
}

// An image's STOPSIGNAL (here one the program ignores) must not replace
// SIGTERM: the graceful stop would turn into a kill after the grace.
func TestStopContainerIgnoresImageStopSignal(t *testing.T) {
	e := requireDocker(t)
	id := variantImage(t, e, func(c *v1.Config) { c.StopSignal = "SIGCONT" })
	ctx := testCtx(t)
	cid := createContainer(t, e, engine.ContainerSpec{Image: id, Cmd: []string{"term-exit"}, Init: true})
	if err := e.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, e, cid, "waiting for SIGTERM")
	start := time.Now()
	if err := e.StopContainer(ctx, cid, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := e.InspectContainer(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second || st.ExitCode != 0 {
		t.Fatalf("stop took %v with exit code %d, want SIGTERM's prompt exit 0", took, st.ExitCode)
	}
}

func TestRemoveImage(t *testing.T) {
	e := requireDocker(t)
	id := variantImage(t, e, func(*v1.Config) {})
	ctx := testCtx(t)
	cid := createContainer(t, e, engine.ContainerSpec{Image: id, Cmd: []string{"exit", "0"}})
	if err := e.RemoveImage(ctx, id); !errors.Is(err, engine.ErrInUse) {
		t.Fatalf("removing an image a container uses: %v, want ErrInUse", err)
	}
	if err := e.RemoveContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveImage(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.ImageExists(ctx, id); ok || err != nil {
		t.Fatalf("image still there: %v %v", ok, err)
	}
	if err := e.RemoveImage(ctx, id); err != nil {
		t.Fatalf("removing a missing image: %v", err)
	}
}

// TestCgroupParent: by default, with the cgroupfs driver, each container's
// cgroup is its own at the top (a process's CPU weight), and removing the
// container leaves none behind; DaemonCgroupParent keeps the daemon's
// parent. Under the systemd driver both keep the daemon's.
func TestCgroupParent(t *testing.T) {
	daemonParent, err := New(testCtx(t), WithCgroupParent(DaemonCgroupParent))
	if err != nil {
		testenv.Need(t, "Docker", "start it with scripts/ensure-docker.sh", err)
	}
	defer daemonParent.Close()
	auto := requireDocker(t)
	img := requireImage(t, auto)
	info, err := auto.cli.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	top := info.CgroupDriver == "cgroupfs"
	for _, c := range []struct {
		name string
		e    *Engine
		top  bool
	}{
		{"default", auto, top},
		{"daemon's parent", daemonParent, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testCtx(t)
			id, err := c.e.CreateContainer(ctx, engine.ContainerSpec{Image: img.Ref, Cmd: []string{"ignore-term"}, Labels: map[string]string{"dev.ociapp.enginetest": "true"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.e.RemoveContainer(context.Background(), id) })
			if err := c.e.StartContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
			ins, err := c.e.cli.ContainerInspect(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			path := cgroupOf(t, ins.State.Pid)
			atTop := path == "/"+id
			if atTop != c.top || !strings.HasSuffix(path, id) && !strings.Contains(path, "docker-"+id) {
				t.Errorf("the container's cgroup is %q (driver %s), want at the top: %v", path, info.CgroupDriver, c.top)
			}
			if err := c.e.RemoveContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
			if _, err := cpustat.ContainerCgroup(cpustat.CgroupRoot, id); !errors.Is(err, cpustat.ErrNoCgroup) {
				t.Errorf("after removal, the container's cgroup: %v; want none left", err)
			}
		})
	}
}

// cgroupOf returns the cgroup of process pid: the CPU controller's in
// cgroup v1, the unified one in v2.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && (parts[0] == "0" && parts[1] == "" || slices.Contains(strings.Split(parts[1], ","), "cpu")) {
			return parts[2]
		}
	}
	t.Fatalf("no cpu cgroup in %s", data)
	return ""
}
