package runtime

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/internal/fileid"
	"github.com/ociapp/ociapp/internal/flight"
)

// maxResolved bounds the resolution cache; it is cleared when full, which
// only costs a re-verification of the artifacts still in use.
const maxResolved = 1024

// recheckAfter is how long a path's resolution is trusted without a stat:
// a file replaced at the same path is noticed at most this late, and under
// load the runtime does not pay a system call per request.
const recheckAfter = 100 * time.Millisecond

// resolver maps artifact paths to their verified identity.
type resolver struct {
	open     openFunc
	verified verifiedFiles

	// paths caches, per path as given, the identity found at the last stat.
	paths     sync.Map // string -> *pathEntry
	pathCount atomic.Int64

	mu    sync.RWMutex
	cache map[fileid.Key]artifactInfo
	// opens coalesces concurrent first resolutions of one file version.
	opens flight.Group[fileid.Key, artifactInfo]
}

type pathEntry struct {
	info      artifactInfo
	checkedAt atomic.Int64 // UnixNano of the stat that confirmed info
}

func newResolver(open openFunc, verified verifiedFiles) *resolver {
	return &resolver{open: open, verified: verified, cache: make(map[fileid.Key]artifactInfo)}
}

// resolve returns the identity of the artifact at path, with path as its
// Path (the file may have been verified under another name, a hard link).
// Errors are *ArtifactError.
func (r *resolver) resolve(ctx context.Context, path string) (artifactInfo, error) {
	now := time.Now().UnixNano()
	if e, ok := r.paths.Load(path); ok {
		pe := e.(*pathEntry)
		if now-pe.checkedAt.Load() < int64(recheckAfter) {
			return pe.info, nil
		}
	}
	info, err := r.resolveFile(ctx, path)
	if err != nil {
		if _, loaded := r.paths.LoadAndDelete(path); loaded {
			r.pathCount.Add(-1)
		}
		return info, err
	}
	info.Path = path
	pe := &pathEntry{info: info}
	pe.checkedAt.Store(now)
	if _, loaded := r.paths.Swap(path, pe); !loaded && r.pathCount.Add(1) > maxResolved {
		r.paths.Clear()
		r.pathCount.Store(0)
	}
	return info, nil
}

// resolveFile stats path and verifies the file unless this version of it
// was verified before: by this runtime (the cache), or by one that shared
// its state directory (verifiedFiles), in which case only what the file's
// record does not vouch for is checked again. The artifact's resolveUser
// answers from the state directory too (verifiedFiles.userResolver).
func (r *resolver) resolveFile(ctx context.Context, path string) (artifactInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return artifactInfo{}, &ArtifactError{Path: path, Err: errors.New("no such file; check the path, or build the artifact with ociapp-build")}
		}
		return artifactInfo{}, &ArtifactError{Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return artifactInfo{}, &ArtifactError{Path: path, Err: errors.New("not a regular file; an artifact is a .ociapp file")}
	}
	key := fileid.Of(fi)
	if info, ok := r.cached(key); ok {
		return info, nil
	}
	return r.opens.Do(ctx, key, func() (artifactInfo, error) {
		// A call for this version may have ended since the check above.
		if info, ok := r.cached(key); ok {
			return info, nil
		}
		info, err := r.openVerified(ctx, path, key)
		if err != nil {
			var ae *ArtifactError
			if !errors.As(err, &ae) {
				err = &ArtifactError{Path: path, Err: err}
			}
			return artifactInfo{}, err
		}
		// The user the image resolves to is remembered beside the file.
		info.resolveUser = r.verified.userResolver(info.ConfigDigest, info.User, info.resolveUser)
		r.mu.Lock()
		if len(r.cache) >= maxResolved {
			clear(r.cache)
		}
		r.cache[key] = info
		r.mu.Unlock()
		return info, nil
	})
}

// openVerified opens the file, trusting a record of its verification when
// the manifest it reads is the one recorded; otherwise, or without a
// record, it verifies the whole file and records that it did.
func (r *resolver) openVerified(ctx context.Context, path string, key fileid.Key) (artifactInfo, error) {
	if file, manifest, ok := r.verified.lookup(key); ok {
		info, err := r.open(ctx, path, file)
		if err == nil && info.Digest == manifest {
			return info, nil
		}
		if ctx.Err() != nil {
			return artifactInfo{}, err
		}
		// The file is not what was recorded under its identity (or the
		// record is damaged): verify it in full.
		r.verified.forget(key)
	}
	info, err := r.open(ctx, path, "")
	if err == nil && info.fileDigest != "" {
		_ = r.verified.remember(key, info.fileDigest, info.Digest)
	}
	return info, err
}

func (r *resolver) cached(key fileid.Key) (artifactInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	info, ok := r.cache[key]
	return info, ok
}
