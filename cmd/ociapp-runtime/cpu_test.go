package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociapp/ociapp/engine"
)

const testContainerID = "c09f830b1034076cad84fb6679a97243262ab968e2c8cefb251bd095a5070aa9"

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCPUMeter(t *testing.T) {
	root := t.TempDir()
	usage := filepath.Join(root, "cpuacct/docker/"+testContainerID+"/cpuacct.usage")
	writeFile(t, usage, "1000000\n")
	ids := []string{testContainerID}
	m := startCPU(root, func() []string { return ids })
	writeFile(t, usage, "3000000\n") // 2 ms in the window
	rep := m.stop(100)
	if rep.ContainersUSPerRequest == nil || *rep.ContainersUSPerRequest != 20 || rep.Containers != 1 || rep.ContainersUnavailable != "" {
		t.Errorf("containers: %+v", rep)
	}
	if rep.CallerUSPerRequest < 0 || rep.CallerS < 0 {
		t.Errorf("caller: %+v", rep)
	}

	// A container whose cgroup is not on this host: the caller's figure
	// only, and why.
	ids = []string{strings.Repeat("d", 64)}
	m = startCPU(root, func() []string { return ids })
	rep = m.stop(100)
	if rep.ContainersUSPerRequest != nil || !strings.Contains(rep.ContainersUnavailable, "no cgroup of the container") {
		t.Errorf("missing cgroup: %+v", rep)
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
