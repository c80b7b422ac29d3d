package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testapps"
	"github.com/ociapp/ociapp/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeTestImages()
	if code == 0 {
		// The docker client keeps idle HTTP connections (two goroutines
		// each) until Close; every test closes its engine, so none may
		// remain.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireDocker returns an engine for the local daemon, closed when the
// test ends (testenv.Docker, which this package's tests cannot import).
func requireDocker(t testing.TB) *Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := New(ctx)
	if err != nil {
		testenv.Need(t, "Docker", "start it with scripts/ensure-docker.sh", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("closing engine: %v", err)
		}
	})
	return e
}

// testCtx is a context for one test's engine calls.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testImage is the image the container tests run: one static binary,
// internal/testapps/testprog, as its entrypoint, built and loaded without a registry.
type testImage struct {
	Ref      string   // tag it is loaded under
	ID       string   // ID the daemon gives it
	Config   string   // config digest
	Manifest string   // manifest digest
	Archive  []byte   // docker-save archive, tagged Ref
	Untagged []byte   // docker-save archive of the same image without a tag
	Loaded   []string // what LoadImage reported for Archive
	Image    v1.Image // the image itself
}

// The fixture is built once per test binary and removed by TestMain.
var (
	fixtureOnce sync.Once
	fixture     testImage
	fixtureErr  error
	cleanupRefs struct {
		sync.Mutex
		refs []string
	}
)

// removeImageLater registers an image for removal when the tests end.
func removeImageLater(ref string) {
	cleanupRefs.Lock()
	defer cleanupRefs.Unlock()
	cleanupRefs.refs = append(cleanupRefs.refs, ref)
}

func removeTestImages() {
	cleanupRefs.Lock()
	refs := cleanupRefs.refs
	cleanupRefs.Unlock()
	if len(refs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := New(ctx)
	if err != nil {
		return
	}
	defer e.Close()
	// Newest first: built images before the base they were built on.
	for i := len(refs) - 1; i >= 0; i-- {
		_, _ = e.cli.ImageRemove(ctx, refs[i], image.RemoveOptions{Force: true, PruneChildren: true})
	}
}

// requireImage returns the test image, loaded into e's daemon.
func requireImage(t testing.TB, e *Engine) testImage {
	t.Helper()
	fixtureOnce.Do(func() { fixture, fixtureErr = makeTestImage(e) })
	if fixtureErr != nil {
		t.Fatalf("preparing the test image: %v", fixtureErr)
	}
	return fixture
}

func makeTestImage(e *Engine) (testImage, error) {
	bin, err := testapps.Compile(context.Background(), testapps.Module+"/internal/testapps/testprog")
	if err != nil {
		return testImage{}, err
	}
	img, err := testProgImage(bin)
	if err != nil {
		return testImage{}, err
	}
	ti := testImage{Ref: "ociapp-enginetest:" + randomHex(6), Image: img}
	cfg, err := img.ConfigName()
	if err != nil {
		return testImage{}, err
	}
	ti.Config = cfg.String()
	dg, err := img.Digest()
	if err != nil {
		return testImage{}, err
	}
	ti.Manifest = dg.String()

	tag, err := name.NewTag(ti.Ref)
	if err != nil {
		return testImage{}, err
	}
	var tagged bytes.Buffer
	if err := tarball.Write(tag, img, &tagged); err != nil {
		return testImage{}, err
	}
	ti.Archive = tagged.Bytes()
	// A digest reference writes no RepoTags: the daemon loads it untagged.
	digestRef, err := name.NewDigest("ociapp-enginetest@" + ti.Manifest)
	if err != nil {
		return testImage{}, err
	}
	var untagged bytes.Buffer
	if err := tarball.Write(digestRef, img, &untagged); err != nil {
		return testImage{}, err
	}
	ti.Untagged = untagged.Bytes()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	removeImageLater(ti.Ref)
	ti.Loaded, err = e.LoadImage(ctx, bytes.NewReader(ti.Archive))
	if err != nil {
		return testImage{}, fmt.Errorf("loading: %w", err)
	}
	insp, err := e.cli.ImageInspect(ctx, ti.Ref)
	if err != nil {
		return testImage{}, err
	}
	ti.ID = insp.ID
	return ti, nil
}

// testProgImage is a one-layer image holding the testprog binary at
// /testprog, with the writable directories the tests use.
func testProgImage(bin []byte) (v1.Image, error) {
	files := []testapps.File{
		{Name: "testprog", Mode: 0o755, Data: bin},
		{Name: "tmp/", Mode: 0o1777, Dir: true},
		{Name: "mnt/", Mode: 0o755, Dir: true},
	}
	return testapps.Image(files, v1.Config{Entrypoint: []string{"/testprog"}, Cmd: []string{"exit", "0"}, Env: []string{"PATH=/"}})
}

// waitForLog polls the container's logs until they contain want.
func waitForLog(t testing.TB, e *Engine, id, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, err := e.ContainerLogs(testCtx(t), id, 0)
		if err != nil {
			t.Fatalf("reading logs: %v", err)
		}
		if strings.Contains(logs, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container logs never contained %q; logs:\n%s", want, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createContainer creates a container from spec and removes it when the
// test ends.
func createContainer(t testing.TB, e *Engine, spec engine.ContainerSpec) string {
	t.Helper()
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels["dev.ociapp.enginetest"] = "true"
	id, err := e.CreateContainer(testCtx(t), spec)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.RemoveContainer(ctx, id); err != nil {
			t.Errorf("removing container: %v", err)
		}
	})
	return id
}
