// Package engine defines the container engine operations the runtime and builder need.
package engine

import (
	"context"
	"io"
	"time"
)

// Engine is the set of container operations the runtime needs. The Docker
// implementation lives in engine/docker; other engines (a daemonless runc
// engine, Kubernetes) implement the same contract.
type Engine interface {
	// Ping checks that the engine answers; a failure is *UnavailableError.
	Ping(ctx context.Context) error
	// ImageExists reports whether ref (name:tag, or an image ID "sha256:...")
	// names an image in the engine. See docs/engine.md for which IDs each
	// image store accepts.
	ImageExists(ctx context.Context, ref string) (bool, error)
	// LoadImage loads a docker-save or OCI layout archive and returns what the
	// engine reports loaded: "sha256:<id>" IDs and/or "name:tag" refs.
	LoadImage(ctx context.Context, archive io.Reader) ([]string, error)
	// CreateContainer creates (but does not start) a container.
	CreateContainer(ctx context.Context, spec ContainerSpec) (id string, err error)
	StartContainer(ctx context.Context, id string) error
	// StopContainer sends SIGTERM, then kills the container after grace.
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	// RemoveContainer force-removes a container; a missing container is not an error.
	RemoveContainer(ctx context.Context, id string) error
	InspectContainer(ctx context.Context, id string) (ContainerState, error)
	// WaitContainer blocks until the container is not running (or ctx ends)
	// and returns its final state. It returns at once for a container that
	// has already exited.
	WaitContainer(ctx context.Context, id string) (ContainerState, error)
	// ContainerLogs returns the last tailLines lines of stdout and stderr,
	// interleaved as written; tailLines <= 0 returns everything.
	ContainerLogs(ctx context.Context, id string, tailLines int) (string, error)
	// ListContainers lists containers in every state that carry all the
	// given labels (an empty value matches any value of that key).
	ListContainers(ctx context.Context, labels map[string]string) ([]ContainerSummary, error)
}

// ContainerSpec describes a container to create. The zero value of every
// optional field means "engine or image default".
type ContainerSpec struct {
	Name   string // optional; the engine generates one when empty
	Image  string // name:tag or image ID
	Cmd    []string
	Env    []string // KEY=value
	User   string   // "": image default
	Labels map[string]string
	Mounts []Mount // bind mounts

	Init            bool              // run an init process as PID 1 (docker --init)
	ReadOnlyRootfs  bool              // mount the root filesystem read-only
	Tmpfs           map[string]string // path -> mount options, e.g. "/tmp": "rw,noexec,nosuid,size=64m"
	CapDrop         []string          // e.g. ["ALL"]
	NoNewPrivileges bool
	PidsLimit       int64  // 0: unlimited
	MemoryBytes     int64  // 0: unlimited; swap is limited to the same value so the limit is real
	NanoCPUs        int64  // 0: unlimited; 1e9 is one CPU
	NetworkMode     string // "": engine default; "none" disables networking
	// StopTimeout is the grace between SIGTERM and SIGKILL that the engine
	// applies when it stops the container on its own (Kubernetes' grace
	// period); 0: the engine's default.
	StopTimeout time.Duration
}

// Mount is a bind mount of a host path into the container.
type Mount struct {
	Source   string // host path
	Target   string // path in the container
	ReadOnly bool
}

// ContainerState is a container's state as the engine reports it.
type ContainerState struct {
	ID         string
	Running    bool
	Status     string // "created", "running", "exited", ...
	ExitCode   int
	OOMKilled  bool
	Error      string // the engine's error, e.g. why the container failed to start
	StartedAt  time.Time
	FinishedAt time.Time
}

// ContainerSummary is one entry of ListContainers.
type ContainerSummary struct {
	ID     string
	Names  []string
	Image  string
	Labels map[string]string
	State  string
}

// BuildRequest is an image build from a Containerfile.
type BuildRequest struct {
	Context       io.Reader // tar of the build context
	Containerfile string    // path inside the context; "" means "Dockerfile"
	Tags          []string
	Labels        map[string]string
	BuildArgs     map[string]*string
	// Pull asks the engine to pull newer versions of the base images. When
	// false a locally present base image is used as is; one that is
	// missing is still fetched by the engine, and fails without a registry.
	Pull bool
}

// BuildEvent is one line of build progress. Step is set when a new step
// starts ("Step 3/7 : RUN ..."); Stream is a line of the step's output.
type BuildEvent struct {
	Step   string
	Stream string
}

// ImageRemover is implemented by engines that can remove images; the
// runtime uses it to remove the images it loaded once no container uses
// them.
type ImageRemover interface {
	// RemoveImage removes the image ref (an image ID) unless a container
	// uses it or it is otherwise referenced (an error wrapping ErrInUse);
	// a missing image is not an error.
	RemoveImage(ctx context.Context, ref string) error
}

// CgroupIDer is implemented by engines whose container IDs do not name
// their containers' cgroups (the Kubernetes engine's are pod names):
// CgroupID returns the ID that does, for reading a container's CPU time.
type CgroupIDer interface {
	CgroupID(ctx context.Context, id string) (string, error)
}

// Builder is implemented by engines that can build images from a
// Containerfile and export them.
type Builder interface {
	// BuildImage builds an image and returns its ID ("sha256:..."),
	// reporting progress to progress when it is not nil.
	BuildImage(ctx context.Context, req BuildRequest, progress func(BuildEvent)) (string, error)
	// SaveImage streams a docker-save archive of the given refs.
	SaveImage(ctx context.Context, refs ...string) (io.ReadCloser, error)
}
