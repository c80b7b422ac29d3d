package runtime

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/protocol"
)

// Python applications, packaged as the original builder packaged them (an
// OCI layout with zstd layers, running as root under tini), run unchanged.

func TestDockerPythonEcho(t *testing.T) {
	rt, eng := newDockerRuntime(t)
	path := pythonArtifact(t, eng, "echo-py")
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Format != artifact.FormatOCILayout || a.DockerLoadable {
		t.Fatalf("fixture is %v (docker-loadable %v), want an OCI layout only, like buildx output", a.Format, a.DockerLoadable)
	}
	start := time.Now()
	resp, err := rt.Execute(t.Context(), path, map[string]any{"value": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first response after %v", time.Since(start))
	if resp["value"] != "hi" {
		t.Fatalf("response %v", resp)
	}
	_, err = rt.Execute(t.Context(), path, map[string]any{"value": 5})
	var ae *AppError
	if !errors.As(err, &ae) || ae.Type != protocol.ErrorTypeValidation || ae.Message != protocol.ValidationMessage {
		t.Fatalf("got %v, want a ValidationError", err)
	}
	if rt.Stats().ColdStarts != 1 {
		t.Fatal("the app error cost the container")
	}
}

func TestDockerPythonImportError(t *testing.T) {
	rt, eng := newDockerRuntime(t)
	path := pythonArtifact(t, eng, "broken-py")
	if _, err := rt.pool(t.Context(), path); err != nil { // load the image first: time the start only
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
