package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/build"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/runtime"
)

// testBaseImage is the local Python base image CI builds with
// scripts/ensure-base-images.sh; nothing is pulled.
const testBaseImage = "ociapp-local/python:3.13"

// requireBaseImage fails (CI) or skips the test when the base image is
// missing.
func requireBaseImage(t *testing.T, eng *docker.Engine) {
	t.Helper()
	ok, err := eng.ImageExists(t.Context(), testBaseImage)
	if err == nil && ok {
		return
	}
	if err == nil {
		err = errors.New("no such image")
	}
	testenv.Need(t, "the base image "+testBaseImage, "run scripts/ensure-base-images.sh", err)
}

// loadAndRun loads the artifact through the engine API, as `docker load`
// does, checks the name it gets, and runs one request through the runtime.
func loadAndRun(t *testing.T, eng *docker.Engine, path, wantRef string) {
	t.Helper()
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loaded, err := eng.LoadImage(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(loaded, wantRef) && !slices.Contains(loaded, "docker.io/"+wantRef) {
		t.Errorf("docker load reported %v, want %s", loaded, wantRef)
	}
	// The classic store names the image by its config digest, the
	// containerd store by its manifest digest; one of them must be known.
	byConfig, _ := eng.ImageExists(t.Context(), a.ConfigDigest.String())
	byManifest, _ := eng.ImageExists(t.Context(), a.Digest.String())
	if !byConfig && !byManifest {
		t.Errorf("the engine knows the image by neither %s nor %s", a.ConfigDigest, a.Digest)
	}

	stateDir := testenv.ShortTempDir(t)
	rt, err := runtime.New(t.Context(), runtime.WithEngine(eng), runtime.WithStateDir(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	resp, err := rt.Execute(t.Context(), path, map[string]any{"value": "hi from " + a.Metadata.Name})
	if err != nil {
		t.Fatal(err)
	}
	if resp["value"] != "hi from "+a.Metadata.Name {
		t.Fatalf("response %v", resp)
	}
}

// TestEchoAppEndToEnd builds the original example with no registry
// reachable (the base image is local), loads it and runs it.
func TestEchoAppEndToEnd(t *testing.T) {
	eng := dockertest.Engine(t)
	requireBaseImage(t, eng)
	out := t.TempDir()
	start := time.Now()
	code, stdout, stderr := runCLI(t, false, "../../examples/echo-app", "--output-dir", out, "--base-image", testBaseImage)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	t.Logf("built in %v: %s", time.Since(start), stdout)
	path := filepath.Join(out, "echo-app-0.1.0.ociapp")
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	md := a.Metadata
	if md.Entrypoint != "echo_app.main:app" || !strings.Contains(string(md.RequestSchema), `"EchoRequest"`) || !strings.Contains(string(md.ResponseSchema), `"EchoResponse"`) {
		t.Errorf("metadata %+v", md)
	}
	if a.Config.Config.User != "65532:65532" || strings.Join(a.Config.Config.Cmd, " ") != "ociapp serve --app echo_app.main:app" {
		t.Errorf("config user %q cmd %v", a.Config.Config.User, a.Config.Config.Cmd)
	}
	loadAndRun(t, eng, path, "ociapp.local/echo-app:0.1.0")
}

// TestEchoGoEndToEnd builds the Go example with the engine unreachable,
// then loads and runs it.
func TestEchoGoEndToEnd(t *testing.T) {
	out := t.TempDir()
	t.Run("build with Docker unreachable", func(t *testing.T) {
		t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
		code, _, stderr := runCLI(t, false, "../../examples/echo-go", "--output-dir", out, "-q")
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
	})
	eng := dockertest.Engine(t)
	loadAndRun(t, eng, filepath.Join(out, "echo-go-0.1.0.ociapp"), "ociapp.local/echo-go:0.1.0")
}

// TestCodeOnlyRebuild changes the app's code and rebuilds: system packages
// and dependencies come from the engine's cache.
func TestCodeOnlyRebuild(t *testing.T) {
	eng := dockertest.Engine(t)
	requireBaseImage(t, eng)
	root := t.TempDir()
	copyTree(t, "../../examples/echo-app", root)
	p, err := build.LoadProject(root)
	if err != nil {
		t.Fatal(err)
	}
	p.BaseImage = testBaseImage
	buildWith := func() (cached, ran []string, took time.Duration) {
		t.Helper()
		var step string
		res, err := build.Build(t.Context(), p, build.Options{Engine: eng, OutputDir: t.TempDir(), Progress: func(e build.Event) {
			switch {
			case e.Kind == build.EventStep:
				if step != "" {
					ran = append(ran, step)
				}
				step = e.Text
			case e.Kind == build.EventOutput && strings.Contains(e.Text, "Using cache") && step != "":
				cached = append(cached, step)
				step = ""
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		return cached, ran, res.Duration
	}
	_, _, first := buildWith()
	main := filepath.Join(root, "src/echo_app/main.py")
	code, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	// A change no earlier run made: the engine's build cache outlives the test.
	change := fmt.Sprintf("\n# changed %d\n", time.Now().UnixNano())
	if err := os.WriteFile(main, append(code, change...), 0o644); err != nil {
		t.Fatal(err)
	}
	cached, ran, second := buildWith()
	t.Logf("first build %v, after a code-only change %v", first, second)
	for _, want := range []string{"RUN set -eu;", "install --requirement /opt/ociapp/build/requirements.txt", "install --no-build-isolation /opt/ociapp/build/sdk"} {
		if !slices.ContainsFunc(cached, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("step %q was not cached; cached: %q", want, cached)
		}
	}
	if !slices.ContainsFunc(ran, func(s string) bool { return strings.Contains(s, "COPY app/") }) {
		t.Errorf("the app was not copied again; steps run: %q", ran)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCustomEndToEnd builds a project's own Containerfile, written the way
// docs/build.md tells custom images to behave, and runs it.
func TestCustomEndToEnd(t *testing.T) {
	eng := dockertest.Engine(t)
	requireBaseImage(t, eng)
	root := t.TempDir()
	copyTree(t, "../../examples/echo-app/src", filepath.Join(root, "src"))
	copyTree(t, "../../python", filepath.Join(root, "sdk"))
	files := map[string]string{
		"pyproject.toml": `[project]
name = "custom-echo"
version = "2.0.0"

[tool.ociapp-build]
mode = "custom"
containerfile = "Containerfile"
`,
		"Containerfile": `FROM ` + testBaseImage + `
COPY sdk/ /src/sdk/
RUN python3 -m pip install --no-build-isolation --no-deps /src/sdk
COPY src/ /app/
ENV PYTHONPATH=/app
USER 65532:65532
CMD ["ociapp", "serve", "--app", "echo_app.main:app"]
`,
		".dockerignore": "sdk/tests\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	code, _, stderr := runCLI(t, false, root, "--output-dir", out, "-q")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	path := filepath.Join(out, "custom-echo-2.0.0.ociapp")
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Metadata.Entrypoint != "echo_app.main:app" || a.Metadata.RequestSchema != nil {
		t.Errorf("metadata %+v", a.Metadata)
	}
	loadAndRun(t, eng, path, "ociapp.local/custom-echo:2.0.0")
}
