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
	m.startSelf = cpustat.Process()
	return m
}

// readContainers reads the CPU time of every known container it can find.
func (m *cpuMeter) readContainers() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, id := range m.containers() {
		path, ok := m.paths[id]
		if !ok {
			p, err := cpustat.ContainerCgroup(m.root, id)
			if err != nil {
				m.missing = err
				continue
			}
			path, m.paths[id] = p, p
		}
		v, err := cpustat.ReadCgroup(path)
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
