package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/ociapp/ociapp/engine"
)

// CreateContainer creates a container from spec. A missing image is an
// error wrapping engine.ErrNotFound; nothing is pulled.
func (e *Engine) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	if spec.Image == "" {
		return "", errors.New("creating container: the spec names no image")
	}
	cfg, hc := containerConfig(spec)
	hc.CgroupParent = e.CgroupParent(ctx)
	resp, err := e.cli.ContainerCreate(ctx, cfg, hc, nil, nil, spec.Name)
	if err != nil {
		return "", e.wrap(fmt.Sprintf("creating container from image %s", spec.Image), err)
	}
	for _, w := range resp.Warnings {
		// e.g. "Your kernel does not support swap limit capabilities": the
		// container still runs, with a weaker limit.
		e.log.Warn("docker warning on container create", "container", resp.ID, "warning", w)
	}
	e.log.Debug("container created", "container", resp.ID, "image", spec.Image, "name", spec.Name)
	return resp.ID, nil
}

// containerConfig translates spec into the API's structures, using only
// fields that API 1.25 already has.
func containerConfig(spec engine.ContainerSpec) (*container.Config, *container.HostConfig) {
	cfg := &container.Config{
		Image:  spec.Image,
		Cmd:    spec.Cmd,
		Env:    spec.Env,
		User:   spec.User,
		Labels: spec.Labels,
		// The image's STOPSIGNAL would replace SIGTERM in StopContainer
		// (one that the app ignores, e.g. SIGCONT, turns every graceful
		// stop into a kill after the grace); the contract is SIGTERM.
		StopSignal: "SIGTERM",
		// The image's HEALTHCHECK would have the daemon exec its command
		// in the container periodically; the runtime watches the socket.
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
	}
	hc := &container.HostConfig{
		ReadonlyRootfs: spec.ReadOnlyRootfs,
		Tmpfs:          spec.Tmpfs,
		CapDrop:        spec.CapDrop,
		NetworkMode:    container.NetworkMode(spec.NetworkMode),
	}
	if spec.Init {
		init := true
		hc.Init = &init
	}
	if spec.NoNewPrivileges {
		hc.SecurityOpt = append(hc.SecurityOpt, "no-new-privileges:true")
	}
	if spec.PidsLimit > 0 {
		limit := spec.PidsLimit
		hc.PidsLimit = &limit
	}
	if spec.MemoryBytes > 0 {
		hc.Memory = spec.MemoryBytes
		// Memory+swap equal to memory: no swap, so the limit cannot be
		// evaded by swapping and an overrun ends in the OOM killer.
		hc.MemorySwap = spec.MemoryBytes
	}
	hc.NanoCPUs = spec.NanoCPUs
	for _, m := range spec.Mounts {
		// The mount API (not Binds) refuses a missing source instead of
		// creating it as a root-owned directory.
		hc.Mounts = append(hc.Mounts, mount.Mount{
			Type:     mount.TypeBind,
			Source:   m.Source,
			Target:   m.Target,
			ReadOnly: m.ReadOnly,
		})
	}
	return cfg, hc
}

// StartContainer starts a created container.
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return e.wrap(fmt.Sprintf("starting container %s", shortID(id)), err)
	}
	return nil
}

// StopContainer sends SIGTERM (never the image's STOPSIGNAL, which
// CreateContainer overrides) and kills the container when it is still
// running after grace. The API counts whole
// seconds, so grace is rounded up; zero kills at once. Stopping a container
// that is not running is not an error.
func (e *Engine) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	secs := graceSeconds(grace)
	if err := e.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil {
		return e.wrap(fmt.Sprintf("stopping container %s", shortID(id)), err)
	}
	return nil
}

func graceSeconds(grace time.Duration) int {
	if grace <= 0 {
		return 0
	}
	s := math.Ceil(grace.Seconds())
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// RemoveContainer force-removes a container (killing it if it runs) and its
// anonymous volumes. A container that is already gone, or that another
// caller is already removing, is not an error.
func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		return nil
	default:
		return e.wrap(fmt.Sprintf("removing container %s", shortID(id)), err)
	}
}

// InspectContainer returns the container's current state.
func (e *Engine) InspectContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	resp, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return engine.ContainerState{}, e.wrap(fmt.Sprintf("inspecting container %s", shortID(id)), err)
	}
	return stateOf(resp), nil
}

func stateOf(resp container.InspectResponse) engine.ContainerState {
	if resp.ContainerJSONBase == nil {
		return engine.ContainerState{}
	}
	st := engine.ContainerState{ID: resp.ID}
	if s := resp.State; s != nil {
		st.Running = s.Running
		st.Status = string(s.Status)
		st.ExitCode = s.ExitCode
		st.OOMKilled = s.OOMKilled
		st.Error = s.Error
		st.StartedAt = parseTime(s.StartedAt)
		st.FinishedAt = parseTime(s.FinishedAt)
	}
	return st
}

// parseTime parses the API's RFC 3339 timestamps; the API reports "never"
// as "0001-01-01T00:00:00Z", which parses to the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// WaitContainer blocks until the container is not running and returns its
// final state. It uses the "not-running" condition, which returns at once
// for a container that has already exited (and also for one that was
// created but never started); "next-exit" would hang on the former.
func (e *Engine) WaitContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	op := fmt.Sprintf("waiting for container %s", shortID(id))
	resC, errC := e.cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	// No case for ctx.Done(): the client aborts the request when ctx ends
	// and then always reports on errC, so selecting on the two channels
	// neither hangs nor leaves the client's goroutine blocked on resC.
	var res container.WaitResponse
	select {
	case res = <-resC:
	case err := <-errC:
		if ctx.Err() != nil {
			// The transport reports an aborted body read in its own words.
			return engine.ContainerState{}, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return engine.ContainerState{}, e.wrap(op, err)
	}
	st, err := e.InspectContainer(ctx, id)
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			// Removed right after it stopped: the wait result is all there is.
			st = engine.ContainerState{ID: id, Status: "removed", ExitCode: int(res.StatusCode)}
			if res.Error != nil {
				st.Error = res.Error.Message
			}
			return st, nil
		}
		return engine.ContainerState{}, fmt.Errorf("%s: %w", op, err)
	}
	if st.ExitCode == 137 && !st.OOMKilled && !st.Running && !st.StartedAt.IsZero() {
		st.OOMKilled = e.oomEventLogged(ctx, id, st.StartedAt)
	}
	return st, nil
}

// oomEventLogged reports whether the daemon logged an "oom" event for the
// container since it started, waiting up to oomEventGrace for one still on
// its way.
//
// A SIGKILL without the OOM flag may still be an OOM kill: containerd's
// shim watches for OOM and for the exit on separate paths, and when the
// exit reaches the daemon first, Docker 20.10 records OOMKilled false for
// good and only logs the "oom" event it gets next. Newer daemons set the
// flag on the late event. The event log is right on both.
func (e *Engine) oomEventLogged(ctx context.Context, id string, startedAt time.Time) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := e.cli.Events(ctx, events.ListOptions{
		Since: unixTimestamp(startedAt.Add(-time.Second)),
		Until: unixTimestamp(time.Now().Add(oomEventGrace)),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("container", id),
			filters.Arg("event", string(events.ActionOOM)),
		),
	})
	select {
	case <-msgs:
		return true
	case err := <-errs:
		// io.EOF once the log up to Until is read; anything else (ctx
		// ended, daemon gone) leaves the state as inspected.
		if err != nil && !errors.Is(err, io.EOF) {
			e.log.Debug("reading the event log for an OOM kill", "container", id, "error", err)
		}
		return false
	}
}

// oomEventGrace is how long after a SIGKILL exit WaitContainer waits for
// the daemon to log a late OOM event.
const oomEventGrace = 250 * time.Millisecond

// unixTimestamp formats t as the events API's "seconds.nanoseconds".
func unixTimestamp(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// ContainerLogs returns the container's stdout and stderr, interleaved in
// the order they were written, limited to the last tailLines lines
// (tailLines <= 0: all of it).
func (e *Engine) ContainerLogs(ctx context.Context, id string, tailLines int) (string, error) {
	op := fmt.Sprintf("reading logs of container %s", shortID(id))
	info, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return "", e.wrap(op, err)
	}
	tail := "all"
	if tailLines > 0 {
		tail = strconv.Itoa(tailLines)
	}
	rc, err := e.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "", e.wrap(op, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if info.Config != nil && info.Config.Tty {
		// A TTY container's log is one raw stream, not multiplexed.
		_, err = io.Copy(&buf, rc)
	} else {
		_, err = stdcopy.StdCopy(&buf, &buf, rc)
	}
	if err != nil {
		return "", e.wrap(op, err)
	}
	return buf.String(), nil
}

// ListContainers lists containers in every state that carry all of labels;
// an empty value matches any value of its key. Names are returned without
// the API's leading "/".
func (e *Engine) ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerSummary, error) {
	args := filters.NewArgs()
	for k, v := range labels {
		if v == "" {
			args.Add("label", k)
		} else {
			args.Add("label", k+"="+v)
		}
	}
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, e.wrap("listing containers", err)
	}
	out := make([]engine.ContainerSummary, 0, len(list))
	for _, c := range list {
		names := make([]string, len(c.Names))
		for i, n := range c.Names {
			names[i] = strings.TrimPrefix(n, "/")
		}
		out = append(out, engine.ContainerSummary{
			ID:     c.ID,
			Names:  names,
			Image:  c.Image,
			Labels: c.Labels,
			State:  string(c.State),
		})
	}
	return out, nil
}

// shortID shortens a 64-hex container ID for messages; names pass unchanged.
func shortID(id string) string {
	if len(id) == 64 {
		return id[:12]
	}
	return id
}
