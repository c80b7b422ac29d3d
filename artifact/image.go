package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Image returns the artifact's image. Its layers are read from the file when
// used, and each read checks the blob's digest again; decompressing a layer
// stops with an error past the size Open found, so a file changed since
// Open cannot expand further than the file Open verified.
func (a *Artifact) Image() (v1.Image, error) {
	img, err := partial.CompressedToImage(&fileImage{a: a})
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	return &boundedImage{Image: img, a: a}, nil
}

// boundedImage bounds the decompression of its layers; see Image.
type boundedImage struct {
	v1.Image
	a *Artifact
}

func (i *boundedImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	for k, l := range ls {
		ls[k] = i.bound(l)
	}
	return ls, nil
}

func (i *boundedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return i.bound(l), nil
}

func (i *boundedImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return i.bound(l), nil
}

func (i *boundedImage) bound(l v1.Layer) v1.Layer {
	d, err := l.Digest()
	if err != nil {
		return l
	}
	i.a.layersMu.Lock()
	size, ok := i.a.expanded[d]
	i.a.layersMu.Unlock()
	if !ok {
		// Layers not checked yet (WithDeferredLayerCheck): bound each by
		// the expansion it is allowed.
		sz, err := l.Size()
		if err != nil {
			return l
		}
		size = i.a.limits.maxExpanded(sz)
	}
	return &boundedLayer{Layer: l, a: i.a, digest: d, size: size}
}

// boundedLayer is a layer whose content must not exceed size bytes.
type boundedLayer struct {
	v1.Layer
	a      *Artifact
	digest v1.Hash
	size   int64
}

func (l *boundedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return &boundedReader{rc: rc, left: l.size, l: l}, nil
}

type boundedReader struct {
	rc   io.ReadCloser
	left int64
	l    *boundedLayer
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, faultf(b.l.a.Path, FaultDigestMismatch, nil, "layer %s decompresses to more than the %d bytes it held when the artifact was opened", b.l.digest, b.l.size)
	}
	// Reading one byte past the size tells a layer that ends there from
	// one that goes on.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		n--
		return n, faultf(b.l.a.Path, FaultDigestMismatch, nil, "layer %s decompresses to more than the %d bytes it held when the artifact was opened", b.l.digest, b.l.size)
	}
	return n, err
}

func (b *boundedReader) Close() error { return b.rc.Close() }

// WriteDockerArchive checks the layers (see CheckLayers), then writes a tar
// that every Docker version's image load accepts. A DockerLoadable file is copied as it is (and checked to be
// unchanged since Open); any other is converted with Write, which keeps the
// config (and so the classic store's image ID) but gives the image a new
// manifest digest. The engine names the loaded image Metadata.Ref.
func (a *Artifact) WriteDockerArchive(ctx context.Context, w io.Writer) error {
	if err := a.CheckLayers(ctx); err != nil {
		return err
	}
	if !a.DockerLoadable {
		img, err := a.Image()
		if err != nil {
			return err
		}
		md := a.Metadata
		if md.Name == "" {
			md.Name = strings.TrimSuffix(filepath.Base(a.Path), filepath.Ext(a.Path))
		}
		if md.Version == "" {
			md.Version = "latest"
		}
		return Write(ctx, w, img, md)
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return &Error{Path: a.Path, Fault: FaultUnreadable, Err: err}
	}
	defer f.Close()
	h := sha256.New()
	r := &ctxReader{ctx: ctx, r: io.TeeReader(f, h)}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("copying artifact %s: %w", a.Path, err)
	}
	if got := hashOf(h); got != a.fileDigest {
		return faultf(a.Path, FaultDigestMismatch, nil, "the file changed since it was opened")
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// fileImage is the partial.CompressedImageCore of an artifact.
type fileImage struct{ a *Artifact }

func (i *fileImage) RawConfigFile() ([]byte, error)      { return i.a.rawConfig, nil }
func (i *fileImage) MediaType() (types.MediaType, error) { return i.a.mediaType, nil }
func (i *fileImage) RawManifest() ([]byte, error)        { return i.a.rawManifest, nil }

func (i *fileImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.a.ConfigDigest {
		return partial.ConfigLayer(i)
	}
	for _, l := range i.a.Layers {
		if l.Digest == h {
			return &fileLayer{a: i.a, layer: l, e: i.a.blobs[h]}, nil
		}
	}
	return nil, fmt.Errorf("artifact %s has no layer %s", i.a.Path, h)
}

// fileLayer is one layer blob of an artifact file.
type fileLayer struct {
	a     *Artifact
	layer Layer
	e     *entry
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.layer.Digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.layer.DiffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.layer.Size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.layer.MediaType, nil }

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.a.Path)
	if err != nil {
		return nil, &Error{Path: l.a.Path, Fault: FaultUnreadable, Err: err}
	}
	return &verifyingReader{
		r:    io.NewSectionReader(f, l.e.offset, l.e.size),
		c:    f,
		h:    sha256.New(),
		want: l.e.sum,
		path: l.a.Path,
		name: l.e.name,
	}, nil
}

// verifyingReader fails at EOF when what it read does not hash to want, so a
// file changed after Open is never read silently.
type verifyingReader struct {
	r    io.Reader
	c    io.Closer
	h    hash.Hash
	want v1.Hash
	path string
	name string
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if hashOf(v.h) != v.want {
			return n, faultf(v.path, FaultDigestMismatch, nil, "%s changed since the artifact was opened", v.name)
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.c.Close() }

// errExpansion is how diffID reports a layer that decompresses to more than
// its budget; the caller names the limit.
var errExpansion = errors.New("layer expands beyond its limit")

// maxZstdWindow bounds the memory a zstd layer can make the decoder
// allocate; zstd's default levels use windows of 8 MiB at most.
const maxZstdWindow = 128 << 20

// compression sniffs a layer file's compression from its first bytes and
// returns the media type it implies.
func (arc *archive) compression(e *entry) (types.MediaType, error) {
	head := make([]byte, 6)
	n, err := arc.ra.ReadAt(head, e.offset)
	if n < len(head) && err != nil && err != io.EOF {
		return "", faultf(arc.path, FaultUnreadable, err, "reading %s", quote(e.name))
	}
	head = head[:min(n, int(e.size))]
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return types.DockerLayer, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return types.OCILayerZStd, nil
	case bytes.HasPrefix(head, []byte("BZh")), bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "", faultf(arc.path, FaultUnsupportedMediaType, nil, "layer %s is bzip2- or xz-compressed", quote(e.name))
	}
	return types.DockerUncompressedLayer, nil
}

// diffID decompresses a layer file (by its content, whatever its media
// type says) and returns the digest and size of what it holds. More than
// budget bytes of content is errExpansion; the decompressed stream is
// checked as it is produced, so a bomb costs no more than its budget.
func (arc *archive) diffID(ctx context.Context, e *entry, budget int64) (v1.Hash, int64, error) {
	mt, err := arc.compression(e)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	var r io.Reader = io.NewSectionReader(arc.ra, e.offset, e.size)
	switch mt {
	case types.DockerLayer:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return v1.Hash{}, 0, faultf(arc.path, FaultMalformed, err, "decompressing %s", quote(e.name))
		}
		defer zr.Close()
		r = zr
	case types.OCILayerZStd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return v1.Hash{}, 0, faultf(arc.path, FaultMalformed, err, "decompressing %s", quote(e.name))
		}
		defer zr.Close()
		r = zr
	default:
		if e.size > budget {
			return v1.Hash{}, 0, errExpansion
		}
		return e.sum, e.size, nil
	}
	h := sha256.New()
	// One byte past the budget tells a layer that fills it from one that
	// exceeds it.
	n, err := io.Copy(h, io.LimitReader(&ctxReader{ctx: ctx, r: r}, min(budget, noLimit-1)+1))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return v1.Hash{}, 0, fmt.Errorf("reading artifact %s: %w", arc.path, ctxErr)
		}
		return v1.Hash{}, 0, faultf(arc.path, FaultMalformed, err, "decompressing %s", quote(e.name))
	}
	if n > budget {
		return v1.Hash{}, 0, errExpansion
	}
	return hashOf(h), n, nil
}
