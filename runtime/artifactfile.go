package runtime

import (
	"context"
	"io"
	"maps"
	"slices"

	"github.com/ociapp/ociapp/artifact"
)

// openArtifactFile is the real openFunc: it verifies every blob's digest
// (once per file version, see resolver) and keeps the handle that writes a
// Docker-loadable archive of it. Decompressing the layers is left to that
// archive, so it is paid only when an engine must load the image.
func openArtifactFile(ctx context.Context, path string) (artifactInfo, error) {
	a, err := artifact.Open(ctx, path, artifact.WithDeferredLayerCheck())
	if err != nil {
		return artifactInfo{}, &ArtifactError{Path: path, Err: err}
	}
	return artifactInfo{
		Artifact: Artifact{
			Path:         path,
			Size:         a.Size,
			Digest:       a.Digest.String(),
			ConfigDigest: a.ConfigDigest.String(),
			Name:         a.Metadata.Name,
			Version:      a.Metadata.Version,
		},
		User:        a.Config.Config.User,
		Volumes:     slices.Sorted(maps.Keys(a.Config.Config.Volumes)),
		Labels:      a.Config.Config.Labels,
		resolveUser: a.ResolveUser,
		archive: func(ctx context.Context, w io.Writer) error {
			return writeUntagged(ctx, w, a.WriteDockerArchive)
		},
	}, nil
}
