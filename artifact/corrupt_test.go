package artifact

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func assertFault(t *testing.T, err error, want Fault) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want an *artifact.Error", err, err)
	}
	if ae.Fault != want {
		t.Fatalf("fault %q, want %q: %v", ae.Fault, want, err)
	}
}

// edited returns a good artifact with its files changed by edit; files keep
// their order, new ones go last.
func edited(t *testing.T, edit func(t *testing.T, files *archiveFiles)) []byte {
	t.Helper()
	good := writeArtifact(t, testImage(t, map[string]string{"etc/a": "a"}, map[string]string{"etc/b": "b"}), testMetadata)
	af := &archiveFiles{files: untar(t, good)}
	edit(t, af)
	return mktar(t, af.files)
}

type archiveFiles struct{ files []tarFile }

func (a *archiveFiles) get(t *testing.T, name string) []byte {
	for _, f := range a.files {
		if f.name == name {
			return f.data
		}
	}
	t.Fatalf("no %s in the archive", name)
	return nil
}

func (a *archiveFiles) set(name string, data []byte) {
	for i, f := range a.files {
		if f.name == name {
			a.files[i].data = data
			return
		}
	}
	a.files = append(a.files, tarFile{name: name, data: data})
}

func (a *archiveFiles) remove(name string) {
	for i, f := range a.files {
		if f.name == name {
			a.files = append(a.files[:i], a.files[i+1:]...)
			return
		}
	}
}

func (a *archiveFiles) index(t *testing.T) v1.IndexManifest {
	var idx v1.IndexManifest
	if err := json.Unmarshal(a.get(t, "index.json"), &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func (a *archiveFiles) manifest(t *testing.T) v1.Manifest {
	var m v1.Manifest
	if err := json.Unmarshal(a.get(t, blobPath(a.index(t).Manifests[0].Digest)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// editManifest changes the image manifest, stores it under its new digest
// and points index.json at it, as a tool writing such a manifest would.
func (a *archiveFiles) editManifest(t *testing.T, edit func(*v1.Manifest)) {
	m := a.manifest(t)
	edit(&m)
	raw := mustJSON(t, m)
	idx := a.index(t)
	a.remove(blobPath(idx.Manifests[0].Digest))
	idx.Manifests[0].Digest, idx.Manifests[0].Size = sha(raw), int64(len(raw))
	a.set(blobPath(sha(raw)), raw)
	a.set("index.json", mustJSON(t, idx))
}

func flipByte(data []byte) []byte {
	out := append([]byte(nil), data...)
	out[len(out)/2] ^= 0xff
	return out
}

func TestOpenFaults(t *testing.T) {
	good := writeArtifact(t, testImage(t, map[string]string{"etc/a": "a"}), testMetadata)
	legacyLayer := layerTar(t, map[string]string{"a": "1"})
	legacyCfg := mustJSON(t, v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(legacyLayer)}}})
	legacy := func(cfg, layer []byte, entries int) []byte {
		var m []dockerManifestEntry
		for range entries {
			m = append(m, dockerManifestEntry{Config: sha(legacyCfg).Hex + ".json", Layers: []string{"l/layer.tar"}})
		}
		return mktar(t, []tarFile{
			{name: sha(legacyCfg).Hex + ".json", data: cfg},
			{name: "l/layer.tar", data: layer},
			{name: "manifest.json", data: mustJSON(t, m)},
		})
	}
	twoImages := func(archs ...string) []byte {
		l := newLayout(t)
		var ds []v1.Descriptor
		for i, arch := range archs {
			d := l.image(v1.Platform{OS: "linux", Architecture: arch}, nil, types.OCILayer, gz, layerTar(t, map[string]string{"n": strconv.Itoa(i)}))
			ds = append(ds, d)
		}
		return l.bytes(v1.IndexManifest{Manifests: ds})
	}

	cases := []struct {
		name   string
		data   []byte
		fault  Fault
		detail string
	}{
		{"empty file", []byte{}, FaultNotTar, "empty"},
		{"text", []byte(strings.Repeat("not a tar archive\n", 100)), FaultNotTar, "header"},
		{"short text", []byte("hello"), FaultNotTar, "shorter than one tar header"},
		{"gzip", gz(t, good), FaultNotTar, "gzip"},
		{"zstd", zst(t, good), FaultNotTar, "zstd"},
		{"truncated inside an entry", good[:len(good)/2], FaultTruncated, "stops"},
		{"truncated inside a header", good[:len(good)-1024-512-100], FaultTruncated, "stops"},
		{"truncated between entries", good[:len(good)-1024], FaultTruncated, "end-of-archive"},
		{"no index or manifest", mktar(t, []tarFile{{name: "hello.txt", data: []byte("hi")}}), FaultNoImage, ""},
		{"index lists nothing", mktar(t, []tarFile{{name: "index.json", data: []byte(`{"schemaVersion":2,"manifests":[]}`)}}), FaultNoImage, "no image"},
		{"layer blob corrupt", edited(t, func(t *testing.T, a *archiveFiles) {
			p := blobPath(a.manifest(t).Layers[0].Digest)
			a.set(p, flipByte(a.get(t, p)))
		}), FaultDigestMismatch, "blobs/sha256/"},
		{"config blob corrupt", edited(t, func(t *testing.T, a *archiveFiles) {
			p := blobPath(a.manifest(t).Config.Digest)
			a.set(p, flipByte(a.get(t, p)))
		}), FaultDigestMismatch, ""},
		{"layer size differs from descriptor", edited(t, func(t *testing.T, a *archiveFiles) {
			a.editManifest(t, func(m *v1.Manifest) { m.Layers[0].Size++ })
		}), FaultDigestMismatch, "bytes but its descriptor says"},
		{"legacy config corrupt", legacy(flipByte(legacyCfg), legacyLayer, 1), FaultDigestMismatch, "config"},
		{"legacy layer corrupt", legacy(legacyCfg, flipByte(legacyLayer), 1), FaultDigestMismatch, "diff ID"},
		{"bzip2 layer", edited(t, func(t *testing.T, a *archiveFiles) {
			a.editManifest(t, func(m *v1.Manifest) { m.Layers[0].MediaType = "application/vnd.oci.image.layer.v1.tar+bzip2" })
		}), FaultUnsupportedMediaType, "tar+bzip2"},
		{"foreign layer", edited(t, func(t *testing.T, a *archiveFiles) {
			a.editManifest(t, func(m *v1.Manifest) { m.Layers[0].MediaType = types.DockerForeignLayer })
		}), FaultUnsupportedMediaType, "foreign"},
		{"not an image config", edited(t, func(t *testing.T, a *archiveFiles) {
			a.editManifest(t, func(m *v1.Manifest) { m.Config.MediaType = "application/vnd.cncf.helm.config.v1+json" })
		}), FaultUnsupportedMediaType, "helm"},
		{"schema 1 manifest", edited(t, func(t *testing.T, a *archiveFiles) {
			idx := a.index(t)
			idx.Manifests[0].MediaType = types.DockerManifestSchema1Signed
			a.set("index.json", mustJSON(t, idx))
		}), FaultUnsupportedMediaType, "manifest.v1+prettyjws"},
		{"two images for other platforms", twoImages("s390x", "riscv64"), FaultAmbiguous, "2 images and 0 of them"},
		{"two images for this platform", twoImages(runtime.GOARCH, runtime.GOARCH), FaultAmbiguous, "2 images and 2 of them"},
		{"docker save of two images", legacy(legacyCfg, legacyLayer, 2), FaultAmbiguous, "2 images"},
		{"index not JSON", edited(t, func(t *testing.T, a *archiveFiles) { a.set("index.json", []byte("{")) }), FaultMalformed, "index.json"},
		{"blob missing", edited(t, func(t *testing.T, a *archiveFiles) {
			a.remove(blobPath(a.manifest(t).Layers[1].Digest))
		}), FaultMalformed, "missing"},
		{"manifest.json names another image", edited(t, func(t *testing.T, a *archiveFiles) {
			var m []dockerManifestEntry
			json.Unmarshal(a.get(t, "manifest.json"), &m)
			m[0].Layers = m[0].Layers[:1]
			a.set("manifest.json", mustJSON(t, m))
		}), FaultMalformed, "manifest.json lists 1 layers"},
		{"duplicate entry", edited(t, func(t *testing.T, a *archiveFiles) {
			a.files = append(a.files, tarFile{name: "./index.json", data: a.get(t, "index.json")})
		}), FaultMalformed, "twice"},
		{"schema not JSON", edited(t, func(t *testing.T, a *archiveFiles) {
			a.editManifest(t, func(m *v1.Manifest) { m.Annotations[AnnotationRequestSchema] = "{" })
		}), FaultMalformed, "request-schema"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := saveFile(t, "x.ociapp", c.data)
			_, err := Open(t.Context(), path)
			assertFault(t, err, c.fault)
			if !strings.Contains(err.Error(), c.detail) || !strings.Contains(err.Error(), path) {
				t.Errorf("message %q lacks %q or the path", err, c.detail)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Open(t.Context(), filepath.Join(t.TempDir(), "nope.ociapp"))
		assertFault(t, err, FaultMissing)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v does not wrap os.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Open(t.Context(), t.TempDir())
		assertFault(t, err, FaultNotTar)
	})
}
