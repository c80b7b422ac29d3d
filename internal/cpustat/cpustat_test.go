package cpustat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			path, err := ContainerCgroup(root, testContainerID)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, tt.file); path != want {
				t.Fatalf("found %s, want %s", path, want)
			}
			got, err := ReadCgroup(path)
			if err != nil || got != tt.want {
				t.Fatalf("ReadCgroup = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestContainerCgroupErrors(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "cpuacct/docker/other/cpuacct.usage"), "1\n")
	if _, err := ContainerCgroup(root, testContainerID); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("missing cgroup: %v, want ErrNoCgroup", err)
	}
	for _, id := range []string{"", "short", "../../../etc/passwd"} {
		if _, err := ContainerCgroup(root, id); err == nil || !strings.Contains(err.Error(), "not a container ID") {
			t.Errorf("ContainerCgroup(%q) = %v, want a bad-ID error", id, err)
		}
	}
	for name, content := range map[string]string{
		"cpuacct.usage": "lots\n",
		"cpu.stat":      "user_usec 5\n",
	} {
		path := filepath.Join(t.TempDir(), name)
		writeFile(t, path, content)
		if _, err := ReadCgroup(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("ReadCgroup of %q in %s: %v, want an error naming the file", content, name, err)
		}
	}
	if _, err := ReadCgroup(filepath.Join(root, "gone", "cpu.stat")); err == nil {
		t.Error("reading a missing file succeeded")
	}
}

func TestProcess(t *testing.T) {
	before := Process()
	for start := time.Now(); time.Since(start) < 20*time.Millisecond; {
	}
	if spent := Process() - before; spent <= 0 {
		t.Errorf("20 ms of computing counted as %v of CPU time", spent)
	}
}

func TestPIDAndMeter(t *testing.T) {
	self, err := PID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self < 0 || self > Process()+20*time.Millisecond {
		t.Errorf("PID(self) = %v, Process() = %v", self, Process())
	}
	if _, err := PID(1 << 30); err == nil {
		t.Error("a process that does not exist has a CPU time")
	}
	// The same process counted twice: the window sees twice its time.
	m, err := Start(Proc(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	for start := Process(); Process()-start < 100*time.Millisecond; {
	}
	got, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if got < 170*time.Millisecond { // /proc counts in 10 ms ticks
		t.Errorf("100 ms of computing counted once by getrusage and once from /proc came to %v", got)
	}
	if _, err := Container(strings.Repeat("e", 64)); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("Container of an unknown ID: %v", err)
	}
}
