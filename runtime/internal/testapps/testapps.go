// Package testapps builds the runtime's test applications into .ociapp artifacts.
package testapps

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
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
)

// App is a Go program packaged as an artifact: a static binary on an empty
// base, run as a non-root user.
type App struct {
	// Package is the Go import path of the main package.
	Package string
	// Serve runs the binary with "serve" (an ociapp.Main program); plain
	// programs run without arguments.
	Serve bool
	// User is the image's user; "" leaves it unset (root), so the runtime
	// picks its non-root default.
	User string
	// Entrypoint replaces the binary's path as the image's entrypoint.
	Entrypoint []string
}

const module = "github.com/ociapp/ociapp"

// Lookup returns the test application called name.
func Lookup(name string) (App, bool) {
	app, ok := map[string]App{
		"echo-go":   {Package: module + "/examples/echo-go", Serve: true, User: "65532"},
		"sleeper":   {Package: module + "/runtime/internal/testapps/sleeper", Serve: true, User: "65532"},
		"crasher":   {Package: module + "/runtime/internal/testapps/crasher", Serve: true, User: "65532"},
		"exitstart": {Package: module + "/runtime/internal/testapps/exitstart"},
		"nobind":    {Package: module + "/runtime/internal/testapps/nobind"},
		"memhog":    {Package: module + "/runtime/internal/testapps/memhog", Serve: true},
		"garbage":   {Package: module + "/runtime/internal/testapps/garbage"},
		"cpuhog":    {Package: module + "/runtime/internal/testapps/cpuhog", Serve: true, User: "65532"},
		"probe":     {Package: module + "/runtime/internal/testapps/probe", Serve: true},
		"badentry":  {Package: module + "/runtime/internal/testapps/sleeper", Entrypoint: []string{"/no/such/binary", "serve"}},
	}[name]
	return app, ok
}

// Set builds artifacts into a directory on first use, each once.
type Set struct {
	dir string

	mu    sync.Mutex
	built map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// NewSet returns a Set that writes its artifacts into dir.
func NewSet(dir string) *Set {
	return &Set{dir: dir, built: make(map[string]*build)}
}

// Path returns the artifact of the named app, building it the first time.
func (s *Set) Path(ctx context.Context, name string) (string, error) {
	app, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("no test app named %q", name)
	}
	s.mu.Lock()
	b, ok := s.built[name]
	if !ok {
		b = &build{}
		s.built[name] = b
	}
	s.mu.Unlock()
	b.once.Do(func() {
		b.path = filepath.Join(s.dir, name+"-0.1.0.ociapp")
		b.err = Build(ctx, name, app, b.path)
	})
	return b.path, b.err
}

// pythonApps are the Python test applications, by name: directories are
// relative to the module root.
func pythonApps(name string) (PythonApp, bool) {
	app, ok := map[string]PythonApp{
		"echo-py": {Name: "echo-app", Version: "0.1.0", Dir: "examples/echo-app", Entrypoint: "echo_app.main:app"},
		"cpu-py":  {Name: "cpu-app", Version: "0.1.0", Dir: "runtime/testdata/cpu-app", Entrypoint: "cpu_app.main:app"},
		// An import error at start: the module does not exist.
		"broken-py": {Name: "broken-app", Version: "0.1.0", Dir: "examples/echo-app", Entrypoint: "echo_app.missing:app"},
	}[name]
	return app, ok
}

// PythonPath returns the artifact of the named Python app ("echo-py",
// "cpu-py"), building it with b the first time.
func (s *Set) PythonPath(ctx context.Context, b engine.Builder, name string) (string, error) {
	app, ok := pythonApps(name)
	if !ok {
		return "", fmt.Errorf("no Python test app named %q", name)
	}
	s.mu.Lock()
	bd, ok := s.built[name]
	if !ok {
		bd = &build{}
		s.built[name] = bd
	}
	s.mu.Unlock()
	bd.once.Do(func() {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			bd.err = fmt.Errorf("finding the module root: %v", err)
			return
		}
		app.Dir = filepath.Join(filepath.Dir(string(bytes.TrimSpace(out))), app.Dir)
		bd.path = filepath.Join(s.dir, name+"-0.1.0.ociapp")
		bd.err = BuildPython(ctx, b, app, bd.path)
	})
	return bd.path, bd.err
}

// Build compiles app and writes it as an artifact at path.
func Build(ctx context.Context, name string, app App, path string) error {
	tmp, err := os.MkdirTemp("", "testapp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "app")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, app.Package)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", app.Package, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	img, err := image(data, app)
	if err != nil {
		return fmt.Errorf("packaging %s: %w", name, err)
	}
	md := artifact.Metadata{Name: name, Version: "0.1.0", Entrypoint: app.Package}
	return artifact.WriteFile(ctx, path, img, md)
}

func image(binary []byte, app App) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time keeps the digest stable across builds.
	mtime := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(binary)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
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
	cf.Config.User = app.User
	cf.Config.Entrypoint = []string{"/app"}
	if app.Serve {
		cf.Config.Entrypoint = append(cf.Config.Entrypoint, "serve")
	}
	if app.Entrypoint != nil {
		cf.Config.Entrypoint = app.Entrypoint
	}
	return mutate.ConfigFile(img, cf)
}
