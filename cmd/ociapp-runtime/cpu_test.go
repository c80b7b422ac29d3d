package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestContainerCgroupAndCPU(t *testing.T) {
	tests := []struct {
		name    string
		file    string // relative to the root
		content string
		want    time.Duration
	}{
		{"v1 cgroupfs (Docker)", "cpuacct/docker/" + testContainerID + "/cpuacct.usage", "1234567890\n", 1234567890},
		{"v1 systemd", "cpu,cpuacct/system.slice/docker-" + testContainerID + ".scope/cpuacct.usage", "42\n", 42},
		{"v2 systemd", "system.slice/docker-" + testContainerID + ".scope/cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n", 2500 * time.Microsecond},
		{"v2 containerd (Kubernetes)", "kubepods.slice/kubepods-pod1.slice/cri-containerd-" + testContainerID + ".scope/cpu.stat", "usage_usec 7\n", 7 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, tt.file), tt.content)
			path, err := containerCgroup(root, testContainerID)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, tt.file); path != want {
				t.Fatalf("found %s, want %s", path, want)
			}
			got, err := readCgroupCPU(path)
			if err != nil || got != tt.want {
				t.Fatalf("readCgroupCPU = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestContainerCgroupErrors(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "cpuacct/docker/other/cpuacct.usage"), "1\n")
	if _, err := containerCgroup(root, testContainerID); !errors.Is(err, errNoCgroup) {
		t.Errorf("missing cgroup: %v, want errNoCgroup", err)
	}
	for _, id := range []string{"", "short", "../../../etc/passwd"} {
		if _, err := containerCgroup(root, id); err == nil || !strings.Contains(err.Error(), "not a container ID") {
			t.Errorf("containerCgroup(%q) = %v, want a bad-ID error", id, err)
		}
	}
	for name, content := range map[string]string{
		"cpuacct.usage": "lots\n",
		"cpu.stat":      "user_usec 5\n",
	} {
		path := filepath.Join(t.TempDir(), name)
		writeFile(t, path, content)
		if _, err := readCgroupCPU(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("readCgroupCPU of %q in %s: %v, want an error naming the file", content, name, err)
		}
	}
	if _, err := readCgroupCPU(filepath.Join(root, "gone", "cpu.stat")); err == nil {
		t.Error("reading a missing file succeeded")
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
