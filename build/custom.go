package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// customExcludes keep artifacts out of a custom build's context, so that a
// "COPY . ." never packs the previous artifact into the next one.
var customExcludes = []string{"**/*.ociapp"}

// custom builds the project's own Containerfile with the project root as the
// context, honouring its .dockerignore.
func (b *builder) custom(ctx context.Context, out string) error {
	b.phase("preparing the build context")
	ignore, err := readIgnoreFile(b.p.Root)
	if err != nil {
		return err
	}
	c := newContext()
	if err := c.addDir("", b.p.Root, append(slices.Clone(customExcludes), ignore...)); err != nil {
		return fmt.Errorf("adding the project: %w", err)
	}
	// Like the docker CLI: the Containerfile is sent even when
	// .dockerignore excludes it, or the engine could not read it.
	if _, ok := c.entries[b.p.Containerfile]; !ok {
		data, err := os.ReadFile(filepath.Join(b.p.Root, filepath.FromSlash(b.p.Containerfile)))
		if err != nil {
			return fmt.Errorf("reading the Containerfile: %w", err)
		}
		c.addData(b.p.Containerfile, data)
	}
	ctxFile, err := c.writeTemp()
	if err != nil {
		return fmt.Errorf("writing the build context: %w", err)
	}
	defer os.Remove(ctxFile.Name())
	defer ctxFile.Close()

	img, cleanup, err := b.engineBuild(ctx, ctxFile, b.p.Containerfile)
	if err != nil {
		return err
	}
	defer cleanup()
	return b.write(ctx, out, img, b.metadata())
}
