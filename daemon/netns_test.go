package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// netns is a pair of network namespaces joined by a veth pair on a /30
// that exists only between them: the daemon's "host" and the client's.
type netns struct {
	daemonNS, clientNS string
	daemonIP, clientIP string
}

const nsPrefix = "ociapp-dt-"

// setupNetns creates the namespaces and the link, and removes them when the
// test ends. Without root or iproute2 the test is skipped, or fails when
// CI=true.
func setupNetns(t *testing.T) *netns {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("network namespaces are required (CI=true): %s", msg)
		}
		t.Skipf("network namespaces are not available: %s", msg)
	}
	if os.Geteuid() != 0 {
		unavailable("creating them needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("iproute2's ip command is not installed")
	}
	removeStaleNamespaces(t)

	id := strconv.Itoa(os.Getpid())
	n := &netns{
		daemonNS: nsPrefix + id + "-d", clientNS: nsPrefix + id + "-c",
		daemonIP: "10.203.0.1", clientIP: "10.203.0.2",
	}
	// Interface names hold 15 bytes at most.
	vd, vc := "odt"+id+"d", "odt"+id+"c"
	t.Cleanup(func() {
		for _, ns := range []string{n.daemonNS, n.clientNS} {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("removing namespace %s: %v: %s", ns, err, out)
			}
		}
	})
	steps := [][]string{
		{"netns", "add", n.daemonNS},
		{"netns", "add", n.clientNS},
		{"link", "add", vd, "netns", n.daemonNS, "type", "veth", "peer", "name", vc, "netns", n.clientNS},
		{"-n", n.daemonNS, "addr", "add", n.daemonIP + "/30", "dev", vd},
		{"-n", n.clientNS, "addr", "add", n.clientIP + "/30", "dev", vc},
		{"-n", n.daemonNS, "link", "set", vd, "up"},
		{"-n", n.clientNS, "link", "set", vc, "up"},
		{"-n", n.daemonNS, "link", "set", "lo", "up"},
		{"-n", n.clientNS, "link", "set", "lo", "up"},
	}
	for i, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			if i == 0 {
				unavailable("ip %s: %v: %s", strings.Join(s, " "), err, out)
			}
			t.Fatalf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return n
}

// removeStaleNamespaces deletes the namespaces of test processes that died
// before cleaning up.
func removeStaleNamespaces(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := os.Stat(filepath.Join("/proc", pid)); err == nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("removing stale namespace %s: %v: %s", e.Name(), err, out)
		}
	}
}

// clientDialer dials from inside the client namespace. A namespace belongs
// to a thread, so each dial runs on a thread of its own that enters the
// namespace and, still locked, ends with its goroutine instead of going
// back to the pool; the socket it made stays in the namespace.
func (n *netns) clientDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	path := filepath.Join("/run/netns", n.clientNS)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			conn net.Conn
			err  error
		}
		ch := make(chan result, 1)
		go func() {
			goruntime.LockOSThread()
			f, err := os.Open(path)
			if err != nil {
				ch <- result{err: err}
				return
			}
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
			if err != nil {
				ch <- result{err: fmt.Errorf("entering %s: %w", path, err)}
				return
			}
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			ch <- result{conn, err}
		}()
		r := <-ch
		return r.conn, r.err
	}
}
