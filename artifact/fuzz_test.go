package artifact

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fuzzLimits keep each input cheap while exercising every limit: the
// bombs among the seeds hit them at a few MiB instead of the defaults.
func fuzzLimits() Limits {
	return Limits{
		MaxArchiveSize:     64 << 20,
		MaxEntries:         2_000,
		MaxJSONSize:        1 << 20,
		MaxDocumentEntries: 300,
		MaxIndexDepth:      4,
		MaxDescriptors:     1_000,
		MaxLayerSize:       1 << 20,
		MaxImageSize:       2 << 20,
		MaxExpansionRatio:  100,
	}
}

// checkRead reads data as an artifact and checks what any reader of its
// result relies on: failures are *Error values, and an accepted artifact's
// identity is the digest of the bytes it was read from.
func checkRead(t *testing.T, data []byte) {
	a, err := read(t.Context(), bytes.NewReader(data), int64(len(data)), "fuzz.ociapp", openConfig{limits: fuzzLimits()})
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			t.Fatalf("error %v is a %T, not an *Error", err, err)
		}
		if len(err.Error()) > 3*maxDetail {
			t.Fatalf("message of %d bytes", len(err.Error()))
		}
		return
	}
	if got := sha(a.rawManifest); got != a.Digest {
		t.Fatalf("digest %s but the manifest read hashes to %s", a.Digest, got)
	}
	if got := sha(a.rawConfig); got != a.ConfigDigest {
		t.Fatalf("config digest %s but the config read hashes to %s", a.ConfigDigest, got)
	}
	if len(a.Layers) != len(a.Config.RootFS.DiffIDs) {
		t.Fatalf("%d layers but %d diff IDs", len(a.Layers), len(a.Config.RootFS.DiffIDs))
	}
	for _, l := range a.Layers {
		e := a.blobs[l.Digest]
		if e == nil {
			t.Fatalf("layer %s has no blob", l.Digest)
		}
		if got := sha(data[e.offset : e.offset+e.size]); got != l.Digest {
			t.Fatalf("layer %s is stored as bytes hashing to %s", l.Digest, got)
		}
	}
	// Reopened as a file verified before, it reads the same.
	again, err := read(t.Context(), bytes.NewReader(data), int64(len(data)), "fuzz.ociapp", openConfig{limits: fuzzLimits(), verified: a.FileDigest()})
	if err != nil {
		t.Fatalf("reopening a verified file: %v", err)
	}
	if again.Digest != a.Digest || again.ConfigDigest != a.ConfigDigest || again.FileDigest() != sha(data) {
		t.Fatalf("reopened as %s, %s, %s; first %s, %s, %s", again.Digest, again.ConfigDigest, again.FileDigest(), a.Digest, a.ConfigDigest, sha(data))
	}
}

// hostileSeeds are the archives of the regression tests, scaled to
// fuzzLimits.
func hostileSeeds(t testing.TB) [][]byte {
	victim := writeArtifact(t, testImage(t, map[string]string{"app": "victim"}), Metadata{Name: "victim", Version: "1"})
	good := writeArtifact(t, testImage(t, map[string]string{"a": "1"}), testMetadata)
	nested, _ := nestedIndexes(t, 4, 20)
	deep, _ := nestedIndexes(t, 5, 1)
	anyDiffID := sha([]byte("any"))
	gzBomb, gzDiffID := bombLayer(t, types.OCILayer, 8<<20)
	return [][]byte{
		forgedArchive(t, victim, false),
		forgedArchive(t, victim, true),
		nested,
		deep,
		layoutWithLayers(t, types.OCILayerZStd, [][]byte{zstdBomb(1 << 30)}, []v1.Hash{anyDiffID}),
		layoutWithLayers(t, types.OCILayer, [][]byte{gzBomb}, []v1.Hash{gzDiffID}),
		dockerSaveWithLayer(t, zstdBomb(1<<30), anyDiffID),
		append(bytes.Clone(good), "garbage"...),
		append(bytes.Clone(good), good...),
		hugeIndex(t, fuzzLimits().MaxDocumentEntries+1, 1),
		hugeIndex(t, 20, 200),
	}
}

// FuzzRead reads arbitrary bytes as an artifact; the seeds are valid
// artifacts of every format and the hostile archives of the regression
// tests.
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
	for _, seed := range hostileSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(checkRead)
}

// FuzzGraph builds archives whose blobs all hash to their names, so that
// the fuzzer explores the index/manifest graph (nesting, repeats, missing
// media types, attestations, platforms, links, wrong sizes, bombs) rather
// than stopping at the first digest check, as FuzzRead mostly does.
func FuzzGraph(f *testing.F) {
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 1, 0, 1, 3, 0, 2, 7, 1})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 1, 2, 0, 5, 1, 4, 1, 2, 9, 0, 3})
	f.Add([]byte{0, 3, 4, 0, 0, 5, 0, 7, 1, 0, 1, 4, 3, 2, 0, 0, 6, 0, 0})
	f.Add([]byte{0, 2, 1, 8, 0, 0, 1, 8, 1, 3, 1, 8, 2, 3, 1, 8, 3, 3, 1, 8, 4, 3, 1, 8, 5, 3})
	f.Fuzz(func(t *testing.T, program []byte) {
		checkRead(t, buildGraph(t, program))
	})
}

// buildGraph interprets program as steps building an OCI layout: images,
// indexes over earlier nodes, and damage to them.
func buildGraph(t testing.TB, program []byte) []byte {
	next := func() int {
		if len(program) == 0 {
			return 0
		}
		b := program[0]
		program = program[1:]
		return int(b)
	}
	l := newLayout(t)
	var nodes []v1.Descriptor
	pick := func() v1.Descriptor { return nodes[next()%len(nodes)] }
	archs := []string{runtime.GOARCH, "s390x", ""}
	var extra []tarFile
	var trailer []byte
	image := func() {
		arch := archs[next()%len(archs)]
		content := layerTar(t, map[string]string{"f": fmt.Sprint(len(nodes))})
		var d v1.Descriptor
		switch next() % 4 {
		case 0:
			d = l.image(v1.Platform{OS: "linux", Architecture: arch}, nil, types.OCILayer, gz, content)
		case 1:
			d = l.image(v1.Platform{OS: "linux", Architecture: arch}, nil, types.OCILayerZStd, zst, content)
		case 2:
			d = l.image(v1.Platform{OS: "linux", Architecture: arch}, nil, types.OCIUncompressedLayer, identity, content)
		default:
			cfg := v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(content)}}}
			m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
				Config: l.blob(types.OCIConfigJSON, mustJSON(t, cfg)),
				Layers: []v1.Descriptor{l.blob(types.OCILayerZStd, zstdBomb(int64(1+next()%64)<<20))}}
			d = l.blob(types.OCIManifestSchema1, mustJSON(t, m))
		}
		if arch != "" && next()%2 == 0 {
			d.Platform = &v1.Platform{OS: "linux", Architecture: arch}
		}
		nodes = append(nodes, d)
	}
	image()
	for steps := 0; len(program) > 0 && steps < 32; steps++ {
		switch next() % 8 {
		case 0:
			image()
		case 1: // an index over earlier nodes, each listed several times
			idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
			for range 1 + next()%4 {
				d := pick()
				for range 1 + next()%16 {
					idx.Manifests = append(idx.Manifests, d)
				}
			}
			nodes = append(nodes, l.blob(types.OCIImageIndex, mustJSON(t, idx)))
		case 2: // a descriptor without media type
			d := pick()
			d.MediaType = ""
			nodes = append(nodes, d)
		case 3: // an attestation or an unknown platform
			d := pick()
			if next()%2 == 0 {
				d.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
			} else {
				d.Platform = &v1.Platform{OS: "unknown", Architecture: "unknown"}
			}
			nodes = append(nodes, d)
		case 4: // a link entry naming a blob, at it or at a missing digest
			target := pick()
			name := blobPath(pick().Digest)
			if next()%2 == 0 {
				name = blobPath(sha([]byte{byte(next())}))
			}
			extra = append(extra, tarFile{name: name, link: blobPath(target.Digest), hard: next()%2 == 0})
		case 5: // a wrong size
			d := pick()
			d.Size += int64(next()%3) - 1
			nodes = append(nodes, d)
		case 6: // a descriptor naming a digest the archive lacks
			d := pick()
			d.Digest = sha([]byte{byte(next())})
			nodes = append(nodes, d)
		case 7: // bytes after the end marker
			trailer = make([]byte, next()*64)
			if next()%2 == 0 && len(trailer) > 0 {
				trailer[len(trailer)-1] = 1
			}
		}
	}
	var index v1.IndexManifest
	for range 1 + next()%3 {
		index.Manifests = append(index.Manifests, nodes[len(nodes)-1-next()%len(nodes)])
	}
	l.files = append(l.files, extra...)
	return append(l.bytes(index), trailer...)
}
