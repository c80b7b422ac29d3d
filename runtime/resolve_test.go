package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/internal/fileid"
)

func TestResolverCachesByFileVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var opens atomic.Int32
		r := newResolver(func(_ context.Context, path string, _ string) (artifactInfo, error) {
			opens.Add(1)
			b, err := os.ReadFile(path)
			if err != nil {
				return artifactInfo{}, err
			}
			return artifactInfo{Artifact: Artifact{Digest: "sha256:" + string(b)}}, nil
		}, verifiedFiles{dir: filepath.Join(dir, "verified")})
		path := filepath.Join(dir, "a.ociapp")
		write := func(content string) {
			// As builders do: a new file renamed over the old one.
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
		resolve := func() string {
			info, err := r.resolve(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			return info.Digest
		}
		write("one")
		// Concurrent first resolutions verify the file once.
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { resolve() })
		}
		wg.Wait()
		if n := opens.Load(); n != 1 {
			t.Fatalf("verified %d times, want 1", n)
		}
		time.Sleep(time.Second)
		if d := resolve(); d != "sha256:one" || opens.Load() != 1 {
			t.Fatalf("unchanged file: %s after %d verifications", d, opens.Load())
		}
		write("two")
		if d := resolve(); d != "sha256:one" {
			t.Fatalf("within the recheck window got %s", d)
		}
		time.Sleep(recheckAfter)
		if d := resolve(); d != "sha256:two" || opens.Load() != 2 {
			t.Fatalf("rebuilt file: %s after %d verifications, want the new identity", d, opens.Load())
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(recheckAfter)
		var ae *ArtifactError
		if _, err := r.resolve(t.Context(), path); !errors.As(err, &ae) {
			t.Fatalf("removed file: %v", err)
		}
	})
}

func TestResolverErrors(t *testing.T) {
	dir := t.TempDir()
	r := newResolver(func(_ context.Context, path string, _ string) (artifactInfo, error) {
		return artifactInfo{}, io.ErrUnexpectedEOF
	}, verifiedFiles{dir: filepath.Join(dir, "verified")})
	path := filepath.Join(dir, "a.ociapp")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, dir, filepath.Join(dir, "missing")} {
		_, err := r.resolve(context.Background(), p)
		var ae *ArtifactError
		if !errors.As(err, &ae) || ae.Path != p {
			t.Errorf("resolve(%s) = %v, want *ArtifactError", p, err)
		}
	}
}

// A caller waiting on another's open of the same file is not failed by that
// caller giving up: it opens the file itself.
func TestResolverWaiterOutlivesCanceledOpener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "a.ociapp")
		if err := os.WriteFile(path, []byte("one"), 0o644); err != nil {
			t.Fatal(err)
		}
		var opens atomic.Int32
		r := newResolver(func(ctx context.Context, path string, _ string) (artifactInfo, error) {
			if opens.Add(1) == 1 {
				<-ctx.Done() // the first open lasts until its caller gives up
				return artifactInfo{}, ctx.Err()
			}
			return artifactInfo{Artifact: Artifact{Digest: "sha256:one"}}, nil
		}, verifiedFiles{dir: filepath.Join(filepath.Dir(path), "verified")})
		firstCtx, cancelFirst := context.WithCancel(t.Context())
		firstErr := make(chan error, 1)
		go func() {
			_, err := r.resolve(firstCtx, path)
			firstErr <- err
		}()
		synctest.Wait()
		second := make(chan error, 1)
		go func() {
			info, err := r.resolve(t.Context(), path)
			if err == nil && info.Digest != "sha256:one" {
				err = errors.New("wrong digest " + info.Digest)
			}
			second <- err
		}()
		synctest.Wait()
		cancelFirst()
		if err := <-firstErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("the canceled caller got %v, want context.Canceled", err)
		}
		if err := <-second; err != nil {
			t.Fatalf("the waiting caller: %v", err)
		}
		if n := opens.Load(); n != 2 {
			t.Fatalf("opened %d times, want 2", n)
		}
	})
}

// A file verified by one runtime is reopened by the next on the same state
// directory with the digest recorded; a record the file no longer matches
// (or a damaged one) is dropped and the file verified in full.
func TestResolverRemembersVerifiedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.ociapp")
	if err := os.WriteFile(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	verified := verifiedFiles{dir: filepath.Join(dir, "verified")}
	var given []string
	manifest := "sha256:one"
	open := func(_ context.Context, _ string, known string) (artifactInfo, error) {
		given = append(given, known)
		return artifactInfo{Artifact: Artifact{Digest: manifest}, fileDigest: "sha256:file-one"}, nil
	}
	resolveOnce := func() {
		t.Helper()
		if _, err := newResolver(open, verified).resolve(t.Context(), path); err != nil {
			t.Fatal(err)
		}
	}
	resolveOnce()
	resolveOnce()
	if !slices.Equal(given, []string{"", "sha256:file-one"}) {
		t.Fatalf("opened with %q, want a full verification, then the recorded digest", given)
	}

	// The record no longer describes what the file holds.
	given, manifest = nil, "sha256:two"
	resolveOnce()
	if !slices.Equal(given, []string{"sha256:file-one", ""}) {
		t.Fatalf("opened with %q, want the record tried, then a full verification", given)
	}
	if file, m, ok := verified.lookup(mustKey(t, path)); !ok || file != "sha256:file-one" || m != "sha256:two" {
		t.Fatalf("record %q %q %v after the full verification", file, m, ok)
	}

	// A damaged record.
	if err := os.WriteFile(verified.path(mustKey(t, path)), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	given = nil
	resolveOnce()
	if !slices.Equal(given, []string{""}) {
		t.Fatalf("opened with %q, want a full verification", given)
	}
}

func mustKey(t *testing.T, path string) fileid.Key {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileid.Of(fi)
}

// The real opener reopens a file with its recorded digest to the same
// artifact.
func TestOpenArtifactFileVerified(t *testing.T) {
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.ociapp")
	if err := artifact.WriteFile(t.Context(), path, img, artifact.Metadata{Name: "a", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	first, err := openArtifactFile(t.Context(), path, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := openArtifactFile(t.Context(), path, first.fileDigest)
	if err != nil {
		t.Fatal(err)
	}
	if again.Artifact != first.Artifact || again.fileDigest != first.fileDigest || !strings.HasPrefix(first.fileDigest, "sha256:") {
		t.Fatalf("reopened as %+v %s, first %+v %s", again.Artifact, again.fileDigest, first.Artifact, first.fileDigest)
	}
	if err := again.archive(t.Context(), io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := openArtifactFile(t.Context(), path, "not a digest"); err == nil {
		t.Fatal("a damaged record was used")
	}
}
