package runtime

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fileKey identifies one version of a file without reading it: a rebuilt
// artifact gets a new inode, size or modification time, while a warm
// Execute costs one stat instead of hashing the file again.
type fileKey struct {
	dev, ino  uint64
	size      int64
	mtimeNano int64
}

// maxResolved bounds the resolution cache; it is cleared when full, which
// only costs a re-verification of the artifacts still in use.
const maxResolved = 1024

// recheckAfter is how long a path's resolution is trusted without a stat:
// a file replaced at the same path is noticed at most this late, and under
// load the runtime does not pay a system call per request.
const recheckAfter = 100 * time.Millisecond

// resolver maps artifact paths to their verified identity.
type resolver struct {
	open openFunc

	// paths caches, per path as given, the identity found at the last stat.
	paths     sync.Map // string -> *pathEntry
	pathCount atomic.Int64

	mu    sync.RWMutex
	cache map[fileKey]artifactInfo
	// inflight coalesces concurrent first resolutions of one file.
	inflight map[fileKey]*resolveCall
}

type pathEntry struct {
	info      artifactInfo
	checkedAt atomic.Int64 // UnixNano of the stat that confirmed info
}

type resolveCall struct {
	done chan struct{}
	info artifactInfo
	err  error
}

func newResolver(open openFunc) *resolver {
	return &resolver{open: open, cache: make(map[fileKey]artifactInfo), inflight: make(map[fileKey]*resolveCall)}
}

// resolve returns the identity of the artifact at path. Errors are
// *ArtifactError.
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
	pe := &pathEntry{info: info}
	pe.checkedAt.Store(now)
	if _, loaded := r.paths.Swap(path, pe); !loaded && r.pathCount.Add(1) > maxResolved {
		r.paths.Clear()
		r.pathCount.Store(0)
	}
	return info, nil
}

// resolveFile stats path and verifies the file unless this version of it
// was verified before.
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
	key := fileKey{size: fi.Size(), mtimeNano: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		key.dev, key.ino = uint64(st.Dev), st.Ino
	}

	r.mu.RLock()
	info, ok := r.cache[key]
	r.mu.RUnlock()
	if ok {
		return info, nil
	}

	r.mu.Lock()
	if info, ok := r.cache[key]; ok {
		r.mu.Unlock()
		return info, nil
	}
	call, ok := r.inflight[key]
	if !ok {
		call = &resolveCall{done: make(chan struct{})}
		r.inflight[key] = call
	}
	r.mu.Unlock()
	if ok {
		select {
		case <-call.done:
			if ctx.Err() == nil && (errors.Is(call.err, context.Canceled) || errors.Is(call.err, context.DeadlineExceeded)) {
				// The caller that opened the file gave up; this one has
				// not, so it opens the file itself.
				return r.resolveFile(ctx, path)
			}
			return call.info, call.err
		case <-ctx.Done():
			return artifactInfo{}, ctx.Err()
		}
	}

	call.info, call.err = r.open(ctx, path)
	if call.err != nil {
		var ae *ArtifactError
		if !errors.As(call.err, &ae) {
			call.err = &ArtifactError{Path: path, Err: call.err}
		}
	}
	r.mu.Lock()
	delete(r.inflight, key)
	if call.err == nil {
		if len(r.cache) >= maxResolved {
			clear(r.cache)
		}
		r.cache[key] = call.info
	}
	r.mu.Unlock()
	close(call.done)
	return call.info, call.err
}
