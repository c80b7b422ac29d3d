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
)

// fakeSchemaMain is a main package without dependencies that answers the
// schema command the way ociapp.Main does.
const fakeSchemaMain = `package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "schema" {
		fmt.Println(` + "`" + `{"request": {"type": "object", "title": "Req"}, "response": {"type": "object", "title": "Resp"}}` + "`" + `)
		return
	}
	os.Exit(2)
}
`

// goProject writes a Go module with the given main.go and ociapp.toml.
func goProject(t *testing.T, main string, extra map[string]string) string {
	t.Helper()
	files := map[string]string{
		"go.mod":      "module example.com/demo\n\ngo 1.22\n",
		"main.go":     main,
		"ociapp.toml": "name = \"demo-go\"\nversion = \"0.2.0\"\nentrypoint = \".\"\n",
	}
	for k, v := range extra {
		files[k] = v
	}
	return writeProject(t, files)
}

func buildProject(t *testing.T, root string, opts Options) (*Result, error) {
	t.Helper()
	p, err := LoadProject(root)
	if err != nil {
		t.Fatal(err)
	}
	if opts.OutputDir == "" {
		opts.OutputDir = t.TempDir()
	}
	return Build(context.Background(), p, opts)
}

// layerFiles lists the tar headers of an artifact's layer.
func layerFiles(t *testing.T, a *artifact.Artifact, i int) map[string]*tar.Header {
	t.Helper()
	img, err := a.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[i].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = hdr
	}
}

// TestGoBuildEchoIsReproducible builds the echo-go example twice, with no
// container engine, and expects the same bytes.
func TestGoBuildEchoIsReproducible(t *testing.T) {
	var events []Event
	first, err := buildProject(t, "../examples/echo-go", Options{Progress: func(e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	second, err := buildProject(t, "../examples/echo-go", Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustRead(t, first.Path), mustRead(t, second.Path)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same source differ")
	}
	art := first.Artifact
	if filepath.Base(first.Path) != "echo-go-0.1.0.ociapp" {
		t.Errorf("artifact name %s", first.Path)
	}
	cfg := art.Config
	if cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/app/echo-go serve" ||
		cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || !cfg.Created.IsZero() && cfg.Created.Unix() != 0 {
		t.Errorf("config %+v", cfg)
	}
	md := art.Metadata
	if md.Ref != "ociapp.local/echo-go:0.1.0" || md.Entrypoint != "." || md.Protocol != "1" ||
		!strings.Contains(string(md.RequestSchema), `"EchoRequest"`) || !strings.Contains(string(md.ResponseSchema), `"EchoResponse"`) ||
		strings.Join(md.Capabilities, ",") != "cancel,deadline,stream" {
		t.Errorf("metadata %+v", md)
	}
	if len(art.Layers) != 1 {
		t.Fatalf("%d layers, want the binary's alone", len(art.Layers))
	}
	files := layerFiles(t, art, 0)
	bin := files["app/echo-go"]
	if bin == nil || bin.Mode != 0o755 || bin.Uid != 0 || bin.ModTime.Unix() != 0 {
		t.Errorf("binary entry %+v", bin)
	}
	if d := files["run/ociapp/"]; d == nil || d.Uid != 65532 {
		t.Errorf("socket directory entry %+v", d)
	}
	if d := files["tmp/"]; d == nil || d.Mode != 0o1777 {
		t.Errorf("tmp entry %+v", d)
	}
	if len(events) < 3 || events[0].Kind != EventPhase || !strings.Contains(events[1].Text, "go build -trimpath") {
		t.Errorf("events %+v", events)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoBuildCompileErrorShowsOutput(t *testing.T) {
	root := goProject(t, "package main\n\nfunc main() { undefinedThing() }\n", nil)
	_, err := buildProject(t, root, Options{})
	var se *StepError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want *StepError", err)
	}
	if !strings.Contains(se.Step, "go build") || !strings.Contains(se.Output, "undefined: undefinedThing") {
		t.Errorf("step %q output %q", se.Step, se.Output)
	}
}

func TestGoBuildWithoutSchemaCommand(t *testing.T) {
	root := goProject(t, "package main\n\nimport \"os\"\n\nfunc main() { os.Stderr.WriteString(\"no such command\\n\"); os.Exit(2) }\n", nil)
	_, err := buildProject(t, root, Options{})
	var se *StepError
	if !errors.As(err, &se) || se.Step != "demo-go schema" || !strings.Contains(se.Output, "no such command") || !strings.Contains(err.Error(), "ociapp.Main") {
		t.Fatalf("got %v, want a StepError for the schema command that points at ociapp.Main", err)
	}
}

func TestGoBuildMissingGoCommand(t *testing.T) {
	root := goProject(t, fakeSchemaMain, nil)
	_, err := buildProject(t, root, Options{GoCommand: "/nonexistent/go"})
	if err == nil || !strings.Contains(err.Error(), "go.dev/dl") {
		t.Fatalf("got %v, want advice to install Go", err)
	}
}

// TestGoBuildOnBaseImageFile uses an image archive in the project as the
// base: its layers come first and its environment is kept.
func TestGoBuildOnBaseImageFile(t *testing.T) {
	base, err := mutate.AppendLayers(empty.Image, static.NewLayer(tarOf(t, "etc/ssl/certs/ca.pem", "cert"), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{
		OS: "linux", Architecture: runtime.GOARCH,
		Config: v1.Config{Env: []string{"SSL_CERT_FILE=/etc/ssl/certs/ca.pem"}, Cmd: []string{"sh"}},
		RootFS: mustConfig(t, base).RootFS,
	})
	if err != nil {
		t.Fatal(err)
	}
	root := goProject(t, fakeSchemaMain, map[string]string{
		"ociapp.toml": "name = \"demo-go\"\nversion = \"0.2.0\"\nentrypoint = \".\"\nbase-image = \"base/image.tar\"\n",
	})
	if err := os.MkdirAll(filepath.Join(root, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := artifact.WriteFile(context.Background(), filepath.Join(root, "base/image.tar"), base, artifact.Metadata{Name: "base", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	res, err := buildProject(t, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := res.Artifact
	if len(a.Layers) != 2 || layerFiles(t, a, 0)["etc/ssl/certs/ca.pem"] == nil || layerFiles(t, a, 1)["app/demo-go"] == nil {
		t.Fatalf("layers %+v: want the base layer, then the binary", a.Layers)
	}
	if env := a.Config.Config.Env; len(env) != 1 || env[0] != "SSL_CERT_FILE=/etc/ssl/certs/ca.pem" {
		t.Errorf("env %v, want the base's", env)
	}
	if len(a.Config.Config.Cmd) != 0 {
		t.Errorf("cmd %v: the base's command must not follow the app's entrypoint", a.Config.Config.Cmd)
	}
	if string(a.Metadata.RequestSchema) != `{"type":"object","title":"Req"}` {
		t.Errorf("request schema %s", a.Metadata.RequestSchema)
	}
	// A schema command that names no capabilities (an SDK from before
	// them) gives an artifact that declares none.
	if len(a.Metadata.Capabilities) != 0 {
		t.Errorf("capabilities %q", a.Metadata.Capabilities)
	}
}

func TestGoBuildRejectsBaseForOtherArch(t *testing.T) {
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "s390x", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	root := goProject(t, fakeSchemaMain, map[string]string{
		"ociapp.toml": "name = \"demo-go\"\nversion = \"0.2.0\"\nentrypoint = \".\"\nbase-image = \"base.tar\"\n",
	})
	if err := artifact.WriteFile(context.Background(), filepath.Join(root, "base.tar"), base, artifact.Metadata{Name: "base", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	_, err = buildProject(t, root, Options{})
	if err == nil || !strings.Contains(err.Error(), "is for linux/s390x") {
		t.Fatalf("got %v", err)
	}
}

func tarOf(t *testing.T, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(content))
	tw.Close()
	return buf.Bytes()
}

func mustConfig(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
