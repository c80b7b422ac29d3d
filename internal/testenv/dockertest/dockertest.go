// Package dockertest gives tests an engine for the local Docker daemon.
package dockertest

import (
	"context"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testenv"
)

// Engine returns an engine for the local Docker daemon, closed when the
// test ends; without a daemon the test fails when CI=true and is skipped
// otherwise (testenv.Need).
func Engine(tb testing.TB) *docker.Engine {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng, err := docker.New(ctx)
	if err != nil {
		testenv.Need(tb, "Docker", "start it with scripts/ensure-docker.sh", err)
	}
	tb.Cleanup(func() { _ = eng.Close() })
	return eng
}
