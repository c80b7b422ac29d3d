package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/cpustat"
)

func TestCPUMeter(t *testing.T) {
	usage := map[string]time.Duration{"c1": time.Millisecond}
	read := func(id string) (time.Duration, error) {
		if v, ok := usage[id]; ok {
			return v, nil
		}
		return 0, fmt.Errorf("finding the cgroup of container %s: %w", id, cpustat.ErrNoCgroup)
	}
	ids := []string{"c1"}
	m := startCPU(read, func() []string { return ids })
	usage["c1"] = 3 * time.Millisecond // 2 ms in the window
	usage["c2"] = time.Millisecond     // started in the window: counts from 0
	ids = append(ids, "c2")
	rep := m.stop(100)
	if rep.ContainersUSPerRequest == nil || *rep.ContainersUSPerRequest != 30 || rep.Containers != 2 || rep.ContainersS != 0.003 || rep.ContainersUnavailable != "" {
		t.Errorf("containers: %+v", rep)
	}
	if rep.CallerUSPerRequest < 0 || rep.CallerS < 0 {
		t.Errorf("caller: %+v", rep)
	}

	// A container whose cgroup is not on this host: the caller's figure
	// only, and why.
	ids = []string{"gone"}
	rep = startCPU(read, func() []string { return ids }).stop(100)
	if rep.ContainersUSPerRequest != nil || !strings.Contains(rep.ContainersUnavailable, "no cgroup of the container") {
		t.Errorf("missing cgroup: %+v", rep)
	}
	// No container at all.
	ids = nil
	rep = startCPU(read, func() []string { return ids }).stop(100)
	if rep.ContainersUSPerRequest != nil || rep.ContainersUnavailable != "no container was created" {
		t.Errorf("no container: %+v", rep)
	}
}

type removerEngine struct{ engine.Engine }

func (removerEngine) RemoveImage(context.Context, string) error { return nil }

func TestRecordContainersKeepsImageRemoval(t *testing.T) {
	if eng, _ := recordContainers(removerEngine{}); !implementsRemover(eng) {
		t.Error("the recorder hides the engine's image removal")
	}
	type plain struct{ engine.Engine }
	if eng, _ := recordContainers(plain{}); implementsRemover(eng) {
		t.Error("the recorder claims an image removal the engine lacks")
	}
}

func implementsRemover(e engine.Engine) bool {
	_, ok := e.(engine.ImageRemover)
	return ok
}
