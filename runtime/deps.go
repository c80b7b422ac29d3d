package runtime

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

// session is one persistent, multiplexed connection to a container's app
// server; *protocol.Client satisfies it.
type session interface {
	CallWithin(ctx context.Context, payload []byte, timeout time.Duration) ([]byte, error)
	Done() <-chan struct{}
	Err() error
	Close() error
}

// errNotReady is what a dialFunc returns while the socket does not exist.
var errNotReady = errors.New("socket not there yet")

// dialFunc connects to the app server at socketPath, using the protocol
// extensions caps allows.
type dialFunc func(ctx context.Context, socketPath string, caps capabilities) (session, error)

// capabilities are the protocol extensions an artifact declares
// (dev.ociapp.capabilities) that the runtime uses with its containers;
// with an artifact that declares none, the protocol is exactly v1.
type capabilities struct {
	deadline bool // requests carry the time their handler has
	cancel   bool // a request given up is cancelled in the container
	stream   bool // a handler may answer with a stream of items
}

// capabilitiesOf reads an artifact's declared capabilities; names the
// runtime does not use are ignored.
func capabilitiesOf(names []string) capabilities {
	return capabilities{
		deadline: slices.Contains(names, "deadline"),
		cancel:   slices.Contains(names, "cancel"),
		stream:   slices.Contains(names, "stream"),
	}
}

// protocolDialer returns the real dialFunc: it checks for the socket file
// first, so that polling a starting container costs a stat, not a connect.
func protocolDialer(opts ...protocol.ClientOption) dialFunc {
	return func(ctx context.Context, socketPath string, caps capabilities) (session, error) {
		if _, err := os.Stat(socketPath); errors.Is(err, fs.ErrNotExist) {
			return nil, errNotReady
		}
		connOpts := slices.Clip(opts)
		if caps.deadline {
			connOpts = append(connOpts, protocol.WithDeadlines())
		}
		if caps.cancel {
			connOpts = append(connOpts, protocol.WithCancel())
		}
		c, err := protocol.Dial(ctx, socketPath, connOpts...)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Artifact describes an artifact file as the runtime verified it.
type Artifact struct {
	// Path is the file as the caller named it, and Size its size in bytes.
	Path string
	Size int64
	// Digest is the content digest (the image manifest's), the artifact's
	// identity; ConfigDigest is the image config's.
	Digest       string
	ConfigDigest string
	// Name and Version are the application's, from the artifact's
	// metadata.
	Name    string
	Version string
}

// artifactInfo is what the runtime needs to know about an artifact.
type artifactInfo struct {
	Artifact
	// User is the image config's user ("" for root), Volumes its VOLUME
	// paths and Labels its labels: what the runtime overrides.
	User    string
	Volumes []string
	Labels  map[string]string
	// resolveUser resolves User to numbers through the image's own
	// /etc/passwd and /etc/group; nil resolves numeric users only. The
	// resolver makes it answer from, and record its answer in, the state
	// directory (verifiedFiles.userResolver), by ConfigDigest and User.
	// It is the image's user: the policy on root is applied after it
	// (env.containerUser).
	resolveUser func(ctx context.Context) (artifact.ExecUser, error)
	// archive writes a tar of the image that the engine can load, read
	// from the file as verified (at Path, or at another name of this
	// version of the file: one verification serves every name).
	archive func(ctx context.Context, w io.Writer) error
	// fileDigest is the digest of the whole file, as verified: what
	// verifiedFiles remembers.
	fileDigest string
	// caps are the protocol extensions the artifact declares.
	caps capabilities
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
// ends. verified is the digest of the whole file when this version of it
// was verified before (verifiedFiles), else "".
type openFunc func(ctx context.Context, path string, verified string) (artifactInfo, error)

func engineUnavailable(err error) bool {
	var ue *engine.UnavailableError
	return errors.As(err, &ue)
}
