// Command probe is a test application that reports the sandbox it runs in:
// its user, capabilities, privileges, writable paths, network interfaces
// and limits.
package main

import (
	"context"
	"net"
	"os"
	"strings"

	"github.com/ociapp/ociapp"
)

type request struct{}

type response struct {
	UID        int      `msgpack:"uid"`
	GID        int      `msgpack:"gid"`
	CapEff     string   `msgpack:"cap_eff"`
	NoNewPrivs string   `msgpack:"no_new_privs"`
	RootWrite  bool     `msgpack:"root_writable"`
	TmpWrite   bool     `msgpack:"tmp_writable"`
	Interfaces []string `msgpack:"interfaces"`
	MemLimit   string   `msgpack:"memory_limit"`
	PidsLimit  string   `msgpack:"pids_limit"`
	CPUMax     string   `msgpack:"cpu_max"`
	PID1       string   `msgpack:"pid1"`
}

func main() {
	ociapp.Main(ociapp.Func[request, response](func(ctx context.Context, _ request) (response, error) {
		r := response{UID: os.Getuid(), GID: os.Getgid()}
		status, _ := os.ReadFile("/proc/self/status")
		for line := range strings.SplitSeq(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "CapEff":
				r.CapEff = strings.TrimSpace(v)
			case "NoNewPrivs":
				r.NoNewPrivs = strings.TrimSpace(v)
			}
		}
		r.RootWrite = writable("/probe")
		r.TmpWrite = writable("/tmp/probe")
		ifaces, _ := net.Interfaces()
		for _, i := range ifaces {
			r.Interfaces = append(r.Interfaces, i.Name)
		}
		r.MemLimit = firstFile("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
		r.PidsLimit = firstFile("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
		// cgroup v2 "quota period", or v1's quota alone (-1: none).
		r.CPUMax = firstFile("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")
		comm, _ := os.ReadFile("/proc/1/comm")
		r.PID1 = strings.TrimSpace(string(comm))
		return r, nil
	}))
}

func writable(path string) bool {
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		return false
	}
	_ = os.Remove(path)
	return true
}

func firstFile(paths ...string) string {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}
