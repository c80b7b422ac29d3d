package runtime

import (
	"context"
	"io"

	"github.com/ociapp/ociapp/artifact"
)

// openArtifactFile is the real openFunc: it verifies every blob of the
// file (once per file version, see resolver) and keeps the handle that
// writes a Docker-loadable archive of it.
func openArtifactFile(ctx context.Context, path string) (artifactInfo, error) {
	a, err := artifact.Open(ctx, path)
	if err != nil {
		return artifactInfo{}, &ArtifactError{Path: path, Err: err}
	}
	return artifactInfo{
		Digest:       a.Digest.String(),
		ConfigDigest: a.ConfigDigest.String(),
		Name:         a.Metadata.Name,
		Version:      a.Metadata.Version,
		User:         a.Config.Config.User,
		archive: func(ctx context.Context, w io.Writer) error {
			return a.WriteDockerArchive(ctx, w)
		},
	}, nil
}
