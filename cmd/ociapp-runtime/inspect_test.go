package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ociapp/ociapp/artifact"
)

// inspectArtifact writes a small artifact declaring caps and returns its
// path.
func inspectArtifact(t *testing.T, caps ...string) (string, *artifact.Artifact) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "app/echo", Mode: 0o755, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("\x7fELF"))
	tw.Close()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(layer.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.User = "65532:65532"
	cfg.Config.Entrypoint = []string{"/app/echo", "serve"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "echo-go-0.1.0.ociapp")
	md := artifact.Metadata{
		Name: "echo-go", Version: "0.1.0", Entrypoint: ".",
		RequestSchema:  json.RawMessage(`{"title":"EchoRequest","type":"object"}`),
		ResponseSchema: json.RawMessage(`{"title":"EchoResponse","type":"object"}`),
		Capabilities:   caps,
	}
	if err := artifact.WriteFile(context.Background(), path, img, md); err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return path, a
}

func TestInspectJSON(t *testing.T) {
	path, a := inspectArtifact(t)
	var stdout, stderr bytes.Buffer
	// The flag may follow the artifact.
	if code := runInspect(context.Background(), []string{path, "--json"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got inspectJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "echo-go" || got.Version != "0.1.0" || got.Ref != "ociapp.local/echo-go:0.1.0" ||
		got.Digest != a.Digest.String() || got.ConfigDigest != a.ConfigDigest.String() || got.Size != a.Size ||
		got.Platform != "linux/"+runtime.GOARCH || got.User != "65532:65532" || got.Entrypoint != "." || got.Protocol != "1" ||
		strings.Join(got.Command, " ") != "/app/echo serve" || got.Format != "oci-layout+docker-save" || !got.DockerLoadable {
		t.Errorf("got %+v", got)
	}
	if len(got.Layers) != 1 || got.Layers[0].Digest != a.Layers[0].Digest.String() || got.Layers[0].MediaType != string(types.OCILayer) {
		t.Errorf("layers %+v", got.Layers)
	}
	if compact(t, got.RequestSchema) != `{"title":"EchoRequest","type":"object"}` || compact(t, got.ResponseSchema) != `{"title":"EchoResponse","type":"object"}` {
		t.Errorf("schemas %s %s", got.RequestSchema, got.ResponseSchema)
	}
	if got.Capabilities == nil || len(got.Capabilities) != 0 {
		t.Errorf("capabilities %#v; scripts expect an empty list", got.Capabilities)
	}
}

func TestInspectCapabilities(t *testing.T) {
	path, _ := inspectArtifact(t, "cancel", "deadline", "stream")
	var stdout, stderr bytes.Buffer
	if code := runInspect(context.Background(), []string{"--json", path}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got inspectJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Capabilities, ",") != "cancel,deadline,stream" {
		t.Errorf("capabilities %q", got.Capabilities)
	}
	stdout.Reset()
	if code := runInspect(context.Background(), []string{path}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !regexp.MustCompile(`(?m)^capabilities:\s+cancel, deadline, stream$`).MatchString(stdout.String()) {
		t.Errorf("text output lacks the capabilities line:\n%s", stdout.String())
	}
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestInspectText(t *testing.T) {
	path, a := inspectArtifact(t)
	var stdout, stderr bytes.Buffer
	if code := runInspect(context.Background(), []string{path}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"name:", "echo-go", "version:", "0.1.0", "digest:", a.Digest.String(), "layers:", a.Layers[0].Digest.String(),
		"entrypoint:", "protocol:", "request schema:", `"title": "EchoRequest"`, "response schema:", "EchoResponse",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectFailures(t *testing.T) {
	path, a := inspectArtifact(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the layer blob: its digest no longer matches.
	i := bytes.Index(data, []byte("blobs/sha256/"+a.Layers[0].Digest.Hex))
	data[i+512+10] ^= 0xff
	corrupt := filepath.Join(t.TempDir(), "corrupt.ociapp")
	os.WriteFile(corrupt, data, 0o644)

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, exitUsage, "usage: ociapp-runtime inspect"},
		{[]string{"a", "b"}, exitUsage, "usage"},
		{[]string{filepath.Join(t.TempDir(), "missing.ociapp")}, exitUnavailable, "missing file"},
		{[]string{corrupt}, exitUnavailable, "digest mismatch"},
	} {
		var stdout, stderr bytes.Buffer
		code := runInspect(context.Background(), c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.msg)
		}
	}
}

// TestInspectDispatch reaches inspect through the command's dispatcher.
func TestInspectDispatch(t *testing.T) {
	path, _ := inspectArtifact(t)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"inspect", "--json", path}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got["name"] != "echo-go" {
		t.Fatalf("%v %v", got, err)
	}
}
