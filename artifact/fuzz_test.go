package artifact

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func FuzzRead(f *testing.F) {
	good := writeArtifact(f, testImage(f, map[string]string{"a": "1"}), testMetadata)
	f.Add(good)
	f.Add(good[:len(good)-1024])
	l := newLayout(f)
	d := l.image(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, []string{"ociapp", "serve", "--app", "m:app"}, types.OCILayerZStd, zst, layerTar(f, map[string]string{"b": "2"}))
	f.Add(l.bytes(v1.IndexManifest{Manifests: []v1.Descriptor{d}}))
	layer := layerTar(f, map[string]string{"c": "3"})
	cfg := mustJSON(f, v1.ConfigFile{RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(layer)}}})
	f.Add(mktar(f, []tarFile{
		{name: sha(cfg).Hex + ".json", data: cfg},
		{name: "x/layer.tar", data: layer},
		{name: "y/layer.tar", link: "../x/layer.tar"},
		{name: "manifest.json", data: mustJSON(f, []dockerManifestEntry{{Config: sha(cfg).Hex + ".json", Layers: []string{"y/layer.tar"}}})},
	}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := read(t.Context(), bytes.NewReader(data), int64(len(data)), "fuzz.ociapp", Limits{}.withDefaults())
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is a %T, not an *Error", err, err)
			}
			return
		}
		if len(a.Layers) != len(a.Config.RootFS.DiffIDs) {
			t.Fatalf("%d layers but %d diff IDs", len(a.Layers), len(a.Config.RootFS.DiffIDs))
		}
		for _, l := range a.Layers {
			if a.blobs[l.Digest] == nil {
				t.Fatalf("layer %s has no blob", l.Digest)
			}
		}
	})
}
