package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ociapp/ociapp/artifact"
)

// schemaTimeout bounds running an app's schema command.
const schemaTimeout = 30 * time.Second

// epoch is the timestamp of everything a managed Go build writes, so that
// the artifact depends on the source alone.
var epoch = time.Unix(0, 0).UTC()

// golang compiles a Go main package into a static binary and appends it as
// a layer to the base image; no container engine is involved unless the base
// image is an engine image.
func (b *builder) golang(ctx context.Context, out string) error {
	goCmd := b.opts.GoCommand
	if goCmd == "" {
		goCmd = "go"
	}
	tmp, err := os.MkdirTemp("", "ociapp-go-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	arch := runtime.GOARCH
	name := binaryName(b.p.Name)
	bin := filepath.Join(tmp, "linux", name)
	b.phase("compiling %s for linux/%s", b.p.Entrypoint, arch)
	if err := b.goBuild(ctx, goCmd, "linux", arch, bin); err != nil {
		return err
	}

	b.phase("reading the app's JSON Schemas")
	schemaBin := bin
	if runtime.GOOS != "linux" {
		// The linux binary cannot run here; the schemas come from the
		// same source compiled for this machine.
		schemaBin = filepath.Join(tmp, "host", name)
		if err := b.goBuild(ctx, goCmd, runtime.GOOS, runtime.GOARCH, schemaBin); err != nil {
			return err
		}
	}
	md := b.metadata()
	desc, err := runSchema(ctx, schemaBin)
	if err != nil {
		return err
	}
	desc.apply(&md)

	base, cleanup, err := b.goBase(ctx, arch)
	if err != nil {
		return err
	}
	defer cleanup()
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	img, err := goImage(base, name, binary, b.p.Entrypoint, arch, b.labels())
	if err != nil {
		return err
	}
	return b.write(ctx, out, img, md)
}

var binaryNameInvalid = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// binaryName is the file name of the app binary: the project name with
// anything but letters, digits, '.', '_' and '-' replaced.
func binaryName(project string) string {
	n := binaryNameInvalid.ReplaceAllString(project, "-")
	if n = strings.Trim(n, ".-"); n == "" {
		n = "app"
	}
	return n
}

// goBuild compiles the project's main package, reproducibly: no paths, no
// VCS stamp, no build ID, no cgo.
func (b *builder) goBuild(ctx context.Context, goCmd, goos, goarch, out string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, b.p.Entrypoint}
	step := fmt.Sprintf("GOOS=%s GOARCH=%s CGO_ENABLED=0 %s %s", goos, goarch, goCmd, strings.Join(args, " "))
	b.progress(Event{Kind: EventStep, Text: step})
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = b.p.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("managed Go builds need the go command (%q not found): install Go from https://go.dev/dl: %w", goCmd, err)
		}
		return fmt.Errorf("running %s: %w", goCmd, err)
	}
	var output strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		output.WriteString(sc.Text() + "\n")
		b.output(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		return &StepError{Step: step, Output: tail(output.String(), 60), Err: err}
	}
	return nil
}

// runSchema runs "BINARY schema", which ociapp.Main provides.
func runSchema(ctx context.Context, bin string) (selfDescription, error) {
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "schema")
	cmd.Dir = filepath.Dir(bin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return selfDescription{}, &StepError{Step: filepath.Base(bin) + " schema", Output: tail(stderr.String(), 30),
			Err: fmt.Errorf("%w; a managed Go app's main must call ociapp.Main, which provides the serve and schema commands", err)}
	}
	if stdout.Len() > maxSchemaFile {
		return selfDescription{}, fmt.Errorf("%s schema printed %d bytes, too many", filepath.Base(bin), stdout.Len())
	}
	desc, err := parseSchemas(stdout.Bytes())
	if err != nil {
		return selfDescription{}, fmt.Errorf("reading the output of %s schema: %w", filepath.Base(bin), err)
	}
	return desc, nil
}

// goBase is the image a managed Go build starts from: empty, an image
// archive file, or an engine image (exported to a temporary file that
// cleanup removes).
func (b *builder) goBase(ctx context.Context, arch string) (img v1.Image, cleanup func(), err error) {
	cleanup = func() {}
	ref := b.p.BaseImage
	if ref == "" {
		return empty.Image, cleanup, nil
	}
	b.phase("reading base image %s", ref)
	file := ref
	if !filepath.IsAbs(file) {
		file = filepath.Join(b.p.Root, file)
	}
	if !isImageFile(b.p.Root, ref) {
		if b.opts.Engine == nil {
			return nil, cleanup, fmt.Errorf("reading base image %s: %w", ref, ErrNoEngine)
		}
		rc, err := b.opts.Engine.SaveImage(ctx, ref)
		if err != nil {
			return nil, cleanup, fmt.Errorf("reading base image %s (it must be present in the engine; nothing is pulled): %w", ref, err)
		}
		defer rc.Close()
		f, err := os.CreateTemp("", "ociapp-base-*.tar")
		if err != nil {
			return nil, cleanup, err
		}
		cleanup = func() { _ = os.Remove(f.Name()) }
		_, err = f.ReadFrom(rc)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			cleanup()
			return nil, func() {}, fmt.Errorf("reading base image %s: %w", ref, err)
		}
		file = f.Name()
	}
	a, err := artifact.Open(ctx, file)
	if err == nil {
		img, err = a.Image()
	}
	if err != nil {
		cleanup()
		return nil, func() {}, fmt.Errorf("reading base image %s: %w", ref, err)
	}
	if cfg := a.Config; cfg.OS != "linux" || cfg.Architecture != arch {
		cleanup()
		return nil, func() {}, fmt.Errorf("base image %s is for %s/%s, not linux/%s", ref, cfg.OS, cfg.Architecture, arch)
	}
	return img, cleanup, nil
}

// goImage appends the binary to base and sets the config: the non-root user,
// "BINARY serve" as the entrypoint, timestamps at the epoch.
func goImage(base v1.Image, name string, binary []byte, entrypoint, arch string, labels map[string]string) (v1.Image, error) {
	layer, err := binaryLayer(name, binary)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: static.NewLayer(layer, types.OCIUncompressedLayer),
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "ociapp-build: go build " + entrypoint,
		},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Created = v1.Time{Time: epoch}
	//lint:ignore SA1019 a base image's docker_version must not reach the artifact's config
	cfg.Author, cfg.Container, cfg.DockerVersion = "", "", ""
	cfg.Config.User = appUser
	cfg.Config.Entrypoint = []string{"/app/" + name, "serve"}
	cfg.Config.Cmd = nil
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	for k, v := range labels {
		cfg.Config.Labels[k] = v
	}
	return mutate.ConfigFile(img, cfg)
}

// binaryLayer is the uncompressed tar of the app layer: the binary at
// /app/NAME (owned by root, so the app cannot rewrite it), the socket
// directory /run/ociapp owned by the app user, and a sticky /tmp.
func binaryLayer(name string, binary []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "app/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeReg, Name: "app/" + name, Mode: 0o755, Size: int64(len(binary))}, binary},
		{tar.Header{Typeflag: tar.TypeDir, Name: "run/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeDir, Name: "run/ociapp/", Mode: 0o755, Uid: appUID, Gid: appUID}, nil},
		{tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil},
	}
	for _, e := range entries {
		hdr := e.hdr
		hdr.ModTime = epoch
		hdr.Format = tar.FormatUSTAR
		if err := tw.WriteHeader(&hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
