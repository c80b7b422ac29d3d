package daemon_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/internal/testenv"
)

func TestListenUnix(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	sock := filepath.Join(dir, "sub", "d.sock")
	ln, err := daemon.Listen("unix://"+sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	// A live socket is not taken over.
	if _, err := daemon.Listen("unix://"+sock, 0); err == nil || !strings.Contains(err.Error(), "another process listens") {
		t.Fatalf("second Listen: %v", err)
	}
	ln.Close()

	// A stale one (its listener gone without removing it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = daemon.Listen("unix://"+sock, 0o660)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	ln.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("closing left the socket: %v", err)
	}
}

func TestListenRefuses(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{
		"unix://" + file,
		"unix://relative.sock",
		"tcp://nohostport",
		"tcp://127.0.0.1:99999",
		"http://127.0.0.1:80",
		"/run/x.sock",
	} {
		if ln, err := daemon.Listen(addr, 0); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Fatal("Listen replaced a regular file")
	}
}
