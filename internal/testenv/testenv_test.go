package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestShortTempDir(t *testing.T) {
	var dir string
	t.Run("dir", func(t *testing.T) {
		dir = ShortTempDir(t)
		if len(filepath.Join(dir, "0123456789abcdef", "app.sock")) > 107 {
			t.Errorf("%s is too long for a socket path", dir)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("%v", err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there after the test: %v", dir, err)
	}
}

// recorder is a testing.TB that records how a test ended.
type recorder struct {
	testing.TB
	failed, skipped bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }

func TestNeed(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		Need(r, "Docker", "start it", errors.New("connection refused"))
		if r.failed != (ci == "true") || r.skipped != (ci != "true") {
			t.Errorf("CI=%q: failed %v, skipped %v", ci, r.failed, r.skipped)
		}
	}
}
