package runtime

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Python applications, packaged as the original builder packaged them (an
// OCI layout with zstd layers, running as root under tini), run unchanged.

func TestDockerPythonImportError(t *testing.T) {
	rt, eng := newDockerRuntime(t)
	path := pythonArtifact(t, eng, "broken-py")
	if _, err := rt.Prepare(t.Context(), path); err != nil { // load the image first: time the start only
		t.Fatal(err)
	}
	start := time.Now()
	_, err := rt.Execute(t.Context(), path, map[string]any{"value": "hi"})
	var se *StartupError
	if !errors.As(err, &se) || !se.Exited || se.ExitCode == 0 || !strings.Contains(se.Logs, "echo_app.missing") {
		t.Fatalf("got %v, want *StartupError with the import error in the logs", err)
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v: a startup failure must not wait for the startup timeout", d)
	}
}
