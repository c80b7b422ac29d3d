package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/runtime"
)

// Defaults of the store's limits.
const (
	// DefaultStoreQuota bounds the bytes of stored artifacts and uploads in
	// progress together.
	DefaultStoreQuota int64 = 10 << 30
	// DefaultUploadTTL is how long an artifact no request used stays stored.
	DefaultUploadTTL = 7 * 24 * time.Hour
)

// touchEvery limits how often a use of an artifact is written to its
// file's modification time, which keeps the last use across restarts.
const touchEvery = time.Minute

// Store keeps uploaded artifacts in a directory, each under the sha256 of
// its bytes (its upload digest), next to a small JSON file describing it.
// Only verified files enter it, and it survives restarts. Its bytes, with
// those of uploads in progress, stay within a quota: an upload that would
// exceed it first removes the least recently used artifacts no request is
// using, and artifacts unused for longer than the upload TTL are removed
// by Collect. It is safe for concurrent use.
type Store struct {
	dir       string // holds sha256/<hex>.ociapp and sha256/<hex>.json
	log       *slog.Logger
	quota     int64
	uploadTTL time.Duration
	// verify reads an uploaded file as artifact.Open does; tests replace it.
	verify func(ctx context.Context, path string) (*artifact.Artifact, error)
	// verifying holds a token per verification in progress: they are
	// CPU-bound, so there are at most as many as CPUs.
	verifying chan struct{}

	mu         sync.Mutex
	byDigest   map[string]*stored
	byArtifact map[string]string        // artifact (manifest) digest -> upload digest
	used       int64                    // bytes of stored artifacts
	reserved   int64                    // bytes reserved by uploads in progress
	uploads    map[string]chan struct{} // closed when the upload in progress of a digest ends
}

type stored struct {
	a        api.Artifact
	lastUsed time.Time
	touched  time.Time // when lastUsed was last written to the file
	refs     int       // requests using the file now
}

// StoreOption configures OpenStore.
type StoreOption func(*Store) error

// WithStoreQuota bounds the bytes the store holds, uploads in progress
// included (default DefaultStoreQuota).
func WithStoreQuota(n int64) StoreOption {
	return func(s *Store) error {
		if n <= 0 {
			return fmt.Errorf("store quota must be positive, got %d", n)
		}
		s.quota = n
		return nil
	}
}

// WithUploadTTL sets how long an artifact no request used is kept
// (default DefaultUploadTTL).
func WithUploadTTL(d time.Duration) StoreOption {
	return func(s *Store) error {
		if d <= 0 {
			return fmt.Errorf("upload TTL must be positive, got %v", d)
		}
		s.uploadTTL = d
		return nil
	}
}

// StoreFullError is returned by Put when an upload does not fit in the
// quota even after removing every artifact not in use.
type StoreFullError struct {
	Quota int64 // the store's quota in bytes
	Need  int64 // bytes the upload needed beyond what is free
}

func (e *StoreFullError) Error() string {
	return fmt.Sprintf("the artifact store is full: its quota is %d bytes and the upload needs %d more than artifacts in use leave free", e.Quota, e.Need)
}

const (
	artifactExt = ".ociapp"
	metaExt     = ".json"
	tempPattern = "upload-*.tmp"
)

// OpenStore opens (creating it if needed) the store in dir. It removes what
// interrupted uploads left and forgets files that lost their description.
func OpenStore(dir string, log *slog.Logger, opts ...StoreOption) (*Store, error) {
	if log == nil {
		log = discardLogger()
	}
	blobs := filepath.Join(dir, "sha256")
	s := &Store{
		dir: blobs, log: log, quota: DefaultStoreQuota, uploadTTL: DefaultUploadTTL,
		verify: openArtifact, verifying: make(chan struct{}, goruntime.NumCPU()),
		byDigest: map[string]*stored{}, byArtifact: map[string]string{}, uploads: map[string]chan struct{}{},
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, fmt.Errorf("configuring artifact store: %w", err)
		}
	}
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return nil, fmt.Errorf("creating artifact store: %w", err)
	}
	entries, err := os.ReadDir(blobs)
	if err != nil {
		return nil, fmt.Errorf("reading artifact store: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(blobs, name)
		switch {
		case strings.HasSuffix(name, ".tmp"):
			_ = os.Remove(path)
		case strings.HasSuffix(name, artifactExt):
			hexd := strings.TrimSuffix(name, artifactExt)
			a, err := readMeta(filepath.Join(blobs, hexd+metaExt))
			fi, statErr := e.Info()
			if err == nil && a.Digest != "sha256:"+hexd {
				err = errors.New("the description names another digest")
			}
			if err == nil {
				err = statErr
			}
			if err != nil {
				// The description is written first, so a file without
				// one was never fully stored.
				log.Warn("removing an artifact without a valid description", "file", path, "err", err)
				_ = os.Remove(path)
				continue
			}
			// The file's modification time is its last use.
			s.byDigest[a.Digest] = &stored{a: a, lastUsed: fi.ModTime(), touched: fi.ModTime()}
			s.byArtifact[a.ArtifactDigest] = a.Digest
			s.used += a.Size
		}
	}
	// Descriptions whose artifact is missing.
	for _, e := range entries {
		name := e.Name()
		if hexd, ok := strings.CutSuffix(name, metaExt); ok {
			if _, known := s.byDigest["sha256:"+hexd]; !known {
				_ = os.Remove(filepath.Join(blobs, name))
			}
		}
	}
	return s, nil
}

func readMeta(path string) (api.Artifact, error) {
	var a api.Artifact
	b, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, err
	}
	return a, nil
}

func (s *Store) path(digest string) string {
	return filepath.Join(s.dir, strings.TrimPrefix(digest, "sha256:")+artifactExt)
}

func (s *Store) findLocked(digest string) (*stored, bool) {
	e, ok := s.byDigest[digest]
	if !ok {
		var d string
		if d, ok = s.byArtifact[digest]; ok {
			e = s.byDigest[d]
		}
	}
	return e, ok
}

// Lookup finds an artifact by its upload digest or by its artifact digest
// and returns its description and file.
func (s *Store) Lookup(digest string) (api.Artifact, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.findLocked(digest)
	if !ok {
		return api.Artifact{}, "", false
	}
	return e.a, s.path(e.a.Digest), true
}

// Acquire is Lookup for a request that uses the file: the artifact counts
// as used now, and it is not removed until release is called.
func (s *Store) Acquire(digest string) (a api.Artifact, path string, release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.findLocked(digest)
	if !ok {
		return api.Artifact{}, "", nil, false
	}
	e.refs++
	now := time.Now()
	e.lastUsed = now
	path = s.path(e.a.Digest)
	if now.Sub(e.touched) >= touchEvery {
		e.touched = now
		_ = os.Chtimes(path, time.Time{}, now)
	}
	var once sync.Once
	return e.a, path, func() {
		once.Do(func() {
			s.mu.Lock()
			e.refs--
			s.mu.Unlock()
		})
	}, true
}

// List returns every stored artifact, in no particular order.
func (s *Store) List() []api.Artifact {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.Artifact, 0, len(s.byDigest))
	for _, e := range s.byDigest {
		out = append(out, e.a)
	}
	return out
}

// Usage returns the bytes of stored artifacts and those reserved by
// uploads in progress.
func (s *Store) Usage() (stored, reserved int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.reserved
}

// Collect removes the artifacts that no request has used since
// now - the upload TTL and that none is using, and returns how many.
func (s *Store) Collect(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.byDigest {
		if e.refs == 0 && now.Sub(e.lastUsed) > s.uploadTTL {
			s.removeLocked(e, "unused for longer than the upload TTL")
			n++
		}
	}
	return n
}

// collectLoop runs Collect until ctx ends, often enough that an artifact
// outlives its TTL by at most a quarter of it (an hour at most).
func (s *Store) collectLoop(ctx context.Context) {
	t := time.NewTicker(min(s.uploadTTL/4, time.Hour))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Collect(now)
		}
	}
}

func (s *Store) removeLocked(e *stored, why string) {
	hexd := strings.TrimPrefix(e.a.Digest, "sha256:")
	// The description goes last: a crash in between leaves a description
	// without a file, which OpenStore removes.
	if err := os.Remove(s.path(e.a.Digest)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing an artifact", "digest", e.a.Digest, "err", err)
		return
	}
	_ = os.Remove(filepath.Join(s.dir, hexd+metaExt))
	delete(s.byDigest, e.a.Digest)
	if s.byArtifact[e.a.ArtifactDigest] == e.a.Digest {
		delete(s.byArtifact, e.a.ArtifactDigest)
		// Another upload may hold the same image.
		for d, other := range s.byDigest {
			if other.a.ArtifactDigest == e.a.ArtifactDigest {
				s.byArtifact[e.a.ArtifactDigest] = d
				break
			}
		}
	}
	s.used -= e.a.Size
	s.log.Info("artifact removed", "digest", e.a.Digest, "artifact", e.a.Name, "bytes", e.a.Size, "reason", why)
}

// reserve takes n bytes of the quota for an upload in progress, removing
// the least recently used artifacts not in use if that is what it takes.
func (s *Store) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	over := s.used + s.reserved + n - s.quota
	if over > 0 {
		var idle []*stored
		for _, e := range s.byDigest {
			if e.refs == 0 {
				idle = append(idle, e)
			}
		}
		slices.SortFunc(idle, func(a, b *stored) int { return a.lastUsed.Compare(b.lastUsed) })
		for _, e := range idle {
			if over <= 0 {
				break
			}
			s.removeLocked(e, "the store is over its quota; least recently used")
			over -= e.a.Size
		}
	}
	if over > 0 {
		return &StoreFullError{Quota: s.quota, Need: over}
	}
	s.reserved += n
	return nil
}

func (s *Store) unreserve(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
}

// quotaWriter reserves quota ahead of what it writes.
type quotaWriter struct {
	s        *Store
	w        io.Writer
	reserved int64
	written  int64
}

// reserveStep is how much an upload of unknown length reserves at a time.
const reserveStep = 1 << 20

func (q *quotaWriter) Write(p []byte) (int, error) {
	if need := q.written + int64(len(p)) - q.reserved; need > 0 {
		step := max(need, reserveStep)
		if err := q.s.reserve(step); err != nil {
			return 0, err
		}
		q.reserved += step
	}
	n, err := q.w.Write(p)
	q.written += int64(n)
	return n, err
}

// Put stores the artifact read from body under digest, its upload digest;
// size is the body's declared length, or -1. It writes a temporary file,
// checks that its bytes hash to digest and that the artifact verifies,
// then moves it into place. created is false when the artifact was there
// already, or a concurrent upload of the same digest stored it while this
// one waited (without reading body). A failed check is a
// *runtime.ArtifactError wrapping an *artifact.Error; an upload beyond the
// quota a *StoreFullError; an error reading body is returned wrapped. The
// temporary file is removed whatever happens.
func (s *Store) Put(ctx context.Context, digest string, size int64, body io.Reader) (a api.Artifact, created bool, err error) {
	if !api.ValidDigest(digest) {
		return api.Artifact{}, false, fmt.Errorf("invalid digest %q", digest)
	}
	for {
		s.mu.Lock()
		if e, ok := s.byDigest[digest]; ok {
			s.mu.Unlock()
			return e.a, false, nil
		}
		done, busy := s.uploads[digest]
		if !busy {
			done = make(chan struct{})
			s.uploads[digest] = done
			s.mu.Unlock()
			defer func() {
				s.mu.Lock()
				delete(s.uploads, digest)
				s.mu.Unlock()
				close(done)
			}()
			break
		}
		s.mu.Unlock()
		select {
		case <-done:
			// Stored: the loop finds it. Failed: this upload tries.
		case <-ctx.Done():
			return api.Artifact{}, false, ctx.Err()
		}
	}
	a, err = s.receive(ctx, digest, size, body)
	return a, err == nil, err
}

func (s *Store) receive(ctx context.Context, digest string, size int64, body io.Reader) (api.Artifact, error) {
	qw := &quotaWriter{s: s}
	if size > 0 {
		if err := s.reserve(size); err != nil {
			return api.Artifact{}, err
		}
		qw.reserved = size
	}
	defer func() { s.unreserve(qw.reserved) }()
	tmp, err := os.CreateTemp(s.dir, tempPattern)
	if err != nil {
		return api.Artifact{}, fmt.Errorf("creating upload file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	qw.w = io.MultiWriter(tmp, h)
	n, err := io.Copy(qw, body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var full *StoreFullError
		if errors.As(err, &full) {
			return api.Artifact{}, err
		}
		return api.Artifact{}, fmt.Errorf("receiving artifact: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return api.Artifact{}, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return api.Artifact{}, &runtime.ArtifactError{Path: digest, Err: &artifact.Error{
			Path: digest, Fault: artifact.FaultDigestMismatch,
			Detail: fmt.Sprintf("the %d uploaded bytes hash to %s", n, got),
		}}
	}
	select {
	case s.verifying <- struct{}{}:
	case <-ctx.Done():
		return api.Artifact{}, fmt.Errorf("waiting to verify the artifact: %w", ctx.Err())
	}
	art, err := s.verify(ctx, tmp.Name())
	<-s.verifying
	if err != nil {
		if ctx.Err() != nil {
			return api.Artifact{}, fmt.Errorf("verifying artifact: %w", ctx.Err())
		}
		var ae *artifact.Error
		if errors.As(err, &ae) {
			// Name the upload, not the temporary file.
			ae.Path = digest
		}
		return api.Artifact{}, &runtime.ArtifactError{Path: digest, Err: err}
	}
	a := api.Artifact{
		Digest: digest, ArtifactDigest: art.Digest.String(),
		Name: art.Metadata.Name, Version: art.Metadata.Version, Size: n,
	}
	if err := s.commit(tmp.Name(), a); err != nil {
		return api.Artifact{}, err
	}
	s.log.Info("artifact stored", "digest", digest, "artifact", a.Name, "version", a.Version, "artifact_digest", a.ArtifactDigest, "bytes", n)
	return a, nil
}

// openArtifact verifies the file at path as artifact.Open does.
func openArtifact(ctx context.Context, path string) (*artifact.Artifact, error) {
	return artifact.Open(ctx, path)
}

// commit writes the description, then renames the verified file into
// place: a crash in between leaves a description without a file, which
// OpenStore removes.
func (s *Store) commit(tmpPath string, a api.Artifact) error {
	meta, err := json.Marshal(a)
	if err != nil {
		return err
	}
	hexd := strings.TrimPrefix(a.Digest, "sha256:")
	metaTmp, err := os.CreateTemp(s.dir, tempPattern)
	if err != nil {
		return fmt.Errorf("storing artifact: %w", err)
	}
	defer os.Remove(metaTmp.Name())
	_, err = metaTmp.Write(meta)
	if cerr := metaTmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(metaTmp.Name(), filepath.Join(s.dir, hexd+metaExt))
	}
	if err != nil {
		return fmt.Errorf("storing artifact: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(tmpPath, s.path(a.Digest)); err != nil {
		return fmt.Errorf("storing artifact: %w", err)
	}
	now := time.Now()
	s.byDigest[a.Digest] = &stored{a: a, lastUsed: now, touched: now}
	s.byArtifact[a.ArtifactDigest] = a.Digest
	s.used += a.Size
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
