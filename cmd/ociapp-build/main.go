// Command ociapp-build builds a project into an .ociapp artifact:
//
//	ociapp-build PROJECT_ROOT [--output-dir DIR] [--base-image IMAGE] [-q]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ociapp/ociapp/build"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/internal/termstatus"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `usage: ociapp-build PROJECT_ROOT [--output-dir DIR] [--base-image IMAGE] [-q]

Builds the project at PROJECT_ROOT into {name}-{version}.ociapp, configured by
[tool.ociapp-build] in pyproject.toml (Python) or ociapp.toml (Go).

flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, termstatus.IsTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// options are the parsed command line.
type options struct {
	root      string
	outputDir string
	baseImage string
	quiet     bool
}

// parseArgs reads flags before and after the project root, as the original
// command line allows ("ociapp-build app --output-dir dist").
func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("ociapp-build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.outputDir, "output-dir", "", "write the artifact to `DIR` (default: the project root)")
	fs.StringVar(&o.baseImage, "base-image", "", "base `IMAGE`, overriding base-image in the config (must be present locally or pullable)")
	fs.BoolVar(&o.quiet, "q", false, "print nothing but errors")
	fs.BoolVar(&o.quiet, "quiet", false, "same as -q")
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(positional) {
	case 1:
		o.root = positional[0]
		return o, nil
	case 0:
		fs.Usage()
		return o, errors.New("missing PROJECT_ROOT")
	}
	fs.Usage()
	return o, fmt.Errorf("one PROJECT_ROOT expected, got %d: %s", len(positional), strings.Join(positional, " "))
}

// run is the command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "ociapp-build:", err)
		return exitUsage
	}
	p, err := build.LoadProject(o.root)
	if err != nil {
		fmt.Fprintln(stderr, "ociapp-build:", err)
		return exitFail
	}
	if o.baseImage != "" {
		if p.Mode == build.ModeCustom {
			fmt.Fprintln(stderr, "ociapp-build: --base-image does not apply to a custom build: its Containerfile names the base image")
			return exitUsage
		}
		p.BaseImage = o.baseImage
	}
	opts := build.Options{OutputDir: o.outputDir, LayerCache: layerCacheDir()}
	if p.NeedsEngine() {
		eng, err := docker.New(ctx)
		if err != nil {
			reportError(stderr, err)
			return exitFail
		}
		defer eng.Close()
		opts.Engine = eng
	}
	var disp *display
	if !o.quiet {
		disp = newDisplay(stderr, tty)
		opts.Progress = disp.event
	}
	res, err := build.Build(ctx, p, opts)
	if disp != nil {
		disp.finish()
	}
	if err != nil {
		reportError(stderr, err)
		return exitFail
	}
	if !o.quiet {
		a := res.Artifact
		fmt.Fprintf(stdout, "built %s (%s, %s, %.1fs)\n", res.Path, bytesize.Format(a.Size), a.Digest, res.Duration.Seconds())
	}
	return exitOK
}

// reportError prints a failed build: the failing step and its output first,
// then what went wrong, then what to do about it.
func reportError(w io.Writer, err error) {
	var se *build.StepError
	if errors.As(err, &se) {
		fmt.Fprintf(w, "ociapp-build: failed at: %s\n", se.Step)
		if out := strings.TrimRight(stripANSI(se.Output), "\n"); out != "" {
			for line := range strings.SplitSeq(out, "\n") {
				fmt.Fprintln(w, "  | "+line)
			}
		}
	}
	fmt.Fprintln(w, "ociapp-build:", err)
	if a := advice(err); a != "" {
		fmt.Fprintln(w, "ociapp-build:", a)
	}
}

// advice says what a person can do about err, or "" when there is nothing
// to add. Libraries describe what failed; the scripts and settings that
// help are named here.
func advice(err error) string {
	var ue *engine.UnavailableError
	if errors.As(err, &ue) {
		return "is Docker running? scripts/ensure-docker.sh starts it, or set DOCKER_HOST to where it listens; managed Python and custom builds need Docker, managed Go builds do not"
	}
	return ""
}

// layerCacheDir is where compressed layers are kept between builds:
// $XDG_CACHE_HOME/ociapp-build (~/.cache/ociapp-build), or none when the
// system has no cache directory.
func layerCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "ociapp-build")
}
