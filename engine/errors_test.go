package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestErrorMessages(t *testing.T) {
	cause := errors.New("dial unix /var/run/docker.sock: connect: no such file or directory")
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{"unavailable", &UnavailableError{Host: "unix:///var/run/docker.sock", Err: cause},
			[]string{"cannot reach the Docker daemon at unix:///var/run/docker.sock", "no such file"}},
		{"unavailable without host", &UnavailableError{Err: cause}, []string{"at the default address"}},
		{"unavailable, another engine", &UnavailableError{Engine: "the Kubernetes API server", Host: "https://127.0.0.1:6443", Err: cause},
			[]string{"cannot reach the Kubernetes API server at https://127.0.0.1:6443", "no such file"}},
		{"build at a step", &BuildError{Step: "Step 2/3 : RUN make", Message: "returned a non-zero code: 2"},
			[]string{"(Step 2/3 : RUN make)", "returned a non-zero code: 2", "fix the Containerfile"}},
		{"build before any step", &BuildError{Message: "unknown instruction"}, []string{"image build failed: unknown instruction"}},
		{"load", &LoadError{Message: "unexpected EOF"}, []string{"rejected the image archive: unexpected EOF", "docker-save or OCI layout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestErrorsAs(t *testing.T) {
	cause := errors.New("connection refused")
	wrapped := fmt.Errorf("starting worker: %w", &UnavailableError{Host: "tcp://h:2375", Err: cause})
	var ue *UnavailableError
	if !errors.As(wrapped, &ue) || ue.Host != "tcp://h:2375" {
		t.Errorf("errors.As(UnavailableError) failed on %v", wrapped)
	}
	if !errors.Is(wrapped, cause) {
		t.Error("UnavailableError does not unwrap to its cause")
	}
	nf := fmt.Errorf("inspecting container x: %w: %w", ErrNotFound, errors.New("No such container: x"))
	if !errors.Is(nf, ErrNotFound) {
		t.Error("errors.Is(ErrNotFound) failed")
	}
}
