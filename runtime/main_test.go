package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testapps"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
)

// testArtifacts builds each test application once per test binary, on
// first use. TestMain sets it; nothing else changes it.
var testArtifacts *testapps.Set

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	dir, err := os.MkdirTemp("", "ociapp-runtime-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testArtifacts = testapps.NewSet(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testArtifact returns the named test application's artifact.
func testArtifact(tb testing.TB, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	path, err := testArtifacts.Path(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

// newDockerRuntime is a runtime on the local Docker daemon with its own
// state directory, closed when the test ends.
func newDockerRuntime(tb testing.TB, opts ...Option) (*Runtime, *docker.Engine) {
	tb.Helper()
	eng := dockertest.Engine(tb)
	return newRuntime(tb, eng, opts...), eng
}

// newRuntime is a runtime on eng with its own state directory, closed when
// the test ends.
func newRuntime(tb testing.TB, eng engine.Engine, opts ...Option) *Runtime {
	tb.Helper()
	logger := slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]Option{WithEngine(eng), WithStateDir(testenv.ShortTempDir(tb)), WithLogger(logger)}, opts...)
	rt, err := New(tb.Context(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			tb.Error(err)
		}
	})
	return rt
}

// pythonArtifact returns the named Python test application's artifact,
// built in the original builder's format. It needs the local base image.
func pythonArtifact(tb testing.TB, eng *docker.Engine, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if ok, err := eng.ImageExists(ctx, testapps.PythonBaseImage); err != nil || !ok {
		if err == nil {
			err = errors.New("no such image")
		}
		testenv.Need(tb, "the base image "+testapps.PythonBaseImage, "run scripts/ensure-base-images.sh", err)
	}
	path, err := testArtifacts.PythonPath(ctx, eng, name)
	if err != nil {
		tb.Fatal(err)
	}
	return path
}
