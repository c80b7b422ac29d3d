package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/ociapp/ociapp/engine"
)

// ImageExists reports whether ref names an image: "name:tag", or an image
// ID "sha256:<hex>" as the daemon's image store defines it (the config
// digest on the classic store, the manifest or index digest on the
// containerd store; see docs/engine.md).
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	if ref == "" {
		return false, errors.New("checking image: empty reference")
	}
	_, err := e.cli.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, e.wrap(fmt.Sprintf("checking image %s", ref), err)
	}
}

// LoadImage loads a docker-save archive (any daemon) or an OCI layout
// archive (the containerd image store; Docker 20.10's classic store needs
// the docker-save manifest.json) and returns what the daemon reports loaded: "sha256:<id>" for untagged
// images and "name:tag" for tagged ones. A daemon that rejects the archive
// gives *engine.LoadError.
func (e *Engine) LoadImage(ctx context.Context, archive io.Reader) ([]string, error) {
	const op = "loading image"
	src := &recordingReader{r: archive}
	resp, err := e.cli.ImageLoad(ctx, src, client.ImageLoadWithQuiet(true))
	if err != nil {
		if rerr := src.Err(); rerr != nil {
			// The client reports a failing request body as a connection
			// failure; the real cause is on our side.
			return nil, fmt.Errorf("%s: reading the archive: %w", op, rerr)
		}
		if isConnErr(err) || ctx.Err() != nil {
			return nil, e.wrap(op, err)
		}
		return nil, fmt.Errorf("%s: %w", op, &engine.LoadError{Message: err.Error()})
	}
	defer resp.Body.Close()
	loaded, err := parseLoadStream(resp.Body)
	if err != nil {
		if rerr := src.Err(); rerr != nil {
			return nil, fmt.Errorf("%s: reading the archive: %w", op, rerr)
		}
		var le *engine.LoadError
		if errors.As(err, &le) {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		return nil, e.wrap(op, err)
	}
	e.log.Debug("image loaded", "images", loaded)
	return loaded, nil
}

// parseLoadStream collects the images a load response reports ("Loaded
// image ID: sha256:..." and "Loaded image: name:tag" lines) and turns an
// error message into *engine.LoadError.
func parseLoadStream(r io.Reader) ([]string, error) {
	d := newStreamDecoder(r)
	var loaded []string
	collect := func(line string) {
		if id, ok := strings.CutPrefix(line, "Loaded image ID: "); ok {
			loaded = append(loaded, strings.TrimSpace(id))
		} else if ref, ok := strings.CutPrefix(line, "Loaded image: "); ok {
			loaded = append(loaded, strings.TrimSpace(ref))
		}
	}
	for {
		m, err := d.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if msg := m.errorMessage(); msg != "" {
			return nil, &engine.LoadError{Message: msg}
		}
		for _, line := range d.lines(m.Stream) {
			collect(line)
		}
	}
	if line, ok := d.flush(); ok {
		collect(line)
	}
	return loaded, nil
}

// SaveImage streams a docker-save archive of refs. The caller must close
// it; ctx must stay live until the stream has been read.
func (e *Engine) SaveImage(ctx context.Context, refs ...string) (io.ReadCloser, error) {
	if len(refs) == 0 {
		return nil, errors.New("saving images: no image named")
	}
	rc, err := e.cli.ImageSave(ctx, refs)
	if err != nil {
		return nil, e.wrap(fmt.Sprintf("saving images %s", strings.Join(refs, ", ")), err)
	}
	return rc, nil
}

// RemoveImage removes the image ref without force: one that a container
// uses, or that has several names, is refused with an error wrapping
// engine.ErrInUse. A missing image is not an error.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	if ref == "" {
		return errors.New("removing image: empty reference")
	}
	_, err := e.cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err):
		return fmt.Errorf("removing image %s: %w: %w", ref, engine.ErrInUse, err)
	default:
		return e.wrap(fmt.Sprintf("removing image %s", ref), err)
	}
}

// recordingReader remembers the first error of the reader it wraps, so a
// failing upload can be told apart from a failing daemon. The HTTP
// transport reads it from its own goroutine, hence the lock.
type recordingReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	return n, err
}

// Err returns the first error the wrapped reader returned, other than io.EOF.
func (r *recordingReader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
