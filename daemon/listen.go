package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultSocketMode is the mode of the daemon's Unix socket: only its owner
// may connect. Whoever can connect can run containers.
const DefaultSocketMode os.FileMode = 0o600

// Listen opens the listener that addr names: "unix:///abs/path.sock" or
// "tcp://host:port". A Unix socket gets mode (DefaultSocketMode when 0);
// a socket file left by a daemon that is gone is replaced, one that a live
// daemon listens on is an error.
//
// Listen sets the process umask briefly so that the socket never exists
// with a wider mode; call it at start-up, not while other goroutines
// create files.
func Listen(addr string, mode os.FileMode) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		return listenUnix(path, mode)
	}
	if hostport, ok := strings.CutPrefix(addr, "tcp://"); ok {
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			return nil, fmt.Errorf("listen address %q: %w; use tcp://HOST:PORT", addr, err)
		}
		ln, err := net.Listen("tcp", hostport)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("listen address %q: use unix:///PATH or tcp://HOST:PORT", addr)
}

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("listen address unix://%s: the socket path must be absolute (unix:///PATH)", path)
	}
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the socket's directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on unix://%s: %w", path, err)
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("setting the socket's mode: %w", err)
	}
	return ln, nil
}

// removeStaleSocket removes a socket file nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking the socket path: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or listen elsewhere", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("another process listens on %s; stop it or listen elsewhere", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("checking whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing a stale socket: %w", err)
	}
	return nil
}
