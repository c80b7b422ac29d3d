// Package api defines the runtime daemon's HTTP routes, media types and error bodies, shared with clients.
package api

import (
	"io/fs"
	"net/url"
	"strings"

	"github.com/ociapp/ociapp/internal/fileid"
	"github.com/ociapp/ociapp/protocol"
)

// Version is the path prefix of every versioned route.
const Version = "/v1"

// Media types of request and response bodies.
const (
	MediaJSON    = "application/json"
	MediaMsgpack = "application/msgpack"
	// MediaArtifact is the type of an uploaded .ociapp file.
	MediaArtifact = "application/vnd.ociapp.artifact"
)

// Headers the daemon sets on artifact responses.
const (
	// HeaderArtifactDigest carries the artifact's identity (the digest of
	// its image manifest), as opposed to the upload digest in the path.
	HeaderArtifactDigest = "Ociapp-Artifact-Digest"
	// HeaderErrorCode repeats an error body's code, so a client can tell
	// the error without decoding the body (e.g. on a HEAD request).
	HeaderErrorCode = "Ociapp-Error-Code"
)

// Size limits the daemon applies by default.
const (
	DefaultMaxArtifactSize int64 = 2 << 30
	// DefaultMaxRequestSize is also the largest: a request travels to its
	// container in one frame of at most protocol.DefaultMaxFrameSize, which
	// holds the payload and its envelope (keys and request id, well under
	// a KiB). A larger payload would be refused by the application server,
	// closing the connection and failing every request on it.
	DefaultMaxRequestSize int64 = protocol.DefaultMaxFrameSize - 1<<10
)

// ValidDigest reports whether d is a digest the daemon accepts in a path:
// "sha256:" and 64 lowercase hex digits.
func ValidDigest(d string) bool {
	hexd, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexd) != 64 {
		return false
	}
	for _, c := range hexd {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ArtifactPath is the route of one artifact: HEAD, GET and PUT.
func ArtifactPath(digest string) string { return Version + "/artifacts/" + digest }

// ExecutePath is the route that executes a request against an artifact.
func ExecutePath(digest string) string { return ArtifactPath(digest) + "/execute" }

// StreamPath is the route that executes a request against an artifact and
// streams its items as NDJSON.
func StreamPath(digest string) string { return ArtifactPath(digest) + "/stream" }

// LocalStreamPath is StreamPath for an artifact named by its path, with
// the query of LocalExecutePath.
const LocalStreamPath = Version + "/local/stream"

// MediaNDJSON is the type of a stream's answer: one JSON object a line.
const MediaNDJSON = "application/x-ndjson"

// LocalExecutePath is the route that executes a request against an
// artifact the daemon opens by its path on the daemon's host: only on a
// Unix-socket listener (docs/daemon.md, "Artifacts on the daemon's host").
const LocalExecutePath = Version + "/local/execute"

// LocalExecuteURL is LocalExecutePath with the query naming the file at
// path (absolute) with the identity (FileIdentity) the caller found: the
// daemon opens it only if it finds the same file there.
func LocalExecuteURL(path, identity string) string {
	return LocalExecutePath + "?" + url.Values{"path": {path}, "file": {identity}}.Encode()
}

// FileIdentity is one version of a file in words: device, inode, size and
// modification time (ns). A rebuilt file, or another file at the same
// path, has another.
func FileIdentity(fi fs.FileInfo) string { return fileid.Of(fi).String() }

// Fixed routes.
const (
	ArtifactsPath  = Version + "/artifacts"
	PoolsPath      = Version + "/pools"
	ContainersPath = Version + "/containers"
	HealthPath     = "/healthz"
	MetricsPath    = "/metrics"
)

// Artifact describes a stored artifact: the answer to GET and PUT
// /v1/artifacts/{digest}, and an entry of GET /v1/artifacts.
type Artifact struct {
	// Digest is the upload digest: sha256 of the file's bytes.
	Digest string `json:"digest"`
	// ArtifactDigest is the artifact's identity, the digest of its image
	// manifest; pools are keyed by it.
	ArtifactDigest string `json:"artifact_digest"`
	Name           string `json:"name"`
	Version        string `json:"version"`
	Size           int64  `json:"size"`
}

// ArtifactList is the answer to GET /v1/artifacts.
type ArtifactList struct {
	Artifacts []Artifact `json:"artifacts"`
}

// Pool describes the containers of one artifact, as GET /v1/pools lists them.
type Pool struct {
	Artifact       string `json:"artifact"`
	ArtifactDigest string `json:"artifact_digest"`
	Containers     int    `json:"containers"`
	Starting       int    `json:"starting"`
	InFlight       int    `json:"in_flight"`
	Queued         int    `json:"queued"`
}

// PoolList is the answer to GET /v1/pools.
type PoolList struct {
	Pools []Pool `json:"pools"`
}

// Container is one container of the daemon's runtime, as GET /v1/containers
// lists them.
type Container struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Artifact       string `json:"artifact"`
	ArtifactDigest string `json:"artifact_digest"`
	State          string `json:"state"`
}

// ContainerList is the answer to GET /v1/containers.
type ContainerList struct {
	Containers []Container `json:"containers"`
}

// Health is the answer to GET /healthz.
type Health struct {
	Status string `json:"status"`
	API    string `json:"api"`
}
