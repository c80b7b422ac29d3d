package runtime

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// Engine is what the runtime needs from a container engine; engine.Engine
// (and so engine/docker) satisfies it.
type Engine interface {
	ImageExists(ctx context.Context, ref string) (bool, error)
	LoadImage(ctx context.Context, archive io.Reader) ([]string, error)
	CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error)
	StartContainer(ctx context.Context, id string) error
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	RemoveContainer(ctx context.Context, id string) error
	InspectContainer(ctx context.Context, id string) (engine.ContainerState, error)
	WaitContainer(ctx context.Context, id string) (engine.ContainerState, error)
	ContainerLogs(ctx context.Context, id string, tailLines int) (string, error)
	ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerSummary, error)
}

// session is one persistent, multiplexed connection to a container's app
// server; *protocol.Client satisfies it.
type session interface {
	Call(ctx context.Context, payload []byte) ([]byte, error)
	Done() <-chan struct{}
	Err() error
	Close() error
}

// errNotReady is what a dialFunc returns while the socket does not exist.
var errNotReady = errors.New("socket not there yet")

// dialFunc connects to the app server at socketPath.
type dialFunc func(ctx context.Context, socketPath string) (session, error)

// protocolDialer returns the real dialFunc: it checks for the socket file
// first, so that polling a starting container costs a stat, not a connect.
func protocolDialer(opts ...protocol.ClientOption) dialFunc {
	return func(ctx context.Context, socketPath string) (session, error) {
		if _, err := os.Stat(socketPath); errors.Is(err, fs.ErrNotExist) {
			return nil, errNotReady
		}
		c, err := protocol.Dial(ctx, socketPath, opts...)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// artifactInfo is what the runtime needs to know about an artifact.
type artifactInfo struct {
	// Digest is the content digest (the image manifest's), the artifact's
	// identity; ConfigDigest is the image config's.
	Digest       string
	ConfigDigest string
	Name         string
	Version      string
	// User is the user the image runs as ("" for root).
	User string
	// archive writes a tar of the image that the engine can load.
	archive func(ctx context.Context, w io.Writer) error
}

func (a artifactInfo) label() string {
	if a.Name == "" {
		return a.Digest
	}
	if a.Version == "" {
		return a.Name
	}
	return a.Name + " " + a.Version
}

// openFunc reads and verifies the artifact file at path, stopping when ctx
// ends.
type openFunc func(ctx context.Context, path string) (artifactInfo, error)

func engineUnavailable(err error) bool {
	var ue *engine.UnavailableError
	return errors.As(err, &ue)
}
