package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestRoundTrip(t *testing.T) {
	img := testImage(t, map[string]string{"etc/hello": "hello"}, map[string]string{"app/main": "binary"})
	path := filepath.Join(t.TempDir(), "demo-app-1.2.3.ociapp")
	if err := WriteFile(context.Background(), path, img, testMetadata); err != nil {
		t.Fatal(err)
	}
	a, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}

	want := testMetadata
	want.Ref = "ociapp.local/demo-app:1.2.3"
	want.Protocol = "1"
	want.ResponseSchema = json.RawMessage(`{"type":"object"}`) // compacted
	if !reflect.DeepEqual(a.Metadata, want) {
		t.Errorf("metadata:\n got %+v\nwant %+v", a.Metadata, want)
	}
	if a.Format != FormatOCIApp || !a.DockerLoadable {
		t.Errorf("format %v loadable %v, want %v and loadable", a.Format, a.DockerLoadable, FormatOCIApp)
	}
	configName, _ := img.ConfigName()
	if a.ConfigDigest != configName {
		t.Errorf("config digest %s, want the image's %s: the config must be written unchanged", a.ConfigDigest, configName)
	}
	st, _ := os.Stat(path)
	if a.Size != st.Size() {
		t.Errorf("size %d, want %d", a.Size, st.Size())
	}
	if len(a.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(a.Layers))
	}
	if a.Config.Config.User != "65532:65532" {
		t.Errorf("user %q", a.Config.Config.User)
	}
	srcLayers, _ := img.Layers()
	got, err := a.Image()
	if err != nil {
		t.Fatal(err)
	}
	gotLayers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range gotLayers {
		if a.Layers[i].MediaType != types.OCILayer {
			t.Errorf("layer %d media type %s, want gzip", i, a.Layers[i].MediaType)
		}
		if readAll(t, l.Uncompressed) != readAll(t, srcLayers[i].Uncompressed) {
			t.Errorf("layer %d content differs after the round trip", i)
		}
	}
	if d, _ := got.Digest(); d != a.Digest {
		t.Errorf("image digest %s, artifact digest %s", d, a.Digest)
	}
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) string {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteIsDeterministic(t *testing.T) {
	a := writeArtifact(t, testImage(t, map[string]string{"x": "1"}), testMetadata)
	b := writeArtifact(t, testImage(t, map[string]string{"x": "1"}), testMetadata)
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same image differ")
	}
	c := writeArtifact(t, testImage(t, map[string]string{"x": "2"}), testMetadata)
	if bytes.Equal(a, c) {
		t.Fatal("different images wrote the same bytes")
	}
}

// TestWriteLayout checks the archive against what docker load (all versions),
// containerd and OCI tools read.
func TestWriteLayout(t *testing.T) {
	data := writeArtifact(t, testImage(t, map[string]string{"x": "1"}), testMetadata)
	files := map[string][]byte{}
	var names []string
	for _, f := range untar(t, data) {
		files[f.name] = f.data
		names = append(names, f.name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", files["oci-layout"])
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index lists %d manifests", len(index.Manifests))
	}
	entry := index.Manifests[0]
	if entry.Annotations[AnnotationContainerdName] != "ociapp.local/demo-app:1.2.3" ||
		entry.Annotations[AnnotationRefName] != "ociapp.local/demo-app:1.2.3" {
		t.Errorf("index entry names: %v", entry.Annotations)
	}
	if entry.Platform == nil || entry.Platform.OS != "linux" || entry.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index entry platform %+v", entry.Platform)
	}
	var m v1.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+entry.Digest.Hex], &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		AnnotationTitle: "demo-app", AnnotationVersion: "1.2.3", AnnotationProtocol: "1",
		AnnotationEntrypoint: "demo.main:app", AnnotationCapabilities: "",
		AnnotationResponseSchema: `{"type":"object"}`,
	} {
		if got, ok := m.Annotations[k]; !ok || got != v {
			t.Errorf("manifest annotation %s = %q, want %q", k, got, v)
		}
	}
	var docker []dockerManifestEntry
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	want := []dockerManifestEntry{{
		Config:   "blobs/sha256/" + m.Config.Digest.Hex,
		RepoTags: []string{"ociapp.local/demo-app:1.2.3"},
		Layers:   []string{"blobs/sha256/" + m.Layers[0].Digest.Hex},
	}}
	if !reflect.DeepEqual(docker, want) {
		t.Errorf("manifest.json = %+v, want %+v", docker, want)
	}
	for name := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && sha(files[name]).Hex != strings.TrimPrefix(name, "blobs/sha256/") {
			t.Errorf("blob %s does not match its name", name)
		}
	}
}

func TestWriteRejectsBadMetadata(t *testing.T) {
	img := testImage(t, map[string]string{"x": "1"})
	for name, md := range map[string]Metadata{
		"no name":     {Version: "1"},
		"no version":  {Name: "a"},
		"bad schema":  {Name: "a", Version: "1", RequestSchema: json.RawMessage(`{`)},
		"bad feature": {Name: "a", Version: "1", Capabilities: []string{"a,b"}},
		"long name":   {Name: strings.Repeat("a", maxMetadataText+1), Version: "1"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Write(context.Background(), io.Discard, img, md); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestDefaultRef(t *testing.T) {
	for _, c := range []struct{ name, version, want string }{
		{"echo-app", "0.1.0", "ociapp.local/echo-app:0.1.0"},
		{"Echo_App", "1.0+local", "ociapp.local/echo-app:1.0-local"},
		{"__x..y__", ".1", "ociapp.local/x-y:1"},
		{"!!!", "", "ociapp.local/app:latest"},
	} {
		if got := DefaultRef(c.name, c.version); got != c.want {
			t.Errorf("DefaultRef(%q, %q) = %q, want %q", c.name, c.version, got, c.want)
		}
	}
}

// TestOpenBuildxLayout reads what the original builder produced: buildx's OCI
// exporter with zstd layers, an index per platform and attestations.
func TestOpenBuildxLayout(t *testing.T) {
	l := newLayout(t)
	base := layerTar(t, map[string]string{"bin/sh": "sh"})
	app := layerTar(t, map[string]string{"app/x": "x"})
	cmd := []string{"ociapp", "serve", "--app", "echo_app.main:app"}
	host := l.image(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, cmd, types.OCILayerZStd, zst, base, app)
	other := l.image(v1.Platform{OS: "linux", Architecture: "s390x"}, cmd, types.OCILayer, gz, base)
	att := l.image(v1.Platform{OS: "unknown", Architecture: "unknown"}, nil, types.OCILayer, gz, []byte("{}"))
	host.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	other.Platform = &v1.Platform{OS: "linux", Architecture: "s390x"}
	att.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	nested := l.blob(types.OCIImageIndex, mustJSON(t, v1.IndexManifest{
		SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{host, other, att},
	}))
	nested.Annotations = map[string]string{
		AnnotationContainerdName: "docker.io/ociapp-build/echo-app:0.1.0",
		AnnotationRefName:        "0.1.0",
	}
	path := saveFile(t, "echo-app-0.1.0.ociapp", l.bytes(v1.IndexManifest{Manifests: []v1.Descriptor{nested}}))

	a, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Format != FormatOCILayout || a.DockerLoadable {
		t.Errorf("format %v loadable %v", a.Format, a.DockerLoadable)
	}
	if a.Digest != host.Digest {
		t.Errorf("chose %s, want the %s image %s", a.Digest, runtime.GOARCH, host.Digest)
	}
	want := Metadata{Name: "echo-app", Version: "0.1.0", Ref: "ociapp-build/echo-app:0.1.0", Entrypoint: "echo_app.main:app", Protocol: "1"}
	if !reflect.DeepEqual(a.Metadata, want) {
		t.Errorf("metadata %+v, want %+v", a.Metadata, want)
	}

	// Converting for Docker keeps the config, so Docker's classic store
	// knows the image by the same ID.
	var buf bytes.Buffer
	if err := a.WriteDockerArchive(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	b, err := Open(t.Context(), saveFile(t, "converted.ociapp", buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !b.DockerLoadable || b.Format != FormatOCIApp || b.ConfigDigest != a.ConfigDigest || b.Metadata.Ref != a.Metadata.Ref {
		t.Errorf("converted: loadable %v format %v config %s (want %s) ref %s", b.DockerLoadable, b.Format, b.ConfigDigest, a.ConfigDigest, b.Metadata.Ref)
	}
	for _, layer := range b.Layers {
		if layer.MediaType != types.OCILayer {
			t.Errorf("converted layer is %s, want gzip", layer.MediaType)
		}
	}
}

// TestOpenDockerSave reads the legacy docker save layout of Docker before 25,
// with a repeated layer stored as a symlink as docker save does.
func TestOpenDockerSave(t *testing.T) {
	layer1 := layerTar(t, map[string]string{"a": "1"})
	layer2 := layerTar(t, map[string]string{"b": "2"})
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(layer1), sha(layer2), sha(layer1)}}}
	rawCfg := mustJSON(t, cfg)
	files := []tarFile{
		{name: sha(rawCfg).Hex + ".json", data: rawCfg},
		{name: "aaa/layer.tar", data: layer1},
		{name: "aaa/VERSION", data: []byte("1.0")},
		{name: "bbb/layer.tar", data: layer2},
		{name: "ccc/layer.tar", link: "../aaa/layer.tar"},
		{name: "manifest.json", data: mustJSON(t, []dockerManifestEntry{{
			Config: sha(rawCfg).Hex + ".json", RepoTags: []string{"demo:1"},
			Layers: []string{"aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"},
		}})},
		{name: "repositories", data: []byte(`{"demo":{"1":"aaa"}}`)},
	}
	a, err := Open(t.Context(), saveFile(t, "demo.tar", mktar(t, files)))
	if err != nil {
		t.Fatal(err)
	}
	if a.Format != FormatDockerSave || !a.DockerLoadable || a.ConfigDigest != sha(rawCfg) {
		t.Errorf("format %v loadable %v config %s", a.Format, a.DockerLoadable, a.ConfigDigest)
	}
	if a.Metadata.Ref != "demo:1" || a.Metadata.Name != "demo" || a.Metadata.Version != "1" {
		t.Errorf("metadata %+v", a.Metadata)
	}
	if len(a.Layers) != 3 || a.Layers[2].Digest != sha(layer1) || a.Layers[0].MediaType != types.DockerUncompressedLayer {
		t.Errorf("layers %+v", a.Layers)
	}
	// The image is usable as a v1.Image, e.g. to convert it to .ociapp.
	img, err := a.Image()
	if err != nil {
		t.Fatal(err)
	}
	converted, err := Open(t.Context(), saveFile(t, "demo.ociapp", writeArtifact(t, img, Metadata{Name: "demo", Version: "1"})))
	if err != nil {
		t.Fatal(err)
	}
	if converted.ConfigDigest != a.ConfigDigest || len(converted.Layers) != 3 {
		t.Errorf("converted: config %s layers %d", converted.ConfigDigest, len(converted.Layers))
	}
}

func TestOpenTwoNamesOneImage(t *testing.T) {
	l := newLayout(t)
	d := l.image(v1.Platform{OS: "linux", Architecture: "arm"}, nil, types.OCILayer, gz, layerTar(t, map[string]string{"a": "1"}))
	d1, d2 := d, d
	d1.Annotations = map[string]string{AnnotationContainerdName: "docker.io/library/demo:1"}
	d2.Annotations = map[string]string{AnnotationContainerdName: "docker.io/library/demo:latest"}
	a, err := Open(t.Context(), saveFile(t, "x.tar", l.bytes(v1.IndexManifest{Manifests: []v1.Descriptor{d1, d2}})))
	if err != nil {
		t.Fatal(err)
	}
	if a.Metadata.Ref != "demo:1" {
		t.Errorf("ref %q, want the first name", a.Metadata.Ref)
	}
}

func TestImageReadDetectsChangedFile(t *testing.T) {
	path := saveFile(t, "a.ociapp", writeArtifact(t, testImage(t, map[string]string{"x": strings.Repeat("y", 4096)}), testMetadata))
	a, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	e := a.blobs[a.Layers[0].Digest]
	data[e.offset+e.size/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	img, _ := a.Image()
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	assertFault(t, err, FaultDigestMismatch)
	assertFault(t, a.WriteDockerArchive(context.Background(), io.Discard), FaultDigestMismatch)
}

func TestWriteWithLayerCache(t *testing.T) {
	img := testImage(t, map[string]string{"a": strings.Repeat("x", 10000)}, map[string]string{"b": "y"})
	plain := writeArtifact(t, img, testMetadata)
	cache := t.TempDir()
	write := func() []byte {
		var buf bytes.Buffer
		if err := Write(context.Background(), &buf, img, testMetadata, WithLayerCache(cache)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if !bytes.Equal(write(), plain) {
		t.Fatal("a write that fills the cache differs from one without it")
	}
	entries, _ := filepath.Glob(filepath.Join(cache, "*", "*.gz"))
	if len(entries) != 2 {
		t.Fatalf("cache holds %v, want one entry per layer", entries)
	}
	if !bytes.Equal(write(), plain) {
		t.Fatal("a write from the cache differs")
	}
	// A damaged entry is detected and replaced, never used.
	if err := os.WriteFile(entries[0], []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(write(), plain) {
		t.Fatal("a damaged cache entry changed the output")
	}
	if err := Write(context.Background(), io.Discard, img, testMetadata, WithLayerCache("")); err == nil {
		t.Fatal("an empty cache directory was accepted")
	}
}
