package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// dockerManifestEntry is one image in a docker-save manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// blob is one file under blobs/sha256 in the written archive.
type blob struct {
	digest v1.Hash
	size   int64
	data   []byte // small JSON blobs
	file   string // compressed layers, in a file
	temp   bool   // file is ours to remove
}

// WriteOption configures Write and WriteFile.
type WriteOption func(*writeConfig) error

type writeConfig struct {
	layerCache string
}

// layerCacheScheme names the compression the cache holds: another
// compressor, level or compressor version may compress differently, and must
// not reuse older entries (the output would depend on the cache).
func layerCacheScheme() string {
	version := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/klauspost/compress" {
				version = dep.Version
			}
		}
	}
	return "gzip-6-klauspost-" + version
}

// WithLayerCache keeps compressed layers in dir and reuses them: a layer
// whose uncompressed digest (diff ID) was compressed before is not
// compressed again. Compression is deterministic, so the cache changes
// nothing but the time a write takes. Entries are verified before use; the
// directory may be deleted at any time.
func WithLayerCache(dir string) WriteOption {
	return func(c *writeConfig) error {
		if dir == "" {
			return errors.New("layer cache directory must not be empty")
		}
		c.layerCache = filepath.Join(dir, layerCacheScheme())
		return nil
	}
}

// WriteFile writes img as an .ociapp artifact at path. It writes a
// temporary file next to path and renames it into place, so a failed or
// cancelled write never leaves a partial artifact behind.
func WriteFile(ctx context.Context, path string, img v1.Image, md Metadata, opts ...WriteOption) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := Write(ctx, tmp, img, md, opts...); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	return nil
}

// Write writes img as an .ociapp artifact to w: a tar that is an OCI image
// layout and also carries a docker-save manifest.json over the same blobs.
// Layers are gzip-compressed (every Docker version can load gzip); the config
// blob is written unchanged, so the image ID Docker's classic store gives the
// image is the one img already has. The output depends only on img's config
// and uncompressed layers and on md: same inputs, same bytes.
//
// Compressed layers are staged in temporary files, since a tar header needs a
// blob's size before its content.
func Write(ctx context.Context, w io.Writer, img v1.Image, md Metadata, opts ...WriteOption) error {
	var wc writeConfig
	for _, o := range opts {
		if err := o(&wc); err != nil {
			return fmt.Errorf("writing artifact: %w", err)
		}
	}
	if wc.layerCache != "" {
		if err := os.MkdirAll(wc.layerCache, 0o755); err != nil {
			return fmt.Errorf("writing artifact: creating the layer cache: %w", err)
		}
	}
	md, err := md.normalized()
	if err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("writing artifact: reading image config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return fmt.Errorf("writing artifact: parsing image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("writing artifact: listing layers: %w", err)
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return fmt.Errorf("writing artifact: image has %d layers but its config lists %d diff IDs", len(layers), len(cfg.RootFS.DiffIDs))
	}

	blobs := map[v1.Hash]blob{}
	defer func() {
		for _, b := range blobs {
			if b.temp {
				_ = os.Remove(b.file)
			}
		}
	}()
	configBlob := jsonBlob(rawConfig)
	blobs[configBlob.digest] = configBlob

	manifest := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: configBlob.size, Digest: configBlob.digest},
		Layers:        []v1.Descriptor{},
		Annotations:   md.manifestAnnotations(),
	}
	dockerEntry := dockerManifestEntry{
		Config:   blobPath(configBlob.digest),
		RepoTags: []string{md.Ref},
		Layers:   []string{},
	}
	for i, layer := range layers {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("writing artifact: %w", err)
		}
		b, err := wc.compressLayer(layer, cfg.RootFS.DiffIDs[i])
		if err != nil {
			return fmt.Errorf("writing artifact: layer %d: %w", i, err)
		}
		if old, dup := blobs[b.digest]; dup {
			if b.temp {
				_ = os.Remove(b.file)
			}
			b = old
		}
		blobs[b.digest] = b
		manifest.Layers = append(manifest.Layers, v1.Descriptor{MediaType: types.OCILayer, Size: b.size, Digest: b.digest})
		dockerEntry.Layers = append(dockerEntry.Layers, blobPath(b.digest))
	}
	rawManifest, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	manifestBlob := jsonBlob(rawManifest)
	blobs[manifestBlob.digest] = manifestBlob

	entry := v1.Descriptor{
		MediaType:   types.OCIManifestSchema1,
		Size:        manifestBlob.size,
		Digest:      manifestBlob.digest,
		Annotations: md.indexAnnotations(),
	}
	if cfg.OS != "" && cfg.Architecture != "" {
		entry.Platform = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{entry}})
	if err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	dockerManifest, err := json.Marshal([]dockerManifestEntry{dockerEntry})
	if err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}

	if err := writeTar(ctx, w, blobs, map[string][]byte{
		"index.json":    index,
		"manifest.json": dockerManifest,
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
	}); err != nil {
		return fmt.Errorf("writing artifact: %w", err)
	}
	return nil
}

// writeTar writes the archive with fixed headers and entries in name order,
// so that equal inputs give equal bytes.
func writeTar(ctx context.Context, w io.Writer, blobs map[v1.Hash]blob, files map[string][]byte) error {
	tw := tar.NewWriter(w)
	header := func(name string, mode int64, size int64, typ byte) *tar.Header {
		return &tar.Header{
			Typeflag: typ,
			Name:     name,
			Mode:     mode,
			Size:     size,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatUSTAR,
		}
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(header(dir, 0o755, 0, tar.TypeDir)); err != nil {
			return err
		}
	}
	digests := make([]v1.Hash, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(a, b v1.Hash) int { return strings.Compare(a.Hex, b.Hex) })
	for _, d := range digests {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := blobs[d]
		if err := tw.WriteHeader(header(blobPath(d), 0o644, b.size, tar.TypeReg)); err != nil {
			return err
		}
		if err := b.copyTo(tw); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(header(n, 0o644, int64(len(files[n])), tar.TypeReg)); err != nil {
			return err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (b blob) copyTo(w io.Writer) error {
	if b.file == "" {
		_, err := w.Write(b.data)
		return err
	}
	f, err := os.Open(b.file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), f)
	if err != nil {
		return err
	}
	// The staged file is ours, but a damaged disk or a cleaner deleting
	// temporary files must not produce an artifact that fails to verify.
	if n != b.size || hex.EncodeToString(h.Sum(nil)) != b.digest.Hex {
		return fmt.Errorf("staged layer %s changed on disk", b.file)
	}
	return nil
}

// compressLayer gzips a layer's uncompressed content into a file, checking
// on the way that the content has the diff ID the config records. With a
// layer cache, the file is the cache entry "<diffID>.<digest>.gz".
func (wc writeConfig) compressLayer(layer v1.Layer, diffID v1.Hash) (blob, error) {
	if wc.layerCache != "" {
		if b, ok := wc.cachedLayer(diffID); ok {
			return b, nil
		}
	}
	dir := wc.layerCache // a temporary file there can be renamed into place
	b, err := compressToFile(layer, diffID, dir)
	if err != nil || wc.layerCache == "" {
		return b, err
	}
	entry := filepath.Join(wc.layerCache, diffID.Hex+"."+b.digest.Hex+".gz")
	if err := os.Rename(b.file, entry); err != nil {
		// Not cached, still usable.
		return b, nil
	}
	return blob{digest: b.digest, size: b.size, file: entry}, nil
}

// cachedLayer finds and verifies the cache entry of a diff ID; a damaged
// entry is removed.
func (wc writeConfig) cachedLayer(diffID v1.Hash) (blob, bool) {
	matches, _ := filepath.Glob(filepath.Join(wc.layerCache, diffID.Hex+".*.gz"))
	for _, entry := range matches {
		want := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(entry), diffID.Hex+"."), ".gz")
		f, err := os.Open(entry)
		if err != nil {
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err == nil && hex.EncodeToString(h.Sum(nil)) == want {
			return blob{digest: v1.Hash{Algorithm: "sha256", Hex: want}, size: n, file: entry}, true
		}
		_ = os.Remove(entry)
	}
	return blob{}, false
}

// compressToFile gzips a layer into a new temporary file in dir (the
// system's temporary directory when dir is "").
func compressToFile(layer v1.Layer, diffID v1.Hash, dir string) (b blob, err error) {
	rc, err := layer.Uncompressed()
	if err != nil {
		return b, fmt.Errorf("reading: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, ".ociapp-layer-*")
	if err != nil {
		return b, err
	}
	defer func() {
		cerr := f.Close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	compressed := sha256.New()
	counter := &countingWriter{w: io.MultiWriter(f, compressed)}
	zw, err := gzip.NewWriterLevel(counter, gzip.DefaultCompression)
	if err != nil {
		return b, err
	}
	uncompressed := sha256.New()
	if _, err := io.Copy(io.MultiWriter(zw, uncompressed), rc); err != nil {
		return b, fmt.Errorf("compressing: %w", err)
	}
	if err := zw.Close(); err != nil {
		return b, fmt.Errorf("compressing: %w", err)
	}
	if got := hashOf(uncompressed); got != diffID {
		return b, fmt.Errorf("content has diff ID %s but the config records %s", got, diffID)
	}
	return blob{digest: hashOf(compressed), size: counter.n, file: f.Name(), temp: true}, nil
}

func jsonBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, size: int64(len(data)), data: data}
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

func blobPath(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
