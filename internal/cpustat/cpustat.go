// Package cpustat reads CPU time: this process's, and a container's from
// its cgroup, for benchmarks that report CPU time per request.
package cpustat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is the CPU time (user and system) this process has used.
func Process() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0 // cannot fail for RUSAGE_SELF
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// CgroupRoot is where the host's cgroup file systems are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// ErrNoCgroup says a container's cgroup was not found on this host (the
// engine runs elsewhere, or names its cgroups differently).
var ErrNoCgroup = errors.New("no cgroup of the container on this host")

// ContainerCgroup finds the CPU accounting file of container id under root:
// cpuacct.usage (cgroup v1, nanoseconds) or cpu.stat (cgroup v2,
// usage_usec) in a directory named after the container, as Docker,
// containerd, CRI-O and Podman name them (docker/<id>, docker-<id>.scope,
// cri-containerd-<id>.scope, libpod-<id>.scope).
func ContainerCgroup(root, id string) (string, error) {
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
			return "", fmt.Errorf("finding the cgroup of container %s: %w", id[:12], err)
		}
		if found != "" {
			return found, nil
		}
	}
	return "", fmt.Errorf("finding the cgroup of container %s under %s: %w", id[:12], root, ErrNoCgroup)
}

// ReadCgroup reads the CPU time a cgroup has used from its cpuacct.usage
// or cpu.stat file.
func ReadCgroup(path string) (time.Duration, error) {
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

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// PID is the CPU time (user and system) process pid has used, from
// /proc/PID/stat, in clock ticks of 10 ms.
func PID(pid int) (time.Duration, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: the fields that
	// follow start after its last ')'. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+1:]))
	if i < 0 || len(fields) < 13 {
		return 0, fmt.Errorf("reading CPU time of process %d: %s is not a stat line", pid, path)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading CPU time of process %d from %s: %w", pid, path, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// A Meter adds up CPU time over a window: this process's and that of the
// sources it is given (other processes, containers).
type Meter struct {
	sources []func() (time.Duration, error)
	start   []time.Duration
}

// Start begins a window over this process and sources.
func Start(sources ...func() (time.Duration, error)) (*Meter, error) {
	m := &Meter{sources: append([]func() (time.Duration, error){func() (time.Duration, error) { return Process(), nil }}, sources...)}
	for _, s := range m.sources {
		v, err := s()
		if err != nil {
			return nil, err
		}
		m.start = append(m.start, v)
	}
	return m, nil
}

// Stop ends the window and returns the CPU time used in it.
func (m *Meter) Stop() (time.Duration, error) {
	var total time.Duration
	for i, s := range m.sources {
		v, err := s()
		if err != nil {
			return 0, err
		}
		total += v - m.start[i]
	}
	return total, nil
}

// Container returns a source of container id's CPU time, from its cgroup
// under CgroupRoot.
func Container(id string) (func() (time.Duration, error), error) {
	path, err := ContainerCgroup(CgroupRoot, id)
	if err != nil {
		return nil, err
	}
	return func() (time.Duration, error) { return ReadCgroup(path) }, nil
}

// Proc returns a source of process pid's CPU time.
func Proc(pid int) func() (time.Duration, error) {
	return func() (time.Duration, error) { return PID(pid) }
}
