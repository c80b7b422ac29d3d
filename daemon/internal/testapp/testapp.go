// Package testapp builds the daemon tests' application into .ociapp artifacts.
package testapp

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ociapp/ociapp/artifact"
)

// Artifacts are the paths of the built artifacts.
type Artifacts struct {
	// App serves requests (see the app command for what it does).
	App string
	// ExitStart exits at start without listening.
	ExitStart string
}

const pkg = "github.com/ociapp/ociapp/daemon/internal/testapp/app"

// Build compiles the app once (static, for Linux) and writes both artifacts
// into dir, which it creates if needed: the binary on an empty base, run as
// user 65532.
func Build(ctx context.Context, dir string) (Artifacts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Artifacts{}, err
	}
	tmp, err := os.MkdirTemp("", "testapp-")
	if err != nil {
		return Artifacts{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "app")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Artifacts{}, fmt.Errorf("building %s: %v\n%s", pkg, err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return Artifacts{}, err
	}
	a := Artifacts{
		App:       filepath.Join(dir, "testapp-0.1.0.ociapp"),
		ExitStart: filepath.Join(dir, "exitstart-0.1.0.ociapp"),
	}
	for _, v := range []struct {
		name, path string
		args       []string
	}{
		{"testapp", a.App, []string{"serve"}},
		{"exitstart", a.ExitStart, []string{"exitstart"}},
	} {
		img, err := image(binary, v.args)
		if err != nil {
			return Artifacts{}, fmt.Errorf("packaging %s: %w", v.name, err)
		}
		md := artifact.Metadata{Name: v.name, Version: "0.1.0", Entrypoint: pkg}
		if err := artifact.WriteFile(ctx, v.path, img, md); err != nil {
			return Artifacts{}, fmt.Errorf("writing %s: %w", v.name, err)
		}
	}
	return a, nil
}

func image(binary []byte, args []string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time keeps the digest stable across builds.
	hdr := &tar.Header{Name: "app", Mode: 0o755, Size: int64(len(binary)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config.User = "65532"
	cf.Config.Entrypoint = append([]string{"/app"}, args...)
	return mutate.ConfigFile(img, cf)
}
