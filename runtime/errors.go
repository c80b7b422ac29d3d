package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// ErrClosed is returned by calls on a closed runtime and by requests that
// were in flight or queued when it closed.
var ErrClosed = errors.New("ociapp runtime is closed")

// AppError is an error the application itself reported for a request
// (the original's RemoteExecutionError): its exception type, message and
// details. The container stays in service.
type AppError = protocol.AppError

// EngineUnavailableError means the container engine could not be reached.
type EngineUnavailableError = engine.UnavailableError

// ArtifactError means an artifact file could not be used: it is missing,
// corrupt, or the engine refused to load it (the original's
// ArtifactLoadError). Err is the cause, often an *artifact.Error.
type ArtifactError struct {
	Path string
	Err  error
}

func (e *ArtifactError) Error() string {
	return fmt.Sprintf("cannot use artifact %s: %v", e.Path, e.Err)
}

func (e *ArtifactError) Unwrap() error { return e.Err }

// StartupError means a container did not become ready (the original's
// InstanceStartupError): it exited, its socket never appeared in time, or
// the engine could not start it.
type StartupError struct {
	Artifact    string // the artifact's name and version, or its path
	ContainerID string
	Reason      string // what happened, in words
	// Exited reports whether the container had exited; ExitCode and
	// OOMKilled are meaningful only then.
	Exited    bool
	ExitCode  int
	OOMKilled bool
	// Logs is the tail of the container's output.
	Logs string
	// RetryIn is how long further starts of this artifact are paused; until
	// then requests that need a new container fail with this same error.
	RetryIn time.Duration
	Err     error
}

func (e *StartupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "container for %s failed to start: %s", e.Artifact, e.Reason)
	writeExit(&b, e.Exited, e.ExitCode, e.OOMKilled, "")
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryIn > 0 {
		fmt.Fprintf(&b, "; new starts paused for %v", e.RetryIn)
	}
	b.WriteString("; check the application's entrypoint and the container log")
	writeLogTail(&b, e.Logs)
	return b.String()
}

func (e *StartupError) Unwrap() error { return e.Err }

// RequestTimeoutError means a request got no response within the request
// timeout (the original's RequestTimeoutError). The container stays in
// service; a late response is dropped. It matches context.DeadlineExceeded.
type RequestTimeoutError struct {
	Artifact string
	Timeout  time.Duration
}

func (e *RequestTimeoutError) Error() string {
	return fmt.Sprintf("request to %s timed out after %v; raise the request timeout or make the request cheaper", e.Artifact, e.Timeout)
}

func (e *RequestTimeoutError) Unwrap() error { return context.DeadlineExceeded }

// WorkerCrashError means the container serving a request died or broke its
// connection before answering: it exited (perhaps killed for exceeding its
// memory limit), closed its socket, or wrote a malformed frame. Every
// request in flight on that container fails with it; the next request gets
// a new container.
type WorkerCrashError struct {
	Artifact    string
	ContainerID string
	Reason      string
	// Exited reports whether the container had exited on its own; ExitCode
	// and OOMKilled are meaningful only then.
	Exited    bool
	ExitCode  int
	OOMKilled bool
	Logs      string
	Err       error
}

func (e *WorkerCrashError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "container for %s crashed while serving the request: %s", e.Artifact, e.Reason)
	writeExit(&b, e.Exited, e.ExitCode, e.OOMKilled, ": raise it with the memory limit option")
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	b.WriteString("; the request may or may not have taken effect, retry it only if it is idempotent")
	writeLogTail(&b, e.Logs)
	return b.String()
}

func (e *WorkerCrashError) Unwrap() error { return e.Err }

// OverloadedError means too many requests were already waiting for a
// container of the artifact.
type OverloadedError struct {
	Artifact string
	Queued   int // requests waiting when this one was refused
}

func (e *OverloadedError) Error() string {
	return fmt.Sprintf("%s is overloaded: %d requests already wait for a container; retry later, or raise the queue size, max containers or container concurrency", e.Artifact, e.Queued)
}

// ConfigError means an option passed to New is invalid.
type ConfigError struct {
	Err error
}

func (e *ConfigError) Error() string { return "configuring runtime: " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// logTailLines is how many lines of a container's output errors carry.
const logTailLines = 20

func writeLogTail(b *strings.Builder, logs string) {
	logs = strings.TrimRight(logs, "\n")
	if logs == "" {
		return
	}
	b.WriteString("; last log lines:")
	for line := range strings.SplitSeq(logs, "\n") {
		b.WriteString("\n  | ")
		b.WriteString(line)
	}
}

// writeExit appends how a container ended, if it has: its exit code, and
// whether it was killed for its memory use (followed by oomHint).
func writeExit(b *strings.Builder, exited bool, code int, oom bool, oomHint string) {
	if !exited {
		return
	}
	fmt.Fprintf(b, " (exit code %d", code)
	switch {
	case oom:
		b.WriteString(", killed for exceeding its memory limit" + oomHint)
	case code == 137:
		// An engine can miss an OOM kill (docs/engine.md, "OOM kills").
		b.WriteString(", killed by SIGKILL: by another process, or for exceeding its memory limit" + oomHint)
	}
	b.WriteString(")")
}
