package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ociapp/ociapp/engine"
)

// containerRecorder is an engine that notes the containers created through
// it, so that bench can find their cgroups whatever the engine.
type containerRecorder struct {
	engine.Engine
	mu  sync.Mutex
	ids []string
}

// recordingImageRemover keeps the engine's optional image removal visible
// through the recorder.
type recordingImageRemover struct {
	*containerRecorder
	engine.ImageRemover
}

// recordContainers wraps eng; the second result lists the containers
// created so far.
func recordContainers(eng engine.Engine) (engine.Engine, func() []string) {
	r := &containerRecorder{Engine: eng}
	var wrapped engine.Engine = r
	if rm, ok := eng.(engine.ImageRemover); ok {
		wrapped = recordingImageRemover{r, rm}
	}
	return wrapped, r.created
}

func (r *containerRecorder) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	id, err := r.Engine.CreateContainer(ctx, spec)
	if err == nil {
		r.mu.Lock()
		r.ids = append(r.ids, id)
		r.mu.Unlock()
	}
	return id, err
}

func (r *containerRecorder) created() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0 // cannot fail for RUSAGE_SELF
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// cgroupRoot is where the host's cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// errNoCgroup says a container's cgroup was not found on this host (the
// engine runs elsewhere, or names its cgroups differently).
var errNoCgroup = errors.New("no cgroup of the container on this host")

// containerCgroup finds the CPU accounting file of container id under root:
// cpuacct.usage (cgroup v1, nanoseconds) or cpu.stat (cgroup v2,
// usage_usec) in a directory named after the container, as Docker,
// containerd, CRI-O and Podman name them (docker/<id>, docker-<id>.scope,
// cri-containerd-<id>.scope, libpod-<id>.scope).
func containerCgroup(root, id string) (string, error) {
	if len(id) < 12 || strings.ContainsAny(id, `/\.`) {
		return "", fmt.Errorf("finding the cgroup of container %q: not a container ID", id)
	}
	bases := []string{filepath.Join(root, "cpuacct"), filepath.Join(root, "cpu,cpuacct"), filepath.Join(root, "unified"), root}
	for _, base := range bases {
		var found string
		err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fs.SkipDir
			}
			if !d.IsDir() || !strings.Contains(d.Name(), id) {
				return nil
			}
			for _, name := range []string{"cpuacct.usage", "cpu.stat"} {
				if _, err := os.Stat(filepath.Join(path, name)); err == nil {
					found = filepath.Join(path, name)
					return fs.SkipAll
				}
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("finding the cgroup of container %s: %w", shortDigest(id), err)
		}
		if found != "" {
			return found, nil
		}
	}
	return "", fmt.Errorf("finding the cgroup of container %s under %s: %w", id[:12], root, errNoCgroup)
}

// readCgroupCPU reads the CPU time a cgroup has used from its cpuacct.usage
// or cpu.stat file.
func readCgroupCPU(path string) (time.Duration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading container CPU time: %w", err)
	}
	if filepath.Base(path) == "cpuacct.usage" {
		ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading container CPU time from %s: %w", path, err)
		}
		return time.Duration(ns), nil
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "usage_usec "); ok {
			usec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading container CPU time from %s: %w", path, err)
			}
			return time.Duration(usec) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("reading container CPU time from %s: no usage_usec line", path)
}

// cpuMeter measures the CPU time of this process and of the containers
// created through a recorder over a window.
type cpuMeter struct {
	root       string
	containers func() []string
	paths      map[string]string // container ID: its accounting file
	startSelf  time.Duration
	start      map[string]time.Duration
	missing    error
}

// startCPU begins a window.
func startCPU(root string, containers func() []string) *cpuMeter {
	m := &cpuMeter{root: root, containers: containers, paths: map[string]string{}, start: map[string]time.Duration{}}
	for id, v := range m.readContainers() {
		m.start[id] = v
	}
	m.startSelf = processCPU()
	return m
}

// readContainers reads the CPU time of every known container it can find.
func (m *cpuMeter) readContainers() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, id := range m.containers() {
		path, ok := m.paths[id]
		if !ok {
			p, err := containerCgroup(m.root, id)
			if err != nil {
				m.missing = err
				continue
			}
			path, m.paths[id] = p, p
		}
		v, err := readCgroupCPU(path)
		if err != nil {
			m.missing = err
			continue
		}
		out[id] = v
	}
	return out
}

// stop ends the window and reports it for requests requests.
func (m *cpuMeter) stop(requests int64) *cpuReport {
	self := processCPU() - m.startSelf
	rep := &cpuReport{CallerS: self.Seconds()}
	var containers time.Duration
	for id, v := range m.readContainers() {
		containers += v - m.start[id] // a container started in the window counts from 0
		rep.Containers++
	}
	if rep.Containers > 0 && m.missing == nil {
		rep.ContainersS = containers.Seconds()
	} else {
		if m.missing == nil {
			m.missing = errors.New("no container was created")
		}
		rep.ContainersUnavailable = m.missing.Error()
	}
	if requests > 0 {
		rep.CallerUSPerRequest = us(self) / float64(requests)
		if rep.ContainersUnavailable == "" {
			v := us(containers) / float64(requests)
			rep.ContainersUSPerRequest = &v
		}
	}
	return rep
}

// cpuReport is the CPU time used over the measured run.
type cpuReport struct {
	// CallerUSPerRequest is this process's CPU time (user and system, all
	// threads: the runtime and the load generator) per request.
	CallerUSPerRequest float64 `json:"caller_us_per_request"`
	// ContainersUSPerRequest is the CPU time of the containers, from their
	// cgroups, per request; absent when they could not be read.
	ContainersUSPerRequest *float64 `json:"containers_us_per_request,omitempty"`
	CallerS                float64  `json:"caller_s"`
	ContainersS            float64  `json:"containers_s,omitempty"`
	// Containers is how many containers were measured.
	Containers            int    `json:"containers"`
	ContainersUnavailable string `json:"containers_unavailable,omitempty"`
}
