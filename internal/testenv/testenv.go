// Package testenv gives tests what they need of the machine: a rule for
// what is missing (fail in CI, skip elsewhere), and directories short
// enough for Unix socket paths. Package dockertest adds the Docker engine.
package testenv

import (
	"os"
	"testing"
)

// Need ends a test that cannot run because what (e.g. "Docker") is not
// available, as err says: it fails the test when CI=true, where every test
// must run, and skips it otherwise. fix says how to provide it.
func Need(tb testing.TB, what, fix string, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required when CI=true: %v", what, err)
		return
	}
	tb.Skipf("%s is not available (%s): %v", what, fix, err)
}

// ShortTempDir returns a new directory, removed when the test ends, whose
// paths fit in a Unix socket address (t.TempDir's, named after the test,
// often do not).
func ShortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "oa")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
