package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// The archives below are built the way an attacker builds them (scaled
// down where size does not change the outcome); the regression tests and
// the fuzz seeds share them.

// forgedArchive is an artifact of its own whose index names the victim's
// manifest digest, with a link entry at blobs/sha256/<that digest> pointing
// at its own manifest.
func forgedArchive(t testing.TB, victim []byte, hard bool) []byte {
	t.Helper()
	victimIndex := indexOf(t, victim)
	forger := untar(t, writeArtifact(t, testImage(t, map[string]string{"app": "forger"}), testMetadata))
	own := indexOf(t, mktar(t, forger)).Manifests[0]
	forged := own
	forged.Digest = victimIndex.Manifests[0].Digest
	var files []tarFile
	for _, f := range forger {
		if f.name == "index.json" {
			f.data = mustJSON(t, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{forged}})
		}
		files = append(files, f)
	}
	link := tarFile{name: blobPath(forged.Digest), link: own.Digest.Hex}
	if hard {
		link = tarFile{name: blobPath(forged.Digest), link: blobPath(own.Digest), hard: true}
	}
	return mktar(t, append(files, link))
}

func indexOf(t testing.TB, archive []byte) v1.IndexManifest {
	t.Helper()
	for _, f := range untar(t, archive) {
		if f.name == "index.json" {
			var idx v1.IndexManifest
			if err := json.Unmarshal(f.data, &idx); err != nil {
				t.Fatal(err)
			}
			return idx
		}
	}
	t.Fatal("no index.json")
	return v1.IndexManifest{}
}

// nestedIndexes is an OCI layout whose index.json lists an image index
// fanout times, which lists the next one fanout times, depth indexes deep,
// the last listing one image fanout times: fanout^(depth+1) paths to it.
func nestedIndexes(t testing.TB, depth, fanout int) (archive []byte, image v1.Hash) {
	t.Helper()
	l := newLayout(t)
	d := l.image(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil, types.OCILayer, gz, layerTar(t, map[string]string{"a": "1"}))
	image = d.Digest
	for range depth {
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		for range fanout {
			idx.Manifests = append(idx.Manifests, d)
		}
		d = l.blob(types.OCIImageIndex, mustJSON(t, idx))
	}
	var top v1.IndexManifest
	for range fanout {
		top.Manifests = append(top.Manifests, d)
	}
	return l.bytes(top), image
}

// zeros is a reader of n zero bytes.
func zeros(n int64) io.Reader { return io.LimitReader(zeroReader{}, n) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// bombLayer compresses n zero bytes with gzip or zstd (streaming, so a
// large n costs no memory) and returns the blob and its diff ID.
func bombLayer(t testing.TB, mt types.MediaType, n int64) ([]byte, v1.Hash) {
	t.Helper()
	var buf bytes.Buffer
	var zw io.WriteCloser
	var err error
	if mt == types.OCILayerZStd {
		zw, err = zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	} else {
		zw, err = gzip.NewWriterLevel(&buf, gzip.BestCompression)
	}
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(zw, h), zeros(n)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), hashOf(h)
}

// zstdBomb is a zstd frame of RLE blocks that decompresses to n zero bytes
// (n a multiple of 128 KiB) at 4 bytes per 128 KiB: 1 GiB in 32 KB, what
// the probe used.
func zstdBomb(n int64) []byte {
	const block = 128 << 10
	// Magic, a frame header without content size and a 128 KiB window.
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3}
	for left := n; left > 0; left -= block {
		hdr := uint32(block<<3 | 1<<1) // an RLE block regenerating 128 KiB
		if left <= block {
			hdr |= 1 // the last block
		}
		out = append(out, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0x00)
	}
	return out
}

// layoutWithLayers is an OCI layout of one image whose layers are the given
// blobs, recorded with the given diff IDs.
func layoutWithLayers(t testing.TB, mt types.MediaType, blobs [][]byte, diffIDs []v1.Hash) []byte {
	t.Helper()
	l := newLayout(t)
	cfg := v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for _, b := range blobs {
		m.Layers = append(m.Layers, l.blob(mt, b))
	}
	m.Config = l.blob(types.OCIConfigJSON, mustJSON(t, cfg))
	return l.bytes(v1.IndexManifest{Manifests: []v1.Descriptor{l.blob(types.OCIManifestSchema1, mustJSON(t, m))}})
}

// dockerSaveWithLayer is a legacy docker-save archive of one layer file.
func dockerSaveWithLayer(t testing.TB, layer []byte, diffID v1.Hash) []byte {
	t.Helper()
	cfg := mustJSON(t, v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}}})
	return mktar(t, []tarFile{
		{name: sha(cfg).Hex + ".json", data: cfg},
		{name: "l/layer.tar", data: layer},
		{name: "manifest.json", data: mustJSON(t, []dockerManifestEntry{{Config: sha(cfg).Hex + ".json", Layers: []string{"l/layer.tar"}}})},
	})
}

// hugeIndex is an OCI layout whose index.json lists n entries, each with a
// media type of typeLen bytes no reader supports.
func hugeIndex(t testing.TB, n, typeLen int) []byte {
	t.Helper()
	var idx v1.IndexManifest
	mt := types.MediaType("application/x-" + strings.Repeat("z", typeLen))
	for i := range n {
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Size: int64(i), Digest: sha([]byte(fmt.Sprint(i)))})
	}
	return newLayout(t).bytes(idx)
}

func openBytes(t *testing.T, data []byte, opts ...OpenOption) (*Artifact, error) {
	t.Helper()
	return Open(t.Context(), saveFile(t, "hostile.ociapp", data), opts...)
}

// assertLimit checks that err is a FaultLimit naming the limit, in a short
// message.
func assertLimit(t *testing.T, err error, limit string) {
	t.Helper()
	assertFault(t, err, FaultLimit)
	if !strings.Contains(err.Error(), "Limits."+limit) {
		t.Errorf("message %q does not name Limits.%s", err, limit)
	}
	assertShort(t, err)
}

// assertShort checks that an error message stays short whatever the file
// holds.
func assertShort(t *testing.T, err error) {
	t.Helper()
	if n := len(err.Error()); n > 3*maxDetail {
		t.Errorf("message is %d bytes: %.200s...", n, err)
	}
}

// TestOpenRejectsForgedDigest: a link entry at blobs/sha256/<victim's
// manifest digest> used to make Open report the victim's digest for the
// forger's image, so the forger's container served the victim's requests.
func TestOpenRejectsForgedDigest(t *testing.T) {
	victim := writeArtifact(t, testImage(t, map[string]string{"app": "victim"}), Metadata{Name: "victim", Version: "1"})
	for _, hard := range []bool{false, true} {
		t.Run(fmt.Sprintf("hard=%v", hard), func(t *testing.T) {
			a, err := openBytes(t, forgedArchive(t, victim, hard))
			if err == nil {
				t.Fatalf("forged archive accepted with digest %s", a.Digest)
			}
			assertFault(t, err, FaultMalformed)
			if !strings.Contains(err.Error(), "blobs must be regular files") {
				t.Errorf("message %q does not say why", err)
			}
		})
	}
	t.Run("link outside blobs still allowed", func(t *testing.T) {
		// docker save before 25 links repeated <id>/layer.tar files; their
		// content is hashed against the config's diff IDs.
		layer := layerTar(t, map[string]string{"a": "1"})
		cfg := mustJSON(t, v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(layer), sha(layer)}}})
		_, err := openBytes(t, mktar(t, []tarFile{
			{name: sha(cfg).Hex + ".json", data: cfg},
			{name: "a/layer.tar", data: layer},
			{name: "b/layer.tar", link: "a/layer.tar", hard: true},
			{name: "manifest.json", data: mustJSON(t, []dockerManifestEntry{{Config: sha(cfg).Hex + ".json", Layers: []string{"a/layer.tar", "b/layer.tar"}}})},
		}))
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenNestingBomb: four nested indexes each listing the next 200 times
// used to cost 200^5 descriptor visits; each index is now read once.
func TestOpenNestingBomb(t *testing.T) {
	data, image := nestedIndexes(t, 4, 200)
	a, err := openBytes(t, data)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != image {
		t.Errorf("digest %s, want the one image %s", a.Digest, image)
	}

	t.Run("too deep", func(t *testing.T) {
		data, _ := nestedIndexes(t, 5, 1)
		_, err := openBytes(t, data)
		assertLimit(t, err, "MaxIndexDepth")
	})
	t.Run("fan-out", func(t *testing.T) {
		data, _ := nestedIndexes(t, 1, DefaultLimits().MaxDocumentEntries+1)
		_, err := openBytes(t, data)
		assertLimit(t, err, "MaxDocumentEntries")
	})
	t.Run("descriptors in all", func(t *testing.T) {
		_, err := openBytes(t, data, WithLimits(Limits{MaxDescriptors: 500}))
		assertLimit(t, err, "MaxDescriptors")
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := Open(ctx, saveFile(t, "x.ociapp", data))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
}

// TestOpenDecompressionBomb: a 33 KB zstd layer used to cost seconds of
// CPU; a layer may now expand 100-fold (at least to 16 MiB), checked as it
// is decompressed.
func TestOpenDecompressionBomb(t *testing.T) {
	// The diff ID does not matter: the expansion is stopped first.
	anyDiffID := sha([]byte("any"))
	t.Run("as probed", func(t *testing.T) {
		bomb := zstdBomb(1 << 30)
		_, err := openBytes(t, layoutWithLayers(t, types.OCILayerZStd, [][]byte{bomb}, []v1.Hash{anyDiffID}))
		assertLimit(t, err, "MaxExpansionRatio")
	})
	t.Run("docker save", func(t *testing.T) {
		_, err := openBytes(t, dockerSaveWithLayer(t, zstdBomb(1<<30), anyDiffID))
		assertLimit(t, err, "MaxExpansionRatio")
	})
	for _, mt := range []types.MediaType{types.OCILayerZStd, types.OCILayer} {
		t.Run(string(mt), func(t *testing.T) {
			bomb, diffID := bombLayer(t, mt, 32<<20)
			if len(bomb)*100 > expansionAllowance {
				t.Fatalf("the bomb is %d bytes; too large to test the ratio", len(bomb))
			}
			_, err := openBytes(t, layoutWithLayers(t, mt, [][]byte{bomb}, []v1.Hash{diffID}))
			assertLimit(t, err, "MaxExpansionRatio")
			// The same layer passes when the ratio is lifted, so it is the
			// ratio that stopped it.
			if _, err := openBytes(t, layoutWithLayers(t, mt, [][]byte{bomb}, []v1.Hash{diffID}), WithLimits(Limits{MaxExpansionRatio: -1})); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("deferred", func(t *testing.T) {
		// WithDeferredLayerCheck opens the file on its blob digests alone;
		// the bomb is found before any layer can reach an engine.
		a, err := openBytes(t, layoutWithLayers(t, types.OCILayerZStd, [][]byte{zstdBomb(1 << 30)}, []v1.Hash{anyDiffID}), WithDeferredLayerCheck())
		if err != nil {
			t.Fatalf("deferred open: %v", err)
		}
		assertLimit(t, a.CheckLayers(t.Context()), "MaxExpansionRatio")
		var out bytes.Buffer
		assertLimit(t, a.WriteDockerArchive(t.Context(), &out), "MaxExpansionRatio")
		if out.Len() != 0 {
			t.Errorf("WriteDockerArchive wrote %d bytes of an unchecked artifact", out.Len())
		}
	})
	t.Run("layer size", func(t *testing.T) {
		layer := layerTar(t, map[string]string{"big": strings.Repeat("x", 1<<20)})
		_, err := openBytes(t, layoutWithLayers(t, types.OCILayer, [][]byte{gz(t, layer)}, []v1.Hash{sha(layer)}), WithLimits(Limits{MaxLayerSize: 1 << 20}))
		assertLimit(t, err, "MaxLayerSize")
	})
	t.Run("image size", func(t *testing.T) {
		// The same layer listed twice counts twice: the engine stores it
		// at both places.
		layer := layerTar(t, map[string]string{"big": strings.Repeat("x", 600<<10)})
		data := layoutWithLayers(t, types.OCILayer, [][]byte{gz(t, layer), gz(t, layer)}, []v1.Hash{sha(layer), sha(layer)})
		_, err := openBytes(t, data, WithLimits(Limits{MaxImageSize: 1 << 20}))
		assertLimit(t, err, "MaxImageSize")
		if _, err := openBytes(t, data, WithLimits(Limits{MaxImageSize: 2 << 20})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong diff ID", func(t *testing.T) {
		layer := layerTar(t, map[string]string{"a": "1"})
		_, err := openBytes(t, layoutWithLayers(t, types.OCILayerZStd, [][]byte{zst(t, layer)}, []v1.Hash{sha([]byte("other"))}))
		assertFault(t, err, FaultDigestMismatch)
	})
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	ra io.ReaderAt
	n  int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.ra.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// TestDiffIDStopsAtBudget checks the expansion while decompressing: of an
// 8 GiB bomb, only what yields the budget is read.
func TestDiffIDStopsAtBudget(t *testing.T) {
	bomb := zstdBomb(8 << 30)
	data := mktar(t, []tarFile{{name: "layer", data: bomb}})
	arc, err := scanTar(t.Context(), bytes.NewReader(data), int64(len(data)), "bomb", Limits{}.withDefaults(), v1.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	counter := &countingReaderAt{ra: arc.ra}
	arc.ra = counter
	if _, _, err := arc.diffID(t.Context(), arc.entries["layer"], 16<<20); !errors.Is(err, errExpansion) {
		t.Fatalf("error %v, want errExpansion", err)
	}
	if counter.n > int64(len(bomb))/4 {
		t.Errorf("read %d of the bomb's %d bytes to find it exceeds 16 MiB", counter.n, len(bomb))
	}
}

// TestOpenTrailingData: bytes after the end-of-archive marker used to be
// accepted, so one image could be stored as any number of different files.
func TestOpenTrailingData(t *testing.T) {
	good := writeArtifact(t, testImage(t, map[string]string{"a": "1"}), testMetadata)
	for _, c := range []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"padded to a record", append(bytes.Clone(good), make([]byte, tarRecord)...), false},
		{"garbage", append(bytes.Clone(good), "garbage"...), true},
		{"a second archive", append(bytes.Clone(good), good...), true},
		{"more zeros than a record", append(bytes.Clone(good), make([]byte, tarRecord+512)...), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := openBytes(t, c.data)
			if !c.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			assertFault(t, err, FaultMalformed)
			if !strings.Contains(err.Error(), "end-of-archive marker") {
				t.Errorf("message %q does not say where", err)
			}
		})
	}
	t.Run("archive size", func(t *testing.T) {
		_, err := openBytes(t, good, WithLimits(Limits{MaxArchiveSize: int64(len(good)) - 1}))
		assertLimit(t, err, "MaxArchiveSize")
	})
	t.Run("long name", func(t *testing.T) {
		_, err := openBytes(t, mktar(t, []tarFile{{name: strings.Repeat("n", maxName+1), data: []byte("x")}}))
		assertFault(t, err, FaultLimit)
		assertShort(t, err)
	})
	t.Run("entries", func(t *testing.T) {
		var files []tarFile
		for i := range DefaultLimits().MaxEntries + 1 {
			files = append(files, tarFile{name: fmt.Sprintf("f%d", i)})
		}
		_, err := openBytes(t, mktar(t, files))
		assertLimit(t, err, "MaxEntries")
	})
}

// TestOpenHugeDocuments: a 16 MB index.json of 75,000 entries used to cost
// tens of seconds and a 13 MB error message.
func TestOpenHugeDocuments(t *testing.T) {
	t.Run("as probed", func(t *testing.T) {
		_, err := openBytes(t, hugeIndex(t, 75_000, 1))
		assertLimit(t, err, "MaxJSONSize")
	})
	t.Run("entries", func(t *testing.T) {
		_, err := openBytes(t, hugeIndex(t, DefaultLimits().MaxDocumentEntries+1, 1))
		assertLimit(t, err, "MaxDocumentEntries")
	})
	t.Run("long media types", func(t *testing.T) {
		_, err := openBytes(t, hugeIndex(t, 900, 3_000))
		assertFault(t, err, FaultUnsupportedMediaType)
		assertShort(t, err)
	})
	t.Run("layers", func(t *testing.T) {
		layer := layerTar(t, map[string]string{"a": "1"})
		var blobs [][]byte
		var diffIDs []v1.Hash
		for range DefaultLimits().MaxDocumentEntries + 1 {
			blobs, diffIDs = append(blobs, layer), append(diffIDs, sha(layer))
		}
		_, err := openBytes(t, layoutWithLayers(t, types.OCIUncompressedLayer, blobs, diffIDs))
		assertLimit(t, err, "MaxDocumentEntries")
	})
	t.Run("docker save images", func(t *testing.T) {
		var m []dockerManifestEntry
		for range DefaultLimits().MaxDocumentEntries + 1 {
			m = append(m, dockerManifestEntry{Config: "c.json"})
		}
		_, err := openBytes(t, mktar(t, []tarFile{{name: "manifest.json", data: mustJSON(t, m)}}))
		assertLimit(t, err, "MaxDocumentEntries")
	})
	t.Run("many images", func(t *testing.T) {
		l := newLayout(t)
		var idx v1.IndexManifest
		for i := range 300 {
			d := l.image(v1.Platform{OS: "linux", Architecture: strings.Repeat("x", 200) + fmt.Sprint(i)}, nil, types.OCILayer, gz, layerTar(t, map[string]string{"n": fmt.Sprint(i)}))
			idx.Manifests = append(idx.Manifests, d)
		}
		_, err := openBytes(t, l.bytes(idx))
		assertFault(t, err, FaultAmbiguous)
		assertShort(t, err)
	})
	t.Run("long metadata", func(t *testing.T) {
		// Names and versions are printed and logged. The index entry's
		// annotations name the image; the manifest's describe the app.
		long := strings.Repeat("x", 1<<20)
		for _, key := range []string{AnnotationTitle, AnnotationVersion, AnnotationContainerdName} {
			data := edited(t, func(t *testing.T, a *archiveFiles) {
				idx := a.index(t)
				idx.Manifests[0].Annotations[key] = long
				a.set("index.json", mustJSON(t, idx))
			})
			_, err := openBytes(t, data)
			assertFault(t, err, FaultMalformed)
			assertShort(t, err)
		}
		for _, key := range []string{AnnotationEntrypoint, AnnotationProtocol, AnnotationCapabilities} {
			data := edited(t, func(t *testing.T, a *archiveFiles) {
				a.editManifest(t, func(m *v1.Manifest) { m.Annotations[key] = long })
			})
			_, err := openBytes(t, data)
			assertFault(t, err, FaultMalformed)
			assertShort(t, err)
		}
	})
	t.Run("long number", func(t *testing.T) {
		// encoding/json repeats a number it cannot store in its error.
		idx := []byte(`{"schemaVersion":` + strings.Repeat("9", 1<<20) + `}`)
		_, err := openBytes(t, mktar(t, []tarFile{{name: "index.json", data: idx}}))
		assertFault(t, err, FaultMalformed)
		assertShort(t, err)
	})
}

func TestLimitsZeroValueIsDefault(t *testing.T) {
	if got := (Limits{}).withDefaults(); got != DefaultLimits() {
		t.Errorf("zero Limits give %+v, want %+v", got, DefaultLimits())
	}
	if got := (Limits{MaxLayerSize: -1}).withDefaults(); got.MaxLayerSize != noLimit || got.MaxImageSize != DefaultLimits().MaxImageSize {
		t.Errorf("a negative limit gives %+v", got)
	}
	d := DefaultLimits().withDefaults()
	for _, c := range []struct {
		compressed, want int64
	}{
		{0, expansionAllowance},
		{1000, expansionAllowance},
		// A Python image's layers: ~55 MB of gzip for 160 MB.
		{55 << 20, 5500 << 20},
		{1 << 30, d.MaxLayerSize},
		{noLimit / 2, d.MaxLayerSize},
	} {
		if got := d.maxExpanded(c.compressed); got != c.want {
			t.Errorf("maxExpanded(%d) = %d, want %d", c.compressed, got, c.want)
		}
	}
}

// TestImageStopsAtOpenedSize: a file changed after Open into a
// decompression bomb stops at the size the layer had when it was verified.
func TestImageStopsAtOpenedSize(t *testing.T) {
	noise := make([]byte, 64<<10)
	x := uint64(88172645463325252)
	for i := range noise {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		noise[i] = byte(x)
	}
	path := saveFile(t, "a.ociapp", writeArtifact(t, testImage(t, map[string]string{"noise": string(noise)}), testMetadata))
	a, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	e := a.blobs[a.Layers[0].Digest]
	bomb := zstdBomb(1 << 30)
	if int64(len(bomb))+8 > e.size {
		t.Fatalf("the layer (%d bytes) is too small to hold the bomb (%d)", e.size, len(bomb))
	}
	// A skippable frame pads the bomb to the blob's size.
	pad := e.size - int64(len(bomb)) - 8
	bomb = append(bomb, 0x50, 0x2a, 0x4d, 0x18, byte(pad), byte(pad>>8), byte(pad>>16), byte(pad>>24))
	bomb = append(bomb, make([]byte, pad)...)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[e.offset:], bomb)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}

	img, err := a.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	assertFault(t, err, FaultDigestMismatch)
	if n > a.expanded[a.Layers[0].Digest] {
		t.Errorf("read %d bytes of a layer that held %d", n, a.expanded[a.Layers[0].Digest])
	}
}

// TestOpenReadsEachDocumentOnce: a large document listed many times without
// a media type is read (and hashed) once, not once per listing.
func TestOpenReadsEachDocumentOnce(t *testing.T) {
	l := newLayout(t)
	image := l.image(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil, types.OCILayer, gz, layerTar(t, map[string]string{"a": "1"}))
	padded := v1.Manifest{SchemaVersion: 2, Config: v1.Descriptor{MediaType: types.OCIConfigJSON}, Annotations: map[string]string{"pad": strings.Repeat("p", 512<<10)}}
	att := l.blob("", mustJSON(t, padded))
	att.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	idx := v1.IndexManifest{Manifests: []v1.Descriptor{image}}
	for range 900 {
		idx.Manifests = append(idx.Manifests, att)
	}
	data := l.bytes(idx)
	counter := &countingReaderAt{ra: bytes.NewReader(data)}
	a, err := read(t.Context(), counter, int64(len(data)), "x.ociapp", openConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != image.Digest {
		t.Errorf("digest %s, want %s", a.Digest, image.Digest)
	}
	if counter.n > 3*int64(len(data)) {
		t.Errorf("read %d bytes of a %d-byte archive", counter.n, len(data))
	}
}
