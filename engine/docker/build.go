package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/docker/docker/api/types/build"

	"github.com/ociapp/ociapp/engine"
)

// BuildImage builds an image with the daemon's classic builder and returns
// its ID ("sha256:..."). progress, when not nil, receives each step and each
// line of output as it arrives, on the calling goroutine. A failing build
// gives *engine.BuildError with the failing step and its output.
//
// The classic builder is used because BuildKit through the API needs a
// client session (gRPC over a hijacked connection) for the context and
// outputs; the classic builder takes the context as the request body on
// every daemon from API 1.24 on, and caches layers by instruction and
// content, so an unchanged rebuild reuses every step.
func (e *Engine) BuildImage(ctx context.Context, req engine.BuildRequest, progress func(engine.BuildEvent)) (string, error) {
	const op = "building image"
	if req.Context == nil {
		return "", errors.New("building image: no build context")
	}
	if progress == nil {
		progress = func(engine.BuildEvent) {}
	}
	src := &recordingReader{r: req.Context}
	resp, err := e.cli.ImageBuild(ctx, src, build.ImageBuildOptions{
		Version:     build.BuilderV1,
		Dockerfile:  req.Containerfile,
		Tags:        req.Tags,
		Labels:      req.Labels,
		BuildArgs:   req.BuildArgs,
		Remove:      true,
		ForceRemove: true,
		PullParent:  req.Pull,
	})
	if err != nil {
		if rerr := src.Err(); rerr != nil {
			return "", fmt.Errorf("%s: reading the build context: %w", op, rerr)
		}
		if isConnErr(err) || ctx.Err() != nil {
			return "", e.wrap(op, err)
		}
		// Refused before the first step: e.g. the Containerfile is missing
		// from the context or does not parse.
		return "", fmt.Errorf("%s: %w", op, &engine.BuildError{Message: err.Error()})
	}
	defer resp.Body.Close()
	id, err := parseBuildStream(resp.Body, progress)
	if err != nil {
		if rerr := src.Err(); rerr != nil {
			return "", fmt.Errorf("%s: reading the build context: %w", op, rerr)
		}
		var be *engine.BuildError
		if errors.As(err, &be) {
			return "", fmt.Errorf("%s: %w", op, err)
		}
		return "", e.wrap(op, err)
	}
	e.log.Debug("image built", "id", id, "tags", req.Tags)
	return id, nil
}

// stepLine matches the classic builder's step headers, "Step 3/7 : RUN ...".
var stepLine = regexp.MustCompile(`^Step \d+/\d+ : `)

// buildOutputTail is how many lines of the failing step's output a
// BuildError keeps.
const buildOutputTail = 100

// parseBuildStream turns a classic build's message stream into events and
// returns the image ID from the final aux message.
func parseBuildStream(r io.Reader, progress func(engine.BuildEvent)) (string, error) {
	d := newStreamDecoder(r)
	var (
		id   string
		step string
		tail []string
	)
	output := func(line string) {
		if strings.TrimSpace(line) == "" {
			return
		}
		if stepLine.MatchString(line) {
			step = line
			tail = tail[:0]
			progress(engine.BuildEvent{Step: line})
			return
		}
		if len(tail) == buildOutputTail {
			tail = append(tail[:0], tail[1:]...)
		}
		tail = append(tail, line)
		progress(engine.BuildEvent{Stream: line})
	}
	for {
		m, err := d.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		if msg := m.errorMessage(); msg != "" {
			if line, ok := d.flush(); ok {
				output(line)
			}
			return "", &engine.BuildError{Step: step, Message: msg, Output: strings.Join(tail, "\n")}
		}
		for _, line := range d.lines(m.Stream) {
			output(line)
		}
		if m.Status != "" && !m.hasProgress() {
			// Pull progress of the base image (only when req.Pull is set).
			if m.ID != "" {
				output(m.ID + ": " + m.Status)
			} else {
				output(m.Status)
			}
		}
		if len(m.Aux) > 0 {
			var res build.Result
			if err := json.Unmarshal(m.Aux, &res); err == nil && res.ID != "" {
				id = res.ID
			}
		}
	}
	if line, ok := d.flush(); ok {
		output(line)
	}
	if id == "" {
		return "", errors.New("the engine finished the build without reporting an image ID")
	}
	return id, nil
}
