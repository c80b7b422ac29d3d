package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"

	"github.com/ociapp/ociapp/engine"
)

// labelConfigDigest is the containerd image label recording the config
// digest of an image this engine imported, so that ImageExists answers for
// both of an artifact's identities.
const labelConfigDigest = "dev.ociapp.image.config-digest"

// unnamedRepository names imported images that carry no name of their own.
const unnamedRepository = "ociapp.local/image"

// ImageExists reports whether the node's containerd has ref, unpacked for
// the kubelet's snapshotter: "name:tag" (normalized as the kubelet does,
// "app:1" is "docker.io/library/app:1"), or "sha256:<hex>", the manifest or
// the config digest of an image.
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	if ref == "" {
		return false, errors.New("checking image: empty reference")
	}
	img, ok, err := e.findImage(ctx, ref)
	if err != nil || !ok {
		return false, err
	}
	unpacked, err := containerd.NewImageWithPlatform(e.ctrd, img, platforms.Default()).IsUnpacked(ctx, e.snapshotter)
	if err != nil {
		return false, e.wrapContainerd(fmt.Sprintf("checking image %s", ref), err)
	}
	return unpacked, nil
}

// findImage finds the containerd image record for ref, preferring a name
// pinned to its digest ("repo@sha256:..."), which no later import moves.
func (e *Engine) findImage(ctx context.Context, ref string) (images.Image, bool, error) {
	var filters []string
	if d, err := digest.Parse(ref); err == nil {
		filters = []string{
			"target.digest==" + strconv.Quote(d.String()),
			"labels." + strconv.Quote(labelConfigDigest) + "==" + strconv.Quote(d.String()),
		}
	} else {
		named, err := reference.ParseDockerRef(ref)
		if err != nil {
			return images.Image{}, false, fmt.Errorf("checking image %s: %w", ref, err)
		}
		filters = []string{"name==" + strconv.Quote(named.String())}
	}
	list, err := e.ctrd.ImageService().List(ctx, filters...)
	if err != nil {
		return images.Image{}, false, e.wrapContainerd(fmt.Sprintf("looking for image %s", ref), err)
	}
	if len(list) == 0 {
		return images.Image{}, false, nil
	}
	slices.SortFunc(list, func(a, b images.Image) int {
		return strings.Compare(a.Name, b.Name)
	})
	for _, img := range list {
		if strings.Contains(img.Name, "@") {
			return img, true, nil
		}
	}
	return list[0], true, nil
}

// podImage is the name the kubelet finds ref under: for a digest, the
// name of the image that has it.
func (e *Engine) podImage(ctx context.Context, ref string) (string, error) {
	if _, err := digest.Parse(ref); err != nil {
		return ref, nil
	}
	img, ok, err := e.findImage(ctx, ref)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("creating pod: no image %s on node %s: %w", ref, e.node, engine.ErrNotFound)
	}
	return img.Name, nil
}

// LoadImage imports an OCI layout or docker-save archive into the node's
// containerd (namespace k8s.io), unpacks it for the kubelet and names each
// image also by its digest ("repo@sha256:<manifest>"), the name pods use.
// It returns the manifest digests and names. An archive containerd rejects
// gives *engine.LoadError.
func (e *Engine) LoadImage(ctx context.Context, archive io.Reader) ([]string, error) {
	const op = "importing image into containerd"
	imgs, err := e.ctrd.Import(ctx, archive,
		containerd.WithImportPlatform(platforms.Default()),
		containerd.WithDigestRef(func(d digest.Digest) string { return unnamedRepository + "@" + d.String() }),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }),
	)
	if err != nil {
		werr := e.wrapContainerd(op, err)
		if errors.As(werr, new(*engine.UnavailableError)) || ctx.Err() != nil {
			return nil, werr
		}
		return nil, fmt.Errorf("%s: %w", op, &engine.LoadError{Message: err.Error()})
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%s: %w", op, &engine.LoadError{Message: "the archive holds no image for platform " + platforms.DefaultString()})
	}
	var loaded []string
	is := e.ctrd.ImageService()
	for _, img := range imgs {
		image := containerd.NewImageWithPlatform(e.ctrd, img, platforms.Default())
		cfg, err := image.Config(ctx)
		if err != nil {
			return nil, e.wrapContainerd(fmt.Sprintf("%s: reading the config of %s", op, img.Name), err)
		}
		if err := image.Unpack(ctx, e.snapshotter); err != nil {
			return nil, e.wrapContainerd(fmt.Sprintf("%s: unpacking %s", op, img.Name), err)
		}
		pinned := images.Image{
			Name:   pinnedName(img.Name, img.Target.Digest),
			Target: img.Target,
			Labels: map[string]string{labelConfigDigest: cfg.Digest.String()},
		}
		if _, err := is.Update(ctx, pinned, "target", "labels."+labelConfigDigest); err != nil {
			if _, err = is.Create(ctx, pinned); err != nil && !errors.Is(e.wrapContainerd("", err), engine.ErrNotFound) {
				return nil, e.wrapContainerd(fmt.Sprintf("%s: naming %s", op, pinned.Name), err)
			}
		}
		for _, s := range []string{img.Target.Digest.String(), img.Name} {
			if !slices.Contains(loaded, s) {
				loaded = append(loaded, s)
			}
		}
	}
	e.log.Debug("image imported", "images", loaded)
	return loaded, nil
}

// pinnedName is name's repository at digest d: "docker.io/library/app:1"
// gives "docker.io/library/app@sha256:...".
func pinnedName(name string, d digest.Digest) string {
	if named, err := reference.ParseNormalizedNamed(name); err == nil {
		return reference.TrimNamed(named).String() + "@" + d.String()
	}
	return unnamedRepository + "@" + d.String()
}

// RemoveImage deletes every image record of ref (a name, or a manifest or
// config digest), and the other names of the same image, from the node's
// containerd; containerd's garbage collection frees the content. An image
// that a pod of the engine's on this node still uses is left alone (an
// error wrapping engine.ErrInUse), as Docker refuses to remove an image a
// container uses. A missing image is not an error.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	is := e.ctrd.ImageService()
	for {
		img, ok, err := e.findImage(ctx, ref)
		if err != nil || !ok {
			return err
		}
		same, err := is.List(ctx, "target.digest=="+strconv.Quote(img.Target.Digest.String()))
		if err != nil {
			return e.wrapContainerd(fmt.Sprintf("removing image %s", ref), err)
		}
		same = append(same, img)
		if pod, err := e.podUsing(ctx, same); err != nil || pod != "" {
			if err == nil {
				err = fmt.Errorf("removing image %s: pod %s uses it: %w", ref, pod, engine.ErrInUse)
			}
			return err
		}
		for _, s := range same {
			if err := is.Delete(ctx, s.Name); err != nil && !errors.Is(e.wrapContainerd("", err), engine.ErrNotFound) {
				return e.wrapContainerd(fmt.Sprintf("removing image %s", s.Name), err)
			}
		}
	}
}

// podUsing returns a pod of this engine's on its node that has not ended
// and runs one of imgs, or "".
func (e *Engine) podUsing(ctx context.Context, imgs []images.Image) (string, error) {
	list, err := e.ListContainers(ctx, nil)
	if err != nil {
		return "", err
	}
	for _, c := range list {
		if c.State == "exited" {
			continue
		}
		for _, img := range imgs {
			if c.Image == img.Name {
				return c.ID, nil
			}
		}
	}
	return "", nil
}
