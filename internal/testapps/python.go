package testapps

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/python"
)

// PythonBaseImage is the local base image scripts/ensure-base-images.sh
// makes: Debian's Python with pydantic and msgpack, no registry needed.
const PythonBaseImage = "ociapp-local/python:3.13"

// PythonApp is a Python project packaged the way the original builder
// packaged one: the project and the SDK pip-installed into the base image
// as root, tini as entrypoint, `ociapp serve --app ENTRYPOINT` as command,
// exported as an OCI image layout alone with zstd layers (what `docker
// buildx build --output type=oci,compression=zstd` writes), no ociapp
// annotations. The runtime must run such files unchanged.
type PythonApp struct {
	Name, Version string
	// Dir is the project directory (pyproject.toml and sources).
	Dir        string
	Entrypoint string // module:attribute
	// Capabilities, when set, are declared in the layout's index
	// (dev.ociapp.capabilities), the one ociapp annotation such an app
	// then has.
	Capabilities []string
}

// BuildPython builds app with the engine and writes its artifact at path.
func BuildPython(ctx context.Context, b engine.Builder, app PythonApp, path string) error {
	buildCtx, err := pythonContext(app)
	if err != nil {
		return err
	}
	ref := fmt.Sprintf("ociapp-build/%s:%s", app.Name, app.Version)
	if _, err := b.BuildImage(ctx, engine.BuildRequest{Context: bytes.NewReader(buildCtx), Tags: []string{ref}}, nil); err != nil {
		return fmt.Errorf("building %s: %w", app.Name, err)
	}
	saved, err := b.SaveImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("saving %s: %w", ref, err)
	}
	tmp, err := os.MkdirTemp("", "testapp-py-")
	if err != nil {
		saved.Close()
		return err
	}
	defer os.RemoveAll(tmp)
	savedPath := filepath.Join(tmp, "saved.tar")
	f, err := os.Create(savedPath)
	if err == nil {
		_, err = io.Copy(f, saved)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	saved.Close()
	if err != nil {
		return fmt.Errorf("saving %s: %w", ref, err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	img, err := tarball.ImageFromPath(savedPath, &tag)
	if err != nil {
		return fmt.Errorf("reading the saved image: %w", err)
	}
	img, err = asBuildxOCI(img)
	if err != nil {
		return err
	}
	return writeLayoutTar(img, tag, app.Capabilities, filepath.Join(tmp, "layout"), path)
}

// pythonContext is the build context: a Containerfile, the SDK and the
// project.
func pythonContext(app PythonApp) ([]byte, error) {
	containerfile := fmt.Sprintf(`FROM %s
COPY sdk /tmp/sdk
COPY app /tmp/app
RUN pip install --quiet --no-index --no-build-isolation --no-cache-dir /tmp/sdk /tmp/app && rm -rf /tmp/sdk /tmp/app
ENTRYPOINT ["tini", "--"]
CMD ["ociapp", "serve", "--app", %q]
`, PythonBaseImage, app.Entrypoint)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", []byte(containerfile)); err != nil {
		return nil, err
	}
	copyTree := func(fsys fs.FS, prefix string) error {
		return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if d != nil && d.IsDir() && (d.Name() == "__pycache__" || d.Name() == "build" || d.Name() == "dist" || strings.HasSuffix(d.Name(), ".egg-info")) {
					return fs.SkipDir
				}
				return err
			}
			data, err := fs.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			return add(prefix+"/"+p, data)
		})
	}
	if err := copyTree(python.SDK(), "sdk"); err != nil {
		return nil, fmt.Errorf("packing the SDK: %w", err)
	}
	if err := copyTree(os.DirFS(app.Dir), "app"); err != nil {
		return nil, fmt.Errorf("packing %s: %w", app.Dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// asBuildxOCI recompresses the layers with zstd under OCI media types.
func asBuildxOCI(img v1.Image) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	out = mutate.ConfigMediaType(out, types.OCIConfigJSON)
	for _, l := range layers {
		z, err := tarball.LayerFromOpener(l.Uncompressed, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
		if err != nil {
			return nil, err
		}
		if out, err = mutate.AppendLayers(out, z); err != nil {
			return nil, err
		}
	}
	return mutate.ConfigFile(out, cf)
}

// writeLayoutTar writes img as an OCI layout directory and tars it to
// path, with buildx's index annotations.
func writeLayoutTar(img v1.Image, tag name.Tag, capabilities []string, dir, path string) error {
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := map[string]string{
		"io.containerd.image.name":          "docker.io/" + tag.RepositoryStr() + ":" + tag.TagStr(),
		"org.opencontainers.image.ref.name": tag.TagStr(),
	}
	if len(capabilities) > 0 {
		ann[artifact.AnnotationCapabilities] = strings.Join(capabilities, ",")
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
