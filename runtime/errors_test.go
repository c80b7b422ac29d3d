package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine"
)

// Every error says what happened and what to do, and matches errors.As.
func TestErrorMessages(t *testing.T) {
	tests := []struct {
		err  error
		want []string
	}{
		{&ArtifactError{Path: "x.ociapp", Err: errors.New("no such file")}, []string{"x.ociapp", "no such file"}},
		{&StartupError{Artifact: "echo 1", Reason: "the container exited before its socket was ready", Exited: true, ExitCode: 3, Logs: "line one\nline two\n", RetryIn: time.Second},
			[]string{"echo 1", "exited", "exit code 3", "paused for 1s", "entrypoint", "\n  | line one\n  | line two"}},
		{&StartupError{Artifact: "echo 1", Reason: "its socket did not accept connections within the startup timeout of 10s"}, []string{"startup timeout", "check"}},
		{&RequestTimeoutError{Artifact: "echo 1", Timeout: 30 * time.Second}, []string{"timed out after 30s", "raise the request timeout"}},
		{&WorkerCrashError{Artifact: "hog 1", Reason: "the container exited", Exited: true, ExitCode: 137, OOMKilled: true},
			[]string{"crashed", "exit code 137", "memory limit", "idempotent"}},
		{&WorkerCrashError{Artifact: "hog 1", Reason: "the container exited", Exited: true, ExitCode: 137},
			[]string{"exit code 137, killed by SIGKILL", "memory limit: raise it", "idempotent"}},
		{&StartupError{Artifact: "hog 1", Reason: "the container exited before its socket was ready", Exited: true, ExitCode: 137},
			[]string{"exit code 137, killed by SIGKILL", "memory limit)"}},
		{&OverloadedError{Artifact: "echo 1", Queued: 1024}, []string{"overloaded", "1024", "retry later"}},
		{&ConfigError{Err: errors.New("max containers must be at least 1")}, []string{"configuring runtime", "max containers"}},
	}
	for _, tt := range tests {
		msg := tt.err.Error()
		for _, w := range tt.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%T message %q lacks %q", tt.err, msg, w)
			}
		}
		if strings.HasSuffix(msg, "\n") {
			t.Errorf("%T message ends with a newline", tt.err)
		}
	}
	if !errors.Is(&RequestTimeoutError{}, context.DeadlineExceeded) {
		t.Error("RequestTimeoutError does not match context.DeadlineExceeded")
	}
	wrapped := &StartupError{Err: &engine.UnavailableError{Err: errors.New("refused")}}
	var ue *EngineUnavailableError
	if !errors.As(wrapped, &ue) {
		t.Error("StartupError does not unwrap to its cause")
	}
}
