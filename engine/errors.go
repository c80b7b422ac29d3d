package engine

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is wrapped by errors about a missing image or container; test
// with errors.Is.
var ErrNotFound = errors.New("not found")

// ErrInUse is wrapped by errors about an object that cannot be removed
// because something else uses it, e.g. an image a container was created
// from; test with errors.Is.
var ErrInUse = errors.New("in use")

// UnavailableError means the engine could not be reached: the daemon is not
// running, the socket is wrong, or the connection broke.
type UnavailableError struct {
	// Engine names what could not be reached, e.g. "the Kubernetes API
	// server"; "" means the Docker daemon.
	Engine string
	Host   string // the address that was tried, e.g. unix:///var/run/docker.sock
	Err    error
}

func (e *UnavailableError) Error() string {
	host := e.Host
	if host == "" {
		host = "the default address"
	}
	if e.Engine != "" {
		return fmt.Sprintf("cannot reach %s at %s: %v", e.Engine, host, e.Err)
	}
	return fmt.Sprintf("cannot reach the Docker daemon at %s: %v", host, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// BuildError is a build that failed in one of its steps.
type BuildError struct {
	Step    string // the failing step, e.g. "Step 3/7 : RUN make"; "" if it failed before the first step
	Message string // the engine's error message
	Output  string // the tail of the build output, ending with the failing step's output
}

func (e *BuildError) Error() string {
	var b strings.Builder
	b.WriteString("image build failed")
	if e.Step != "" {
		fmt.Fprintf(&b, " (%s)", e.Step)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	b.WriteString("; fix the Containerfile or the build context (the output tail is in BuildError.Output)")
	return b.String()
}

// LoadError is an image load the engine rejected, e.g. a corrupt or
// unsupported archive.
type LoadError struct {
	Message string // the engine's error message
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("the engine rejected the image archive: %s; check that the file is a complete docker-save or OCI layout tar", e.Message)
}
