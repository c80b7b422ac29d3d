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
	"strings"
	"sync"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/runtime"
)

// Store keeps uploaded artifacts in a directory, each under the sha256 of
// its bytes (its upload digest), next to a small JSON file describing it.
// Only verified files enter it, and it survives restarts. It is safe for
// concurrent use.
type Store struct {
	dir string // holds sha256/<hex>.ociapp and sha256/<hex>.json
	log *slog.Logger

	mu         sync.RWMutex
	byDigest   map[string]api.Artifact
	byArtifact map[string]string // artifact (manifest) digest -> upload digest
}

const (
	artifactExt = ".ociapp"
	metaExt     = ".json"
	tempPattern = "upload-*.tmp"
)

// OpenStore opens (creating it if needed) the store in dir. It removes what
// interrupted uploads left and forgets files that lost their description.
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = discardLogger()
	}
	blobs := filepath.Join(dir, "sha256")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return nil, fmt.Errorf("creating artifact store: %w", err)
	}
	s := &Store{dir: blobs, log: log, byDigest: map[string]api.Artifact{}, byArtifact: map[string]string{}}
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
			if err != nil || a.Digest != "sha256:"+hexd {
				// The description is written first, so a file without
				// one was never fully stored.
				log.Warn("removing an artifact without a valid description", "file", path, "err", err)
				_ = os.Remove(path)
				continue
			}
			s.byDigest[a.Digest] = a
			s.byArtifact[a.ArtifactDigest] = a.Digest
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

// Lookup finds an artifact by its upload digest or by its artifact digest
// and returns its description and file.
func (s *Store) Lookup(digest string) (api.Artifact, string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.byDigest[digest]
	if !ok {
		var d string
		if d, ok = s.byArtifact[digest]; ok {
			a = s.byDigest[d]
		}
	}
	if !ok {
		return api.Artifact{}, "", false
	}
	return a, s.path(a.Digest), true
}

// List returns every stored artifact, in no particular order.
func (s *Store) List() []api.Artifact {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]api.Artifact, 0, len(s.byDigest))
	for _, a := range s.byDigest {
		out = append(out, a)
	}
	return out
}

// Put stores the artifact read from body under digest, its upload digest.
// It writes a temporary file, checks that its bytes hash to digest and
// that artifact.Open verifies it, then moves it into place. A failed check
// is a *runtime.ArtifactError wrapping an *artifact.Error; an error reading
// body is returned wrapped.
func (s *Store) Put(ctx context.Context, digest string, body io.Reader) (api.Artifact, error) {
	if !api.ValidDigest(digest) {
		return api.Artifact{}, fmt.Errorf("invalid digest %q", digest)
	}
	tmp, err := os.CreateTemp(s.dir, tempPattern)
	if err != nil {
		return api.Artifact{}, fmt.Errorf("creating upload file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return api.Artifact{}, fmt.Errorf("receiving artifact: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return api.Artifact{}, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return api.Artifact{}, &runtime.ArtifactError{Path: digest, Err: &artifact.Error{
			Path: digest, Fault: artifact.FaultDigestMismatch,
			Detail: fmt.Sprintf("the %d uploaded bytes hash to %s", size, got),
		}}
	}
	art, err := artifact.Open(ctx, tmp.Name())
	if err != nil {
		var ae *artifact.Error
		if errors.As(err, &ae) {
			// Name the upload, not the temporary file.
			ae.Path = digest
		}
		return api.Artifact{}, &runtime.ArtifactError{Path: digest, Err: err}
	}
	a := api.Artifact{
		Digest: digest, ArtifactDigest: art.Digest.String(),
		Name: art.Metadata.Name, Version: art.Metadata.Version, Size: size,
	}
	if err := s.commit(tmp.Name(), a); err != nil {
		return api.Artifact{}, err
	}
	s.log.Info("artifact stored", "digest", digest, "artifact", a.Name, "version", a.Version, "artifact_digest", a.ArtifactDigest, "bytes", size)
	return a, nil
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
	if _, ok := s.byDigest[a.Digest]; ok {
		// A concurrent upload of the same bytes won; its file is identical
		// and may already be in use, so it stays.
		return nil
	}
	if err := os.Rename(tmpPath, s.path(a.Digest)); err != nil {
		return fmt.Errorf("storing artifact: %w", err)
	}
	s.byDigest[a.Digest] = a
	s.byArtifact[a.ArtifactDigest] = a.Digest
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
