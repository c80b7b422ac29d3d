// Package testapps builds the test applications of the module's tests into
// images and .ociapp artifacts: static Go programs on an empty base, and
// Python projects built the way the original builder built them.
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

// App is a Go program packaged as an artifact: a static binary at /app on
// an empty base.
type App struct {
	// Package is the Go import path of the main package.
	Package string
	// Args follow the binary in the image's entrypoint ("serve" for an
	// ociapp.Main program); plain programs run without arguments.
	Args []string
	// User is the image's user; "" leaves it unset (root), so the runtime
	// picks its non-root default.
	User string
	// Entrypoint replaces the binary's path and Args as the image's
	// entrypoint.
	Entrypoint []string
	// Files are added to the image's layer next to the binary (e.g. an
	// /etc/passwd); Configure edits the image config last (a hostile
	// STOPSIGNAL, VOLUMEs, labels); Ref names the image in the artifact
	// (manifest.json RepoTags and the index's name annotations).
	Files     []File
	Configure func(*v1.Config)
	Ref       string
	// Capabilities are the protocol extensions the artifact declares;
	// none, as with the original's tooling, unless set.
	Capabilities []string
}

// Module is the module's path, the prefix of every test app's package.
const Module = "github.com/ociapp/ociapp"

const pkgs = Module + "/internal/testapps/"

var serve = []string{"serve"}

// Lookup returns the test application called name.
func Lookup(name string) (App, bool) {
	app, ok := map[string]App{
		"echo-go":   {Package: Module + "/examples/echo-go", Args: serve, User: "65532"},
		"sleeper":   {Package: pkgs + "sleeper", Args: serve, User: "65532"},
		"crasher":   {Package: pkgs + "crasher", Args: serve, User: "65532"},
		"exitstart": {Package: pkgs + "exitstart"},
		"nobind":    {Package: pkgs + "nobind"},
		"memhog":    {Package: pkgs + "memhog", Args: serve},
		"garbage":   {Package: pkgs + "garbage"},
		"cpuhog":    {Package: pkgs + "cpuhog", Args: serve, User: "65532"},
		"probe":     {Package: pkgs + "probe", Args: serve},
		"hostile":   {Package: pkgs + "hostile", Args: serve, User: "65532"},
		"badentry":  {Package: pkgs + "sleeper", Entrypoint: []string{"/no/such/binary", "serve"}},
		// The same app, declaring the capabilities its SDK has or none.
		"capable":       {Package: pkgs + "capable", Args: serve, User: "65532", Capabilities: []string{"cancel", "deadline", "stream"}},
		"capable-nocap": {Package: pkgs + "capable", Args: serve, User: "65532"},
		// The stream capability's test app.
		"streamer": {Package: pkgs + "streamer", Args: serve, User: "65532", Capabilities: []string{"cancel", "deadline", "stream"}},
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
	b := s.entry(name)
	b.once.Do(func() {
		b.path = filepath.Join(s.dir, name+"-0.1.0.ociapp")
		b.err = Build(ctx, name, app, b.path)
	})
	return b.path, b.err
}

// entry returns the build of the named artifact, made on first use.
func (s *Set) entry(name string) *build {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.built[name]
	if !ok {
		b = &build{}
		s.built[name] = b
	}
	return b
}

// pythonApps are the Python test applications, by name: directories are
// relative to the module root.
func pythonApps(name string) (PythonApp, bool) {
	app, ok := map[string]PythonApp{
		"echo-py": {Name: "echo-app", Version: "0.1.0", Dir: "examples/echo-app", Entrypoint: "echo_app.main:app"},
		"cpu-py":  {Name: "cpu-app", Version: "0.1.0", Dir: "runtime/testdata/cpu-app", Entrypoint: "cpu_app.main:app"},
		// The protocol capabilities' test app, declaring those of the SDK.
		"capable-py": {Name: "capable-app", Version: "0.1.0", Dir: "runtime/testdata/capable-app", Entrypoint: "capable_app.main:app", Capabilities: []string{"cancel", "deadline"}},
		// The stream capability's test app: execute is an async generator.
		"streamer-py": {Name: "streamer-app", Version: "0.1.0", Dir: "runtime/testdata/streamer-app", Entrypoint: "streamer_app.main:app", Capabilities: []string{"cancel", "deadline", "stream"}},
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
	bd := s.entry(name)
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

// Build compiles app and writes it as an artifact called name at path.
func Build(ctx context.Context, name string, app App, path string) error {
	binary, err := Compile(ctx, app.Package)
	if err != nil {
		return err
	}
	return Package(ctx, name, binary, app, path)
}

// Compile builds the Go main package pkg as a static Linux binary for this
// machine's architecture.
func Compile(ctx context.Context, pkg string) ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("compiling %s: %w (put the go command on PATH)", pkg, err)
	}
	tmp, err := os.MkdirTemp("", "testapp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "app")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %v\n%s", pkg, err, out)
	}
	return os.ReadFile(bin)
}

// Package writes binary, compiled from app.Package, as an artifact called
// name at path.
func Package(ctx context.Context, name string, binary []byte, app App, path string) error {
	cfg := v1.Config{User: app.User, Entrypoint: append([]string{"/app"}, app.Args...)}
	if app.Entrypoint != nil {
		cfg.Entrypoint = app.Entrypoint
	}
	if app.Configure != nil {
		app.Configure(&cfg)
	}
	img, err := Image(append([]File{{Name: "app", Mode: 0o755, Data: binary}}, app.Files...), cfg)
	if err != nil {
		return fmt.Errorf("packaging %s: %w", name, err)
	}
	md := artifact.Metadata{Name: name, Version: "0.1.0", Entrypoint: app.Package, Ref: app.Ref, Capabilities: app.Capabilities}
	if err := artifact.WriteFile(ctx, path, img, md); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// File is one entry of an image's layer.
type File struct {
	Name string // a directory's ends in "/"
	Mode int64
	Dir  bool
	Data []byte
}

// Image makes a one-layer Linux image for this machine's architecture
// holding files, with cfg as its configuration.
func Image(files []File, cfg v1.Config) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := byte(tar.TypeReg)
		if f.Dir {
			typ = tar.TypeDir
		}
		// A fixed time keeps the digest stable across builds.
		hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Typeflag: typ, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
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
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// TestAppArtifacts are the paths of the testapp program's two artifacts,
// and of the capabilities' test app.
type TestAppArtifacts struct {
	// App serves requests (see the testapp command for what it does).
	App string
	// ExitStart exits at start without listening.
	ExitStart string
	// Capable is the capable command, declaring cancel, deadline and
	// stream; Streamer the streamer command, which streams its answers.
	Capable  string
	Streamer string
}

// BuildTestApp compiles the testapp program once and writes its two
// artifacts into dir, which it creates if needed: testapp-0.1.0.ociapp
// (run with "serve") and exitstart-0.1.0.ociapp (run with "exitstart"),
// both run as user 65532; capable-0.1.0.ociapp, the "capable" app; and
// streamer-0.1.0.ociapp, the "streamer" app.
func BuildTestApp(ctx context.Context, dir string) (TestAppArtifacts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return TestAppArtifacts{}, err
	}
	const pkg = pkgs + "testapp"
	binary, err := Compile(ctx, pkg)
	if err != nil {
		return TestAppArtifacts{}, err
	}
	a := TestAppArtifacts{
		App:       filepath.Join(dir, "testapp-0.1.0.ociapp"),
		ExitStart: filepath.Join(dir, "exitstart-0.1.0.ociapp"),
	}
	if err := Package(ctx, "testapp", binary, App{Package: pkg, Args: serve, User: "65532"}, a.App); err != nil {
		return TestAppArtifacts{}, err
	}
	if err := Package(ctx, "exitstart", binary, App{Package: pkg, Args: []string{"exitstart"}, User: "65532"}, a.ExitStart); err != nil {
		return TestAppArtifacts{}, err
	}
	a.Capable = filepath.Join(dir, "capable-0.1.0.ociapp")
	capable, _ := Lookup("capable")
	if err := Build(ctx, "capable", capable, a.Capable); err != nil {
		return TestAppArtifacts{}, err
	}
	a.Streamer = filepath.Join(dir, "streamer-0.1.0.ociapp")
	streamer, _ := Lookup("streamer")
	if err := Build(ctx, "streamer", streamer, a.Streamer); err != nil {
		return TestAppArtifacts{}, err
	}
	return a, nil
}
