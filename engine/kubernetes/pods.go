package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/ociapp/ociapp/engine"
)

type podsClient = typedcorev1.PodInterface

var listOne = metav1.ListOptions{Limit: 1}

// containerName is the name of the one container of each pod.
const containerName = "app"

// CreateContainer creates a pod for spec on the engine's node. The node's
// kubelet starts it at once; StartContainer waits until it has. A missing
// image is an error wrapping engine.ErrNotFound; nothing is pulled.
func (e *Engine) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	if spec.Image == "" {
		return "", errors.New("creating pod: the spec names no image")
	}
	image, err := e.podImage(ctx, spec.Image)
	if err != nil {
		return "", err
	}
	pod, err := podFor(spec, image, e.namespace, e.node, e.cpuRequest)
	if err != nil {
		return "", fmt.Errorf("creating pod: %w", err)
	}
	if err := ownMounts(spec); err != nil {
		return "", fmt.Errorf("creating pod: %w", err)
	}
	created, err := e.pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return "", e.wrap(fmt.Sprintf("creating pod from image %s", image), err)
	}
	e.log.Debug("pod created", "pod", created.Name, "image", image, "node", e.node)
	return created.Name, nil
}

// ownMounts gives the container's user the writable host directories it
// gets, as Kubernetes creates hostPath directories for root only. Without
// the privilege to change owners they are left as they are.
func ownMounts(spec engine.ContainerSpec) error {
	uid, gid, ok, err := numericUser(spec.User)
	if err != nil || !ok || os.Geteuid() != 0 {
		return err
	}
	for _, m := range spec.Mounts {
		if m.ReadOnly {
			continue
		}
		if err := os.Chown(m.Source, int(uid), int(gid)); err != nil {
			return fmt.Errorf("giving %s to user %s: %w", m.Source, spec.User, err)
		}
	}
	return nil
}

// StartContainer waits until the pod's container runs (or has already
// ended): through a watch on the pod, and, since the kubelet reports a
// running container only at its next status update (up to a second
// later), also through inotify on the host directory the container writes
// to (its socket directory): an entry there means it runs. A pod the
// kubelet cannot start (missing image, invalid spec, refused by the node)
// is an error saying why, at once.
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	name := podName(id)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wrote := make(chan time.Time)
	var watchOnce sync.Once
	var last *corev1.Pod
	_, err := e.watchPodUntil(ctx, name, func(pod *corev1.Pod) (bool, error) {
		if pod == nil {
			return false, fmt.Errorf("pod %s was deleted before it started: %w", name, engine.ErrNotFound)
		}
		last = pod
		watchOnce.Do(func() {
			if dir := writableHostDir(pod); dir != "" {
				wg.Go(func() {
					if awaitEntry(ctx, dir) == nil {
						close(wrote)
					}
				})
			}
		})
		return startedOrFailed(pod)
	}, func() <-chan time.Time { return wrote })
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("starting pod %s: %s: %w", name, pendingReason(last, e.node), ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("starting pod %s: %w", name, err)
	}
	return nil
}

// writableHostDir is the first host directory the pod's container may
// write to, or "".
func writableHostDir(pod *corev1.Pod) string {
	if len(pod.Spec.Containers) == 0 {
		return ""
	}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if m.ReadOnly {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				return v.HostPath.Path
			}
		}
	}
	return ""
}

// fatalWaiting are the reasons a kubelet gives for a container that will
// not start without a change to the pod or the node.
var fatalWaiting = map[string]bool{
	"ErrImageNeverPull":          true,
	"InvalidImageName":           true,
	"ImageInspectError":          true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
	"PreCreateHookError":         true,
	"PreStartHookError":          true,
}

// startedOrFailed reports whether pod's container runs or ran, or else
// an error when it never will.
func startedOrFailed(pod *corev1.Pod) (bool, error) {
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		if cs := appStatus(pod); cs != nil && cs.State.Terminated != nil {
			return true, nil
		}
		return false, fmt.Errorf("the node refused the pod: %s: %s", pod.Status.Reason, pod.Status.Message)
	}
	cs := appStatus(pod)
	if cs == nil {
		return false, nil
	}
	switch {
	case cs.State.Running != nil, cs.State.Terminated != nil:
		return true, nil
	case cs.State.Waiting != nil && fatalWaiting[cs.State.Waiting.Reason]:
		err := fmt.Errorf("%s: %s", cs.State.Waiting.Reason, cs.State.Waiting.Message)
		if cs.State.Waiting.Reason == "ErrImageNeverPull" {
			err = fmt.Errorf("the node has no image %s: %w", cs.Image, engine.ErrNotFound)
		}
		return false, err
	}
	return false, nil
}

// pendingReason says where a pod that did not start in time got to.
func pendingReason(pod *corev1.Pod, node string) string {
	if pod == nil {
		return "the pod was not seen"
	}
	if cs := appStatus(pod); cs != nil && cs.State.Waiting != nil {
		return fmt.Sprintf("its container is still waiting (%s %s)", cs.State.Waiting.Reason, cs.State.Waiting.Message)
	}
	if pod.Status.Phase == corev1.PodPending && len(pod.Status.Conditions) == 0 {
		return fmt.Sprintf("the kubelet of node %s has not taken it up; check that the node exists and is Ready", node)
	}
	return fmt.Sprintf("it is still %s", pod.Status.Phase)
}

// StopContainer deletes the pod with grace as its grace period (the
// kubelet sends SIGTERM, then SIGKILL once it has passed) and waits until
// its container no longer runs. The API counts whole seconds, so grace is
// rounded up; zero deletes it at once. A missing pod is not an error.
func (e *Engine) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	name := podName(id)
	secs := graceSeconds(grace)
	err := e.pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &secs})
	if err != nil {
		if errors.Is(e.wrap("", err), engine.ErrNotFound) {
			return nil
		}
		return e.wrap(fmt.Sprintf("stopping pod %s", name), err)
	}
	_, err = e.watchPod(ctx, name, func(pod *corev1.Pod) (bool, error) {
		return pod == nil || !containerRunning(pod), nil
	})
	if err != nil && !errors.Is(err, engine.ErrNotFound) {
		return fmt.Errorf("stopping pod %s: %w", name, err)
	}
	return nil
}

func containerRunning(pod *corev1.Pod) bool {
	cs := appStatus(pod)
	return cs != nil && cs.State.Running != nil
}

func graceSeconds(grace time.Duration) int64 {
	if grace <= 0 {
		return 0
	}
	return int64(math.Min(math.Ceil(grace.Seconds()), math.MaxInt32))
}

// RemoveContainer deletes the pod at once (its container is killed). A
// missing pod is not an error.
func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	name := podName(id)
	var zero int64
	err := e.pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil {
		werr := e.wrap(fmt.Sprintf("removing pod %s", name), err)
		if errors.Is(werr, engine.ErrNotFound) {
			return nil
		}
		return werr
	}
	return nil
}

// InspectContainer returns the state of the pod's container.
func (e *Engine) InspectContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	name := podName(id)
	pod, err := e.pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return engine.ContainerState{}, e.wrap(fmt.Sprintf("inspecting pod %s", name), err)
	}
	return stateOf(pod), nil
}

// WaitContainer waits, through a watch, until the pod's container has
// ended and returns its final state; at once if it has. A pod deleted
// meanwhile ends the wait with its last known state.
func (e *Engine) WaitContainer(ctx context.Context, id string) (engine.ContainerState, error) {
	name := podName(id)
	op := fmt.Sprintf("waiting for pod %s", name)
	var last *corev1.Pod
	var settle <-chan time.Time
	_, err := e.watchPodUntil(ctx, name, func(pod *corev1.Pod) (bool, error) {
		if pod == nil {
			if last == nil {
				return false, fmt.Errorf("%s: pod %s: %w", op, name, engine.ErrNotFound)
			}
			return true, nil
		}
		last = pod
		if !ended(pod) {
			return false, nil
		}
		st := stateOf(pod)
		// The kubelet may report a SIGKILL before the runtime's OOM event
		// lands: give a plain kill a moment to turn into an OOM kill.
		if st.ExitCode == 137 && !st.OOMKilled && settle == nil {
			settle = time.After(oomSettle)
			return false, nil
		}
		return true, nil
	}, func() <-chan time.Time { return settle })
	if err != nil {
		if ctx.Err() != nil {
			return engine.ContainerState{}, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return engine.ContainerState{}, err
	}
	st := stateOf(last)
	if !ended(last) {
		st.Running, st.Status = false, "removed"
	}
	return st, nil
}

// oomSettle is how long WaitContainer waits for a SIGKILL to be reported
// as an OOM kill.
const oomSettle = 1500 * time.Millisecond

// ended reports whether the pod's container has ended, or will never run.
func ended(pod *corev1.Pod) bool {
	if cs := appStatus(pod); cs != nil && cs.State.Terminated != nil {
		return true
	}
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

// watchPod calls cond with the pod named name (nil once it is gone) at
// once and after every change, until cond returns true or an error.
func (e *Engine) watchPod(ctx context.Context, name string, cond func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	return e.watchPodUntil(ctx, name, cond, nil)
}

// watchPodUntil is watchPod that also ends, successfully, when the channel
// that until returns (if until is not nil) delivers or is closed.
func (e *Engine) watchPodUntil(ctx context.Context, name string, cond func(*corev1.Pod) (bool, error), until func() <-chan time.Time) (*corev1.Pod, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	op := fmt.Sprintf("watching pod %s", name)
	for {
		list, err := e.pods.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, e.wrap(op, err)
		}
		var pod *corev1.Pod
		if len(list.Items) > 0 {
			pod = &list.Items[0]
		}
		if done, err := cond(pod); done || err != nil {
			return pod, err
		}
		w, err := e.pods.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			return nil, e.wrap(op, err)
		}
		pod, done, err := consume(ctx, w, cond, until)
		w.Stop()
		if done || err != nil {
			return pod, err
		}
		// The server ended the watch (it does so every few minutes) or
		// the resource version expired: list again.
	}
}

// consume feeds a watch's events to cond. It returns done=false when the
// watch ended without cond being met.
func consume(ctx context.Context, w watch.Interface, cond func(*corev1.Pod) (bool, error), until func() <-chan time.Time) (*corev1.Pod, bool, error) {
	var last *corev1.Pod
	for {
		var timer <-chan time.Time
		if until != nil {
			timer = until()
		}
		select {
		case <-ctx.Done():
			return last, false, ctx.Err()
		case <-timer:
			return last, true, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return last, false, nil
			}
			switch ev.Type {
			case watch.Error:
				return last, false, nil
			case watch.Bookmark:
				continue
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				pod = nil
			} else {
				last = pod
			}
			if done, err := cond(pod); done || err != nil {
				return last, true, err
			}
		}
	}
}

// ContainerLogs returns the last tailLines lines of the container's output
// (stdout and stderr as written; tailLines <= 0: all of it). A container
// that never started has none.
func (e *Engine) ContainerLogs(ctx context.Context, id string, tailLines int) (string, error) {
	name := podName(id)
	opts := &corev1.PodLogOptions{Container: containerName}
	if tailLines > 0 {
		n := int64(tailLines)
		opts.TailLines = &n
	}
	b, err := e.pods.GetLogs(name, opts).DoRaw(ctx)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "waiting to start") || strings.Contains(msg, "ContainerCreating") {
			return "", nil
		}
		return "", e.wrap(fmt.Sprintf("reading logs of pod %s", name), err)
	}
	return string(b), nil
}

// ListContainers lists the pods on the engine's node, in every state, that
// carry all of labels (an empty value matches any value of its key). The
// labels returned are the ones the pods were created with.
func (e *Engine) ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerSummary, error) {
	sel, err := labelSelector(labels)
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	list, err := e.pods.List(ctx, metav1.ListOptions{
		LabelSelector: sel,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", e.node).String(),
	})
	if err != nil {
		return nil, e.wrap("listing pods", err)
	}
	out := make([]engine.ContainerSummary, 0, len(list.Items))
	for i := range list.Items {
		pod := &list.Items[i]
		s := engine.ContainerSummary{
			ID:     pod.Name,
			Names:  []string{pod.Name},
			Labels: originalLabels(pod),
			State:  stateOf(pod).Status,
		}
		if len(pod.Spec.Containers) > 0 {
			s.Image = pod.Spec.Containers[0].Image
		}
		out = append(out, s)
	}
	return out, nil
}

// CgroupID returns the node runtime's ID of the pod's app container
// ("containerd://ID" in the pod's status), which names its cgroup, or
// until the kubelet reports it the pod's cgroup name.
func (e *Engine) CgroupID(ctx context.Context, id string) (string, error) {
	name := podName(id)
	pod, err := e.pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", e.wrap(fmt.Sprintf("inspecting pod %s", name), err)
	}
	if cs := appStatus(pod); cs != nil && cs.ContainerID != "" {
		_, cid, _ := strings.Cut(cs.ContainerID, "://")
		return cid, nil
	}
	// The kubelet reports the container's ID at its next status update,
	// up to a second after the container runs; until then, the pod's own
	// cgroup (its pause process included), as the kubelet's cgroupfs
	// driver names it.
	return "pod" + string(pod.UID), nil
}

func appStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == containerName {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// stateOf translates a pod's status into the engine's container state.
func stateOf(pod *corev1.Pod) engine.ContainerState {
	st := engine.ContainerState{ID: pod.Name, Status: "created"}
	cs := appStatus(pod)
	switch {
	case cs != nil && cs.State.Running != nil:
		st.Running, st.Status = true, "running"
		st.StartedAt = cs.State.Running.StartedAt.Time
	case cs != nil && cs.State.Terminated != nil:
		t := cs.State.Terminated
		st.Status = "exited"
		st.ExitCode = int(t.ExitCode)
		st.OOMKilled = t.Reason == "OOMKilled"
		if t.Reason != "" && t.Reason != "Error" && t.Reason != "Completed" && t.Reason != "OOMKilled" {
			st.Error = strings.TrimSpace(t.Reason + ": " + t.Message)
		}
		st.StartedAt, st.FinishedAt = t.StartedAt.Time, t.FinishedAt.Time
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		// Refused by the node before its container was created.
		st.Status = "exited"
		st.Error = strings.TrimSpace(pod.Status.Reason + ": " + pod.Status.Message)
	case cs != nil && cs.State.Waiting != nil && fatalWaiting[cs.State.Waiting.Reason]:
		st.Error = cs.State.Waiting.Reason + ": " + cs.State.Waiting.Message
	}
	return st
}

// numericUser parses "uid" or "uid:gid"; ok is false for "" (the image's
// user). A gid of -1 means the image's group.
func numericUser(user string) (uid, gid int64, ok bool, err error) {
	if user == "" {
		return 0, -1, false, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, uerr := strconv.ParseInt(u, 10, 32)
	gid = -1
	var gerr error
	if hasGroup {
		gid, gerr = strconv.ParseInt(g, 10, 32)
	}
	if uerr != nil || gerr != nil || uid < 0 || (hasGroup && gid < 0) {
		return 0, -1, false, fmt.Errorf("user %q is not numeric: Kubernetes runs containers as numeric ids only; give the image a USER uid:gid", user)
	}
	return uid, gid, true, nil
}

// podName turns an engine ID or container name into a valid pod name:
// lower case, with anything but letters, digits, '-' and '.' replaced.
func podName(id string) string {
	b := []byte(strings.ToLower(id))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			b[i] = '-'
		}
	}
	name := strings.Trim(string(b), "-.")
	if len(name) > 253 {
		name = strings.TrimRight(name[:253], "-.")
	}
	return name
}

// podFor is the pod that runs spec on node: the runtime's hardening in
// Kubernetes' terms, plus what Kubernetes adds (seccomp, no service
// account token, no service links). It requests cpuRequest millicores of
// CPU, at most the limit.
func podFor(spec engine.ContainerSpec, image, namespace, node string, cpuRequest int64) (*corev1.Pod, error) {
	uid, gid, numeric, err := numericUser(spec.User)
	if err != nil {
		return nil, err
	}
	labels, annotations, err := podLabels(spec.Labels)
	if err != nil {
		return nil, err
	}
	no, yes := false, true
	grace := graceSeconds(spec.StopTimeout)
	psc := &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	csc := &corev1.SecurityContext{ReadOnlyRootFilesystem: &spec.ReadOnlyRootfs}
	if numeric {
		psc.RunAsUser = &uid
		if gid >= 0 {
			psc.RunAsGroup = &gid
		}
		nonRoot := uid != 0
		psc.RunAsNonRoot = &nonRoot
	}
	if spec.NoNewPrivileges {
		csc.AllowPrivilegeEscalation = &no
	}
	if len(spec.CapDrop) > 0 {
		csc.Capabilities = &corev1.Capabilities{}
		for _, c := range spec.CapDrop {
			csc.Capabilities.Drop = append(csc.Capabilities.Drop, corev1.Capability(strings.TrimPrefix(strings.ToUpper(c), "CAP_")))
		}
	}
	c := corev1.Container{
		Name:            containerName,
		Image:           image,
		ImagePullPolicy: corev1.PullNever,
		Args:            spec.Cmd,
		SecurityContext: csc,
	}
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
	}
	limits := corev1.ResourceList{}
	if spec.MemoryBytes > 0 {
		limits[corev1.ResourceMemory] = *resource.NewQuantity(spec.MemoryBytes, resource.BinarySI)
	}
	if spec.NanoCPUs > 0 {
		limit := max(1, spec.NanoCPUs/1e6)
		limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(limit, resource.DecimalSI)
		// Without a request of its own the API server would make it the
		// limit, and a pool of such pods would outgrow the node's
		// allocatable CPU (the kubelet refuses the rest: OutOfcpu).
		cpuRequest = min(cpuRequest, limit)
	}
	if len(limits) > 0 {
		c.Resources.Limits = limits
	}
	if cpuRequest > 0 || spec.NanoCPUs > 0 {
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: *resource.NewMilliQuantity(cpuRequest, resource.DecimalSI)}
	}
	var volumes []corev1.Volume
	directory := corev1.HostPathDirectory
	for i, m := range spec.Mounts {
		name := fmt.Sprintf("mount-%d", i)
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: m.Source, Type: &directory},
		}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: m.Target, ReadOnly: m.ReadOnly})
	}
	for i, path := range slices.Sorted(maps.Keys(spec.Tmpfs)) {
		size, readOnly, err := tmpfsOptions(spec.Tmpfs[path])
		if err != nil {
			return nil, fmt.Errorf("tmpfs %s: %w", path, err)
		}
		name := fmt.Sprintf("tmpfs-%d", i)
		ed := &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}
		if size > 0 {
			ed.SizeLimit = resource.NewQuantity(size, resource.BinarySI)
		}
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: ed}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: path, ReadOnly: readOnly})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        podName(spec.Name),
			Namespace:   namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			HostNetwork:                   spec.NetworkMode == "host",
			SecurityContext:               psc,
			Containers:                    []corev1.Container{c},
			Volumes:                       volumes,
		},
	}
	if spec.Name == "" {
		pod.GenerateName = "ociapp-"
	}
	if spec.Init {
		// The pod's pause process becomes PID 1 and reaps orphans, as
		// Docker's init does.
		pod.Spec.ShareProcessNamespace = &yes
	}
	return pod, nil
}

// tmpfsOptions reads the size (Docker's units: a number with an optional
// k, m or g suffix, binary) and "ro" from tmpfs mount options.
func tmpfsOptions(opts string) (size int64, readOnly bool, err error) {
	for o := range strings.SplitSeq(opts, ",") {
		switch {
		case o == "ro":
			readOnly = true
		case strings.HasPrefix(o, "size="):
			v := strings.ToLower(strings.TrimPrefix(o, "size="))
			mult := int64(1)
			switch {
			case strings.HasSuffix(v, "k"):
				mult, v = 1<<10, strings.TrimSuffix(v, "k")
			case strings.HasSuffix(v, "m"):
				mult, v = 1<<20, strings.TrimSuffix(v, "m")
			case strings.HasSuffix(v, "g"):
				mult, v = 1<<30, strings.TrimSuffix(v, "g")
			}
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n < 0 || n > math.MaxInt64/mult {
				return 0, false, fmt.Errorf("invalid size %q", strings.TrimPrefix(o, "size="))
			}
			size = n * mult
		}
	}
	return size, readOnly, nil
}
