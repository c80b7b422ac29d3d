package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/internal/testapps"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
)

// End-to-end tests with hostile artifacts (issue 11): image configs that
// try to run as root, name host images, create volumes, defeat the
// graceful stop or claim other labels.

// hostileArtifact builds the hostile test app with app's config changes
// into a fresh artifact and removes its image when the test ends.
func hostileArtifact(t *testing.T, name string, app testapps.App) string {
	t.Helper()
	app.Package = testapps.Module + "/internal/testapps/hostile"
	if app.Args == nil && app.Entrypoint == nil {
		app.Args = []string{"serve"}
	}
	path := filepath.Join(t.TempDir(), name+"-0.1.0.ociapp")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testapps.Build(ctx, name, app, path); err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTestImage(t, a.ConfigDigest.String()) })
	return path
}

// removeTestImage removes an image a test created, when the test ends.
func removeTestImage(t *testing.T, ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "image", "rm", "-f", ref).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such image") {
		t.Logf("removing image %s: %v: %s", ref, err, out)
	}
}

// dockerInspect returns `docker inspect` of a container or image, decoded.
func dockerInspect(t *testing.T, kind, ref string) map[string]any {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "docker", kind, "inspect", ref).Output()
	if err != nil {
		t.Fatalf("docker %s inspect %s: %v", kind, ref, err)
	}
	var list []map[string]any
	if err := json.Unmarshal(out, &list); err != nil || len(list) != 1 {
		t.Fatalf("docker %s inspect %s: %v %s", kind, ref, err, out)
	}
	return list[0]
}

// readyContainer returns the ID of a ready container of the artifact's pool.
func readyContainer(t *testing.T, rt *Runtime) string {
	t.Helper()
	for _, p := range rt.poolList() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.ready) > 0 {
			return p.ready[0].containerID
		}
	}
	t.Fatal("no ready container")
	return ""
}

// Finding 3: users that are uid 0 without saying "root" or "0" ran as root.
func TestDockerImageUserIsResolvedLikeTheEngine(t *testing.T) {
	passwd := testapps.File{Name: "etc/passwd", Mode: 0o644, Data: []byte("admin:x:0:0::/:/app\napp:x:1000:1001::/:/app\n")}
	group := testapps.File{Name: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nwheel:x:10:app\napp:x:1001:\n")}
	tests := []struct {
		name, user string
		allowRoot  bool
		uid, gid   int
	}{
		{name: "double-zero", user: "00", uid: 65532, gid: 65532},
		{name: "plus-zero", user: "+0", uid: 65532, gid: 65532},
		{name: "root-alias", user: "admin", uid: 65532, gid: 65532},
		{name: "root-alias-group", user: "admin:wheel", uid: 65532, gid: 65532},
		{name: "named", user: "app", uid: 1000, gid: 1001}, // no supplementary group (wheel)
		{name: "allowed-root", user: "+0", allowRoot: true, uid: 0, gid: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := hostileArtifact(t, "user-"+tt.name, testapps.App{User: tt.user, Files: []testapps.File{passwd, group}})
			rt, _ := newDockerRuntime(t, WithAllowRoot(tt.allowRoot))
			resp, err := rt.Execute(t.Context(), path, map[string]any{})
			if err != nil {
				t.Fatal(err)
			}
			if resp["uid"] != int64(tt.uid) || resp["gid"] != int64(tt.gid) {
				t.Fatalf("image user %q ran as %v:%v (groups %v), want %d:%d", tt.user, resp["uid"], resp["gid"], resp["groups"], tt.uid, tt.gid)
			}
			if groups := fmt.Sprint(resp["groups"]); groups != "[]" && groups != fmt.Sprintf("[%d]", tt.gid) {
				t.Fatalf("supplementary groups %s, want none", groups)
			}
		})
	}

	t.Run("unknown-name", func(t *testing.T) {
		path := hostileArtifact(t, "user-unknown", testapps.App{User: "nosuch", Files: []testapps.File{passwd}})
		rt, _ := newDockerRuntime(t)
		_, err := rt.Execute(t.Context(), path, map[string]any{})
		var ae *ArtifactError
		var ue *artifact.UserError
		if !errors.As(err, &ae) || !errors.As(err, &ue) {
			t.Fatalf("got %v, want *ArtifactError wrapping *artifact.UserError", err)
		}
		t.Log(err)
	})
}

// Finding 2: manifest.json RepoTags (and the index's name annotations)
// moved a host tag onto the artifact's image.
func TestDockerArtifactCannotTagHostImages(t *testing.T) {
	dockertest.Engine(t)
	victimTag := fmt.Sprintf("ociapp-test-victim-%s:12", randomID(4))
	// The victim: an image the host knows by that tag, loaded as docker
	// load would.
	victim := hostileArtifact(t, "victim", testapps.App{User: "65532", Ref: victimTag, Configure: func(c *v1.Config) { c.Env = []string{"VICTIM=1"} }})
	va, err := artifact.Open(t.Context(), victim)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), "docker", "load", "-i", victim).CombinedOutput(); err != nil {
		t.Fatalf("docker load: %v: %s", err, out)
	}
	t.Cleanup(func() { removeTestImage(t, victimTag) })
	if id := dockerInspect(t, "image", victimTag)["Id"]; id != va.ConfigDigest.String() {
		t.Fatalf("victim tag names %v, want %s", id, va.ConfigDigest)
	}

	// The attacker's artifact names the same tag in manifest.json and
	// index.json.
	hostile := hostileArtifact(t, "attacker", testapps.App{User: "65532", Ref: victimTag})
	ha, err := artifact.Open(t.Context(), hostile)
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := newDockerRuntime(t)
	if _, err := rt.Execute(t.Context(), hostile, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if rt.Stats().ImageLoads != 1 {
		t.Fatal("the attacker's image was not loaded")
	}
	if id := dockerInspect(t, "image", victimTag)["Id"]; id != va.ConfigDigest.String() {
		t.Fatalf("after running the attacker's artifact the host tag %s names %v, want the victim %s", victimTag, id, va.ConfigDigest)
	}
	if tags := dockerInspect(t, "image", ha.ConfigDigest.String())["RepoTags"]; fmt.Sprint(tags) != "[]" {
		t.Fatalf("the loaded image has tags %v, want none", tags)
	}
}

// Finding 12: the image's VOLUMEs became writable anonymous volumes, its
// STOPSIGNAL replaced SIGTERM, and its labels were merged into the
// container's.
func TestDockerImageConfigCannotLoosenTheSandbox(t *testing.T) {
	path := hostileArtifact(t, "loosen", testapps.App{User: "65532", Configure: func(c *v1.Config) {
		c.Volumes = map[string]struct{}{"/data": {}, "/var/spool/": {}, "/run/ociapp": {}, "/tmp": {}}
		c.StopSignal = "SIGCONT" // ignored by the app: a stop would wait out the grace
		c.Labels = map[string]string{
			LabelInstance:              "someone-else",
			LabelStateDir:              "/elsewhere",
			"dev.ociapp.runtime.extra": "claimed",
			"com.example.owner":        "attacker",
		}
		c.Healthcheck = &v1.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: time.Second}
	}})
	const grace = 8 * time.Second
	rt, _ := newDockerRuntime(t, WithShutdownTimeout(grace))
	if err := rt.Warm(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	id := readyContainer(t, rt)
	c := dockerInspect(t, "container", id)
	for _, m := range c["Mounts"].([]any) {
		if m := m.(map[string]any); m["Type"] == "volume" {
			t.Fatalf("the container has a volume: %v", m)
		}
	}
	for _, dir := range []string{"/data", "/var/spool"} {
		resp, err := rt.Execute(t.Context(), path, map[string]any{"path": dir + "/f", "fill": 1})
		if err != nil {
			t.Fatal(err)
		}
		if resp["written"] != int64(0) || !strings.Contains(fmt.Sprint(resp["err"]), "read-only") {
			t.Fatalf("writing to the image volume %s: %v, want a read-only file system", dir, resp)
		}
	}
	cfg := c["Config"].(map[string]any)
	if cfg["StopSignal"] != "SIGTERM" {
		t.Fatalf("stop signal %v, want SIGTERM", cfg["StopSignal"])
	}
	if hc, _ := cfg["Healthcheck"].(map[string]any); fmt.Sprint(hc["Test"]) != "[NONE]" {
		t.Fatalf("health check %v, want none", cfg["Healthcheck"])
	}
	labels := cfg["Labels"].(map[string]any)
	want := map[string]string{
		LabelInstance: rt.inst.id, LabelStateDir: rt.inst.stateDir, LabelManaged: "1",
		"dev.ociapp.runtime.extra": "", "com.example.owner": "",
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}

	// The graceful stop is SIGTERM, which the app obeys at once.
	start := time.Now()
	if err := rt.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > grace/2 {
		t.Fatalf("Close took %v: the stop waited for the kill after %v", d, grace)
	}
}

// Finding 12: a container killed from outside (docker kill) was reported
// as having written a malformed frame.
func TestDockerKilledContainerReportsItsExit(t *testing.T) {
	rt, _ := newDockerRuntime(t, WithMaxContainers(1))
	app := testArtifact(t, "hostile")
	if err := rt.Warm(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	id := readyContainer(t, rt)
	// Requests and responses with large bodies stream while the container
	// is killed, so that its connection ends mid-frame (or is reset)
	// rather than between frames.
	// One more request sleeps in the app for the whole test, so that at
	// least one is surely in flight at the kill.
	pad := strings.Repeat("x", 4<<20)
	var killed atomic.Bool
	errc := make(chan error, 4)
	held := make(chan error, 1)
	go func() {
		_, err := rt.Execute(t.Context(), app, map[string]any{"sleep_ms": 600_000})
		held <- err
	}()
	for range cap(errc) {
		go func() {
			for !killed.Load() {
				if _, err := rt.Execute(t.Context(), app, map[string]any{"pad": pad, "echo": true}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	time.Sleep(500 * time.Millisecond)
	out, err := exec.CommandContext(t.Context(), "docker", "kill", id).CombinedOutput()
	killed.Store(true)
	if err != nil {
		t.Fatalf("docker kill: %v: %s", err, out)
	}
	check := func(err error) {
		t.Helper()
		var ce *WorkerCrashError
		if !errors.As(err, &ce) || !ce.Exited || ce.ExitCode != 137 || strings.Contains(err.Error(), "malformed") {
			t.Fatalf("got %v, want *WorkerCrashError with exit code 137", err)
		}
	}
	check(<-held)
	for range cap(errc) {
		if err := <-errc; err != nil { // nil: no request in flight at the kill
			check(err)
		}
	}
}

// Finding 9: the app could write without limit into its socket directory,
// a host directory (for root, in RAM under /run).
func TestDockerSocketDirectoryIsBounded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a runtime running as root can mount the socket directory's tmpfs")
	}
	rt, _ := newDockerRuntime(t)
	app := testArtifact(t, "hostile")
	resp, err := rt.Execute(t.Context(), app, map[string]any{"path": "/run/ociapp/fill", "fill": 64})
	if err != nil {
		t.Fatal(err)
	}
	if n := resp["written"].(int64); n > DefaultSocketDirLimit || !strings.Contains(fmt.Sprint(resp["err"]), "no space left") {
		t.Fatalf("the app wrote %d bytes into its socket directory (%v), want at most %d", n, resp["err"], DefaultSocketDirLimit)
	}
	// Its connection is unharmed.
	if _, err := rt.Execute(t.Context(), app, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if rt.Stats().ColdStarts != 1 {
		t.Fatal("the container was replaced")
	}
}

// Finding 7: images the runtime loaded stayed in the engine's storage for
// good (a small artifact can expand to a large image).
func TestDockerUnusedImagesAreRemoved(t *testing.T) {
	path := hostileArtifact(t, "gc", testapps.App{User: "65532"})
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	id := a.ConfigDigest.String()
	removeTestImage(t, id)
	rt, eng := newDockerRuntime(t, WithIdleTimeout(time.Second), WithReaperInterval(100*time.Millisecond), WithImageRetention(time.Second))
	present := func() bool {
		ok, err := eng.ImageExists(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if _, err := rt.Execute(t.Context(), path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if !present() {
		t.Fatal("the image is not there")
	}
	waitFor(t, 20*time.Second, "the unused image to be removed", func() bool { return !present() })
	if _, err := rt.Execute(t.Context(), path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if st := rt.Stats(); st.ImageLoads != 2 || st.ImageRemovals != 1 {
		t.Fatalf("stats %+v: want the image loaded twice, removed once", st)
	}
	if err := rt.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if present() {
		t.Fatal("Close left the image it loaded")
	}
}
