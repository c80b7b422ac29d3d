package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
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

// cpuMeter measures the CPU time of this process and of the containers
// created through a recorder over a window.
type cpuMeter struct {
	containers func() []string
	// read is a container's CPU time so far.
	read      func(id string) (time.Duration, error)
	startSelf time.Duration
	start     map[string]time.Duration
	missing   error
}

// cgroupCPU reads containers' CPU time from their cgroups under root,
// finding each container's cgroup once; an engine whose container IDs do
// not name their cgroups (engine.CgroupIDer) says which does.
func cgroupCPU(ctx context.Context, root string, eng engine.Engine) func(id string) (time.Duration, error) {
	paths := map[string]string{}
	ider, _ := eng.(engine.CgroupIDer)
	return func(id string) (time.Duration, error) {
		path, ok := paths[id]
		if !ok {
			cgroupID := id
			if ider != nil {
				var err error
				if cgroupID, err = ider.CgroupID(ctx, id); err != nil {
					return 0, err
				}
			}
			p, err := cpustat.ContainerCgroup(root, cgroupID)
			if err != nil {
				return 0, err
			}
			path, paths[id] = p, p
		}
		return cpustat.ReadCgroup(path)
	}
}

// startCPU begins a window.
func startCPU(read func(id string) (time.Duration, error), containers func() []string) *cpuMeter {
	m := &cpuMeter{containers: containers, read: read, start: map[string]time.Duration{}}
	for id, v := range m.readContainers() {
		m.start[id] = v
	}
	m.startSelf = cpustat.Process()
	return m
}

// readContainers reads the CPU time of every known container it can find.
func (m *cpuMeter) readContainers() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, id := range m.containers() {
		v, err := m.read(id)
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
	self := cpustat.Process() - m.startSelf
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
