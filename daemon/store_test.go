package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ociapp/ociapp/artifact"
)

func testArtifactBytes(t *testing.T) ([]byte, string) {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.ociapp")
	if err := artifact.WriteFile(context.Background(), path, img, artifact.Metadata{Name: "a", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// TestStoreCollectsUnused checks the upload TTL: an artifact no request
// used for longer is removed by the store's collection loop; one in use,
// or used recently, stays.
func TestStoreCollectsUnused(t *testing.T) {
	unused, unusedDigest := testArtifactBytes(t)
	inUse, inUseDigest := testArtifactBytes(t)
	recent, recentDigest := testArtifactBytes(t)
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		s, err := OpenStore(dir, nil, WithUploadTTL(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for d, b := range map[string][]byte{unusedDigest: unused, inUseDigest: inUse, recentDigest: recent} {
			if _, _, err := s.Put(t.Context(), d, int64(len(b)), bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
		}
		_, _, release, _ := s.Acquire(inUseDigest)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { s.collectLoop(ctx); close(done) }()
		time.Sleep(50 * time.Minute)
		_, _, releaseRecent, _ := s.Acquire(recentDigest)
		releaseRecent()
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		for d, want := range map[string]bool{unusedDigest: false, inUseDigest: true, recentDigest: true} {
			if _, path, ok := s.Lookup(d); ok != want {
				t.Errorf("%s stored: %v, want %v", d, ok, want)
			} else if _, err := os.Stat(s.path(d)); (err == nil) != want {
				t.Errorf("%s file %s: %v", d, path, err)
			}
		}
		release()
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if len(s.List()) != 0 {
			t.Errorf("after everything went unused: %v", s.List())
		}
		if used, reserved := s.Usage(); used != 0 || reserved != 0 {
			t.Errorf("usage %d + %d of an empty store", used, reserved)
		}
		cancel()
		<-done
	})
}
