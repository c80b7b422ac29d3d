package kubernetes

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// awaitEntry returns once dir holds an entry, or ctx ends. It waits on
// inotify, not by polling: a container that creates something in the host
// directory it was given (the app's socket) is running, which the kubelet
// reports only at its next status update, up to a second later.
func awaitEntry(ctx context.Context, dir string) error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	// A non-blocking descriptor in an *os.File is served by the runtime's
	// poller, so Close ends a pending Read.
	f := os.NewFile(uintptr(fd), "inotify")
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		_ = f.Close()
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		_, err := f.Read(buf)
		done <- err
	}()
	// Whatever was created before the watch began.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		_ = f.Close()
		<-done
		return nil
	}
	select {
	case err := <-done:
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("watching %s: %w", dir, err)
		}
		return nil
	case <-ctx.Done():
		_ = f.Close()
		<-done
		return ctx.Err()
	}
}
