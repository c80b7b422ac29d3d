package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where the benchmarks ran.
type machine struct {
	Date    string `json:"date"` // UTC, RFC 3339
	CPU     string `json:"cpu"`
	CPUs    int    `json:"cpus"`
	Memory  string `json:"memory"`
	OS      string `json:"os"`
	Kernel  string `json:"kernel"`
	Docker  string `json:"docker"`
	Go      string `json:"go"`
	Commit  string `json:"commit"`
	LoadAvg string `json:"load_average"` // 1, 5 and 15 minutes, when the run started
}

// gatherMachine reads the facts from /proc, /etc/os-release, docker and
// git; what cannot be read is "unknown".
func gatherMachine(ctx context.Context, now time.Time) machine {
	m := machine{
		Date: now.UTC().Format(time.RFC3339),
		CPUs: goruntime.NumCPU(),
		Go:   goruntime.Version(),
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 64); err == nil {
		m.Memory = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64) + " GiB"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	m.OS = strings.Trim(procField("/etc/os-release", "PRETTY_NAME"), `"`)
	m.Docker = command(ctx, "docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})")
	if driver := command(ctx, "docker", "info", "--format", "{{.Driver}}"); driver != "" {
		m.Docker += ", storage " + driver
	}
	m.Commit = command(ctx, "git", "rev-parse", "--short", "HEAD")
	if m.Commit != "" && command(ctx, "git", "status", "--porcelain", "--untracked-files=no") != "" {
		m.Commit += " with uncommitted changes"
	}
	for _, s := range []*string{&m.CPU, &m.Memory, &m.OS, &m.Kernel, &m.Docker, &m.Commit, &m.LoadAvg} {
		if *s == "" {
			*s = "unknown"
		}
	}
	return m
}

// procField returns the value of the first "key: value" or "key=value"
// line of path.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			k, v, ok = strings.Cut(sc.Text(), "=")
		}
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// command runs a command and returns its trimmed output, or "" if it fails.
func command(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
