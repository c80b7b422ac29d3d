// Package build turns a project into an .ociapp artifact: managed Python
// and custom builds through a container engine, managed Go builds without one.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
)

// DefaultPythonBaseImage is the base of managed Python images: the official
// slim image of the Python version Debian stable ships, so that what CI
// tests on a Debian-built base is the Python users get.
const DefaultPythonBaseImage = "python:3.13-slim"

// Image user: an unprivileged uid that exists in no base image, as in
// distroless images.
const (
	appUID  = 65532
	appUser = "65532:65532"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventPhase: the build moved on to a new phase ("compiling", "building
	// image", "writing artifact", ...).
	EventPhase EventKind = iota + 1
	// EventStep: the engine started a build step ("Step 3/12 : RUN ...").
	EventStep
	// EventOutput: a line of output from the current step or command.
	EventOutput
)

// Event is one piece of build progress. Builds report events; drawing them
// is up to the caller.
type Event struct {
	Kind EventKind
	Text string
}

// Options configure a build. The zero value builds into the project root,
// silently, and fails for projects that need a container engine.
type Options struct {
	// OutputDir receives the artifact; "" means the project root. It is
	// created if missing.
	OutputDir string
	// Engine builds and exports images (engine/docker implements
	// engine.Builder); managed Python and custom builds need it (see
	// Project.NeedsEngine).
	Engine engine.Builder
	// Progress receives events on the calling goroutine; nil discards them.
	Progress func(Event)
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// GoCommand is the go tool for managed Go builds; "" means "go" on PATH.
	GoCommand string
	// LayerCache is a directory where compressed layers are kept for the
	// next build (see artifact.WithLayerCache); "" compresses every layer
	// every time.
	LayerCache string
}

// Result is a finished build.
type Result struct {
	// Path is the artifact file.
	Path string
	// Artifact is the artifact, reopened and verified.
	Artifact *artifact.Artifact
	// Duration is how long the build took.
	Duration time.Duration
}

// StepError is a build step that failed: a compiler or command run by the
// build, or an engine build step (then Err is an *engine.BuildError).
type StepError struct {
	Step   string // what ran, e.g. "go build ./cmd/app" or "Step 7/12 : RUN ..."
	Output string // the step's output (its tail for long outputs)
	Err    error
}

func (e *StepError) Error() string {
	if strings.Contains(e.Err.Error(), e.Step) { // engine errors name their step
		return e.Err.Error()
	}
	return fmt.Sprintf("step %q failed: %v", e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// ErrNoEngine is returned when a build needs a container engine and
// Options.Engine is nil.
var ErrNoEngine = errors.New("this build needs a container engine (Docker), and none was given")

// builder carries one build's state.
type builder struct {
	p        *Project
	opts     Options
	log      *slog.Logger
	progress func(Event)
}

// Build builds the project into {OutputDir}/{name}-{version}.ociapp.
func Build(ctx context.Context, p *Project, opts Options) (*Result, error) {
	start := time.Now()
	b := &builder{p: p, opts: opts, log: opts.Logger, progress: opts.Progress}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.progress == nil {
		b.progress = func(Event) {}
	}
	if p.NeedsEngine() && opts.Engine == nil {
		return nil, fmt.Errorf("building %s: %w", p.Name, ErrNoEngine)
	}
	outDir := opts.OutputDir
	if outDir == "" {
		outDir = p.Root
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output directory: %w", err)
	}
	out := filepath.Join(outDir, p.ArtifactName())

	var err error
	switch {
	case p.Mode == ModeCustom:
		err = b.custom(ctx, out)
	case p.Language == Python:
		err = b.python(ctx, out)
	case p.Language == Go:
		err = b.golang(ctx, out)
	default:
		err = fmt.Errorf("no build for language %q", p.Language)
	}
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", p.Name, err)
	}
	a, err := artifact.Open(ctx, out)
	if err != nil {
		return nil, fmt.Errorf("verifying the artifact: %w", err)
	}
	return &Result{Path: out, Artifact: a, Duration: time.Since(start)}, nil
}

// write writes the artifact file.
func (b *builder) write(ctx context.Context, out string, img v1.Image, md artifact.Metadata) error {
	b.phase("writing %s", out)
	var opts []artifact.WriteOption
	if b.opts.LayerCache != "" {
		opts = append(opts, artifact.WithLayerCache(b.opts.LayerCache))
	}
	return artifact.WriteFile(ctx, out, img, md, opts...)
}

func (b *builder) phase(format string, args ...any) {
	b.progress(Event{Kind: EventPhase, Text: fmt.Sprintf(format, args...)})
}

func (b *builder) output(line string) {
	b.progress(Event{Kind: EventOutput, Text: line})
}

// metadata is the artifact metadata of the project, schemas aside.
func (b *builder) metadata() artifact.Metadata {
	md := artifact.Metadata{Name: b.p.Name, Version: b.p.Version}
	if b.p.Mode == ModeManaged {
		md.Entrypoint = b.p.Entrypoint
	}
	return md
}

// labels are put on images so that `docker inspect` shows what they are.
func (b *builder) labels() map[string]string {
	l := map[string]string{
		artifact.AnnotationTitle:    b.p.Name,
		artifact.AnnotationVersion:  b.p.Version,
		artifact.AnnotationProtocol: artifact.ProtocolVersion,
	}
	if b.p.Mode == ModeManaged {
		l[artifact.AnnotationEntrypoint] = b.p.Entrypoint
	}
	return l
}

// engineBuild builds an image through the engine, exports it and returns it,
// read from the exported docker-save archive (verified like any artifact).
// cleanup removes the archive, once the image has been used.
func (b *builder) engineBuild(ctx context.Context, contextTar *os.File, containerfile string) (img v1.Image, cleanup func(), err error) {
	saved, cleanup, err := b.engineExport(ctx, contextTar, containerfile)
	if err != nil {
		return nil, nil, err
	}
	if img, err = openSaved(ctx, saved); err != nil {
		cleanup()
		return nil, nil, err
	}
	return img, cleanup, nil
}

// engineExport builds an image through the engine, exports it and returns
// the path of the docker-save archive (removed by cleanup).
func (b *builder) engineExport(ctx context.Context, contextTar *os.File, containerfile string) (saved string, cleanup func(), err error) {
	ref := artifact.DefaultRef(b.p.Name, b.p.Version)
	b.phase("building image %s", ref)
	if _, err := contextTar.Seek(0, io.SeekStart); err != nil {
		return "", nil, err
	}
	var step string
	id, err := b.opts.Engine.BuildImage(ctx, engine.BuildRequest{
		Context:       contextTar,
		Containerfile: containerfile,
		Tags:          []string{ref},
		Labels:        b.labels(),
	}, func(ev engine.BuildEvent) {
		if ev.Step != "" {
			step = ev.Step
			b.progress(Event{Kind: EventStep, Text: ev.Step})
		}
		if ev.Stream != "" {
			b.output(ev.Stream)
		}
	})
	if err != nil {
		var be *engine.BuildError
		if errors.As(err, &be) {
			s := be.Step
			if s == "" {
				s = step
			}
			return "", nil, &StepError{Step: s, Output: be.Output, Err: err}
		}
		return "", nil, err
	}
	b.log.Debug("image built", "id", id)

	b.phase("exporting image")
	rc, err := b.opts.Engine.SaveImage(ctx, id)
	if err != nil {
		return "", nil, fmt.Errorf("exporting the image: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp("", "ociapp-save-*.tar")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.Remove(f.Name()) }
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		cleanup()
		return "", nil, fmt.Errorf("exporting the image: %w", err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// tail keeps the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
