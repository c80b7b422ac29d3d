package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/ociapp/ociapp/internal/fileid"
	"github.com/ociapp/ociapp/runtime"
)

// maxDigests bounds the cache; it is cleared when full, which only costs
// hashing the files still in use again.
const maxDigests = 1024

// digests maps file versions to their upload digest (sha256 of the bytes),
// so that a warm execute costs a stat, not a hash.
type digests struct {
	mu    sync.Mutex
	cache map[fileid.Key]string
}

func newDigests() *digests { return &digests{cache: make(map[fileid.Key]string)} }

// digest returns the upload digest of the file at path. Errors are
// *runtime.ArtifactError, as the in-process runtime gives for a file it
// cannot use.
func (d *digests) digest(ctx context.Context, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", &runtime.ArtifactError{Path: path, Err: errors.New("no such file; check the path, or build the artifact with ociapp-build")}
		}
		return "", &runtime.ArtifactError{Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return "", &runtime.ArtifactError{Path: path, Err: errors.New("not a regular file; an artifact is a .ociapp file")}
	}
	key := fileid.Of(fi)
	d.mu.Lock()
	sum, ok := d.cache[key]
	d.mu.Unlock()
	if ok {
		return sum, nil
	}
	sum, err = hashFile(ctx, path)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	if len(d.cache) >= maxDigests {
		clear(d.cache)
	}
	d.cache[key] = sum
	d.mu.Unlock()
	return sum, nil
}

func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &runtime.ArtifactError{Path: path, Err: err}
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("hashing %s: %w", path, ctx.Err())
		}
		return "", &runtime.ArtifactError{Path: path, Err: err}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
