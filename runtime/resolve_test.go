package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestResolverCachesByFileVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var opens atomic.Int32
		r := newResolver(func(_ context.Context, path string) (artifactInfo, error) {
			opens.Add(1)
			b, err := os.ReadFile(path)
			if err != nil {
				return artifactInfo{}, err
			}
			return artifactInfo{Artifact: Artifact{Digest: "sha256:" + string(b)}}, nil
		})
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
	r := newResolver(func(_ context.Context, path string) (artifactInfo, error) { return artifactInfo{}, io.ErrUnexpectedEOF })
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
		r := newResolver(func(ctx context.Context, path string) (artifactInfo, error) {
			if opens.Add(1) == 1 {
				<-ctx.Done() // the first open lasts until its caller gives up
				return artifactInfo{}, ctx.Err()
			}
			return artifactInfo{Artifact: Artifact{Digest: "sha256:one"}}, nil
		})
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
