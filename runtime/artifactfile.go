package runtime

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/ociapp/ociapp/artifact"
)

// openArtifactFile is the real openFunc: it verifies every blob's digest
// (once per file version, see resolver; a version verified before only
// has its documents hashed, see artifact.WithVerifiedFile) and keeps the
// handle that writes a Docker-loadable archive of it. Decompressing the
// layers is left to that archive, so it is paid only when an engine must
// load the image, and to the user's resolution (artifact.ResolveUser),
// paid once per image config and state directory (see
// verifiedFiles.userResolver).
func openArtifactFile(ctx context.Context, path string, verified string) (artifactInfo, error) {
	opts := []artifact.OpenOption{artifact.WithDeferredLayerCheck()}
	if verified != "" {
		h, err := v1.NewHash(verified)
		if err != nil {
			return artifactInfo{}, fmt.Errorf("the record of a verified file: %w", err)
		}
		opts = append(opts, artifact.WithVerifiedFile(h))
	}
	a, err := artifact.Open(ctx, path, opts...)
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
		fileDigest: a.FileDigest().String(),
		caps:       capabilitiesOf(a.Metadata.Capabilities),
	}, nil
}
