package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// tarFile is one entry of a test archive.
type tarFile struct {
	name string
	data []byte
	link string // symlink target when set
	hard bool   // link is a hard link
}

func untar(t testing.TB, data []byte) []tarFile {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var files []tarFile
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, tarFile{name: hdr.Name, data: b, link: hdr.Linkname, hard: hdr.Typeflag == tar.TypeLink})
	}
}

func mktar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if f.link != "" {
			hdr = &tar.Header{Name: f.name, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: f.link, ModTime: time.Unix(0, 0)}
			if f.hard {
				hdr.Typeflag = tar.TypeLink
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layerTar is the uncompressed tar of a layer holding files.
func layerTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var tf []tarFile
	for _, n := range names {
		tf = append(tf, tarFile{name: n, data: []byte(files[n])})
	}
	return mktar(t, tf)
}

// testImage is a linux image for this machine's architecture with one layer
// per map, running the original builder's command.
func testImage(t testing.TB, layers ...map[string]string) v1.Image {
	t.Helper()
	img := empty.Image
	for _, files := range layers {
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(layerTar(t, files), types.OCIUncompressedLayer))
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.User = "65532:65532"
	cfg.Config.Cmd = []string{"ociapp", "serve", "--app", "demo.main:app"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var testMetadata = Metadata{
	Name:           "demo-app",
	Version:        "1.2.3",
	Entrypoint:     "demo.main:app",
	RequestSchema:  json.RawMessage(`{"type":"object","properties":{"value":{"type":"string"}}}`),
	ResponseSchema: json.RawMessage(`{"type": "object"}`),
}

func writeArtifact(t testing.TB, img v1.Image, md Metadata) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, img, md); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// saveFile writes data to a file in a test directory and returns its path.
func saveFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(data []byte) v1.Hash {
	s := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zst(t testing.TB, data []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(data, nil)
}

// layout assembles OCI layout archives by hand, the way other tools write
// them.
type layout struct {
	t     testing.TB
	files []tarFile
	seen  map[string]bool
}

func newLayout(t testing.TB) *layout {
	return &layout{t: t, seen: map[string]bool{}, files: []tarFile{{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}}}
}

func (l *layout) blob(mt types.MediaType, data []byte) v1.Descriptor {
	d := sha(data)
	if !l.seen[d.Hex] {
		l.seen[d.Hex] = true
		l.files = append(l.files, tarFile{name: "blobs/sha256/" + d.Hex, data: data})
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: d}
}

// image adds an image with the given (uncompressed) layers, compressing them
// with compress and labelling them mt, and returns its manifest descriptor.
func (l *layout) image(platform v1.Platform, cmd []string, mt types.MediaType, compress func(testing.TB, []byte) []byte, layers ...[]byte) v1.Descriptor {
	cfg := v1.ConfigFile{OS: platform.OS, Architecture: platform.Architecture, RootFS: v1.RootFS{Type: "layers"}}
	cfg.Config.Cmd = cmd
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for _, layer := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, sha(layer))
		m.Layers = append(m.Layers, l.blob(mt, compress(l.t, layer)))
	}
	m.Config = l.blob(types.OCIConfigJSON, mustJSON(l.t, cfg))
	return l.blob(types.OCIManifestSchema1, mustJSON(l.t, m))
}

func (l *layout) bytes(index v1.IndexManifest) []byte {
	index.SchemaVersion = 2
	index.MediaType = types.OCIImageIndex
	files := append([]tarFile{{name: "index.json", data: mustJSON(l.t, index)}}, l.files...)
	return mktar(l.t, files)
}

func identity(_ testing.TB, b []byte) []byte { return b }
