package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
)

// fakeEngine records build requests and exports a prepared image.
type fakeEngine struct {
	t        *testing.T
	buildErr error
	image    v1.Image // what SaveImage exports
	req      engine.BuildRequest
	context  map[string]string // the build context's files
	saved    []string
}

func (f *fakeEngine) BuildImage(_ context.Context, req engine.BuildRequest, progress func(engine.BuildEvent)) (string, error) {
	f.req = req
	f.context = map[string]string{}
	tr := tar.NewReader(req.Context)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		f.context[hdr.Name] = string(b)
	}
	progress(engine.BuildEvent{Step: "Step 1/2 : FROM base"})
	progress(engine.BuildEvent{Stream: " ---> abc"})
	if f.buildErr != nil {
		return "", f.buildErr
	}
	return "sha256:feed", nil
}

func (f *fakeEngine) SaveImage(ctx context.Context, refs ...string) (io.ReadCloser, error) {
	f.saved = refs
	var buf bytes.Buffer
	if err := artifact.Write(ctx, &buf, f.image, artifact.Metadata{Name: "saved", Version: "1"}); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
}

// builtImage is an image like a managed Python build's, its top layer
// holding the schema document.
func builtImage(t *testing.T, schemas string) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range [][]byte{tarOf(t, "usr/bin/python3", "elf"), tarOf(t, "opt/ociapp/schema.json", schemas)} {
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(l, types.OCIUncompressedLayer)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := mustConfig(t, img).DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.User = "65532:65532"
	cfg.Config.Cmd = []string{"ociapp", "serve", "--app", "demo.main:app"}
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPythonBuildThroughEngine(t *testing.T) {
	root := writeProject(t, map[string]string{"pyproject.toml": validPyproject, "src/demo/main.py": "app = 1\n"})
	img := builtImage(t, `{"request": {"title": "Req"}, "response": {"title": "Resp"}, "capabilities": ["cancel", "deadline", "stream"]}`)
	eng := &fakeEngine{t: t, image: img}
	var events []Event
	res, err := buildProject(t, root, Options{Engine: eng, Progress: func(e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	if eng.req.Containerfile != "Containerfile" || len(eng.req.Tags) != 1 || eng.req.Tags[0] != "ociapp.local/demo-app:1.2.3" {
		t.Errorf("request %+v", eng.req)
	}
	if eng.req.Pull {
		t.Error("the build pulls: a local base image must be used as is")
	}
	if eng.req.Labels[artifact.AnnotationEntrypoint] != "demo.main:app" || eng.req.Labels[artifact.AnnotationTitle] != "demo-app" {
		t.Errorf("labels %v", eng.req.Labels)
	}
	if !strings.Contains(eng.context["Containerfile"], "FROM python:3.13-slim") || eng.context["app/src/demo/main.py"] != "app = 1\n" {
		t.Errorf("context %v", keys(eng.context))
	}
	if len(eng.saved) != 1 || eng.saved[0] != "sha256:feed" {
		t.Errorf("saved %v, want the built image's ID", eng.saved)
	}
	a := res.Artifact
	want, _ := img.ConfigName()
	if a.ConfigDigest != want {
		t.Errorf("config %s, want the built image's %s", a.ConfigDigest, want)
	}
	md := a.Metadata
	if md.Name != "demo-app" || md.Version != "1.2.3" || md.Entrypoint != "demo.main:app" ||
		string(md.RequestSchema) != `{"title":"Req"}` || string(md.ResponseSchema) != `{"title":"Resp"}` ||
		strings.Join(md.Capabilities, ",") != "cancel,deadline,stream" {
		t.Errorf("metadata %+v", md)
	}
	if res.Path != filepath.Join(filepath.Dir(res.Path), "demo-app-1.2.3.ociapp") {
		t.Errorf("path %s", res.Path)
	}
	var steps, outputs int
	for _, e := range events {
		switch e.Kind {
		case EventStep:
			steps++
		case EventOutput:
			outputs++
		}
	}
	if steps != 1 || outputs != 1 {
		t.Errorf("events %+v: the engine's step and output must be passed on", events)
	}
}

func TestPythonBuildDefaultsToProjectRoot(t *testing.T) {
	root := writeProject(t, map[string]string{"pyproject.toml": validPyproject})
	p, err := LoadProject(root)
	if err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{t: t, image: builtImage(t, `{"request": {}, "response": {}}`)}
	res, err := Build(context.Background(), p, Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != filepath.Join(root, "demo-app-1.2.3.ociapp") {
		t.Errorf("path %s, want the project root", res.Path)
	}
}

func TestPythonBuildFailureNamesTheStep(t *testing.T) {
	root := writeProject(t, map[string]string{"pyproject.toml": validPyproject})
	eng := &fakeEngine{t: t, buildErr: &engine.BuildError{
		Step:    "Step 13/16 : RUN python -m pip install --no-build-isolation --no-deps /opt/ociapp/app",
		Message: "The command '/bin/sh -c ...' returned a non-zero code: 5",
		Output:  "ModuleNotFoundError: No module named 'demo'",
	}}
	out := t.TempDir()
	_, err := buildProject(t, root, Options{Engine: eng, OutputDir: out})
	var se *StepError
	if !errors.As(err, &se) || !strings.HasPrefix(se.Step, "Step 13/16") || !strings.Contains(se.Output, "ModuleNotFoundError") {
		t.Fatalf("got %v, want a StepError with the step and its output", err)
	}
	var be *engine.BuildError
	if !errors.As(err, &be) {
		t.Error("the engine's BuildError is not wrapped")
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("a failed build left %v behind", entries)
	}
}

func TestPythonBuildWithoutSchemaFile(t *testing.T) {
	root := writeProject(t, map[string]string{"pyproject.toml": validPyproject})
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(tarOf(t, "x", "y"), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	_, err = buildProject(t, root, Options{Engine: &fakeEngine{t: t, image: img}})
	if err == nil || !strings.Contains(err.Error(), schemaPath) {
		t.Fatalf("got %v", err)
	}
}

func TestBuildNeedsEngine(t *testing.T) {
	root := writeProject(t, map[string]string{"pyproject.toml": validPyproject})
	_, err := buildProject(t, root, Options{})
	if !errors.Is(err, ErrNoEngine) {
		t.Fatalf("got %v, want ErrNoEngine", err)
	}
}

func TestCustomBuild(t *testing.T) {
	root := writeProject(t, map[string]string{
		"pyproject.toml":         "[project]\nname = \"custom-app\"\nversion = \"2.0\"\n[tool.ociapp-build]\nmode = \"custom\"\ncontainerfile = \"docker/Containerfile\"\n",
		"docker/Containerfile":   "FROM scratch\nCOPY . /app\n",
		".dockerignore":          "docker\nsecrets\n",
		"secrets/key":            "k",
		"app.py":                 "print('hi')\n",
		"dist/old-1.0.ociapp":    "old",
		"custom-app-1.0.ociapp":  "old",
		"nested/keep/readme.txt": "keep",
	})
	eng := &fakeEngine{t: t, image: builtImage(t, "{}")}
	res, err := buildProject(t, root, Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if eng.req.Containerfile != "docker/Containerfile" || eng.context["docker/Containerfile"] != "FROM scratch\nCOPY . /app\n" {
		t.Errorf("containerfile %q: it must be sent even when .dockerignore excludes it (%v)", eng.req.Containerfile, keys(eng.context))
	}
	for name := range eng.context {
		if strings.Contains(name, "secrets") || strings.HasSuffix(name, ".ociapp") {
			t.Errorf("context holds %s", name)
		}
	}
	if eng.context["app.py"] == "" || eng.context["nested/keep/readme.txt"] == "" {
		t.Errorf("context %v lacks project files", keys(eng.context))
	}
	md := res.Artifact.Metadata
	if md.Name != "custom-app" || md.Version != "2.0" || md.RequestSchema != nil {
		t.Errorf("metadata %+v: a custom build records no schemas", md)
	}
	// The entrypoint is read back from the image's command.
	if md.Entrypoint != "demo.main:app" {
		t.Errorf("entrypoint %q", md.Entrypoint)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
