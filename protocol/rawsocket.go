package protocol

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// The protocol reads and writes its sockets with raw system calls, which do
// not tell the Go scheduler that the thread is in a system call.
//
// Why: a system call made through package syscall wakes the runtime's
// monitor thread (sysmon) when it sleeps, as it does whenever the process
// has gone idle, and the monitor then checks the process every 20 µs for a
// while. A server that goes idle between batches of requests, as every
// server here does, paid one such wake-up per batch and a monitor thread
// that took a fifth of its CPU time; on a loaded host the monitor's wake-ups
// wait for a CPU like any other. The sockets are non-blocking, so a read or
// write never blocks in the kernel and the scheduler loses nothing by not
// knowing: waiting is done in the network poller, as before.

// rawSocket reads and writes a socket with raw system calls, waiting in the
// network poller when it would block. Deadlines and Close work as on the
// net.Conn it wraps.
type rawSocket struct {
	raw syscall.RawConn
}

// SocketIO returns conn's reader and writer: raw system calls where conn
// is a socket with a file descriptor, conn itself otherwise (a net.Pipe, a
// TLS connection). A Writer made over conn uses it already.
func SocketIO(conn net.Conn) io.ReadWriter {
	if raw := rawConn(conn); raw != nil {
		return rawSocket{raw: raw}
	}
	return conn
}

// Read reads what the socket holds, waiting for something if it holds
// nothing.
func (s rawSocket) Read(p []byte) (int, error) {
	var (
		n       int
		readErr error
	)
	err := s.raw.Read(func(fd uintptr) bool {
		n, readErr = readNonblocking(fd, p)
		return readErr != syscall.EAGAIN
	})
	return readResult(n, len(p), err, readErr)
}

// readResult is what a read of a non-blocking socket returns as an
// io.Reader: err from the wait, readErr from the read itself.
func readResult(n, asked int, err, readErr error) (int, error) {
	switch {
	case err != nil:
		return 0, err
	case readErr != nil:
		return 0, os.NewSyscallError("read", readErr)
	case n == 0 && asked > 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting in the network poller while the socket's
// buffer is full.
func (s rawSocket) Write(p []byte) (int, error) {
	written := 0
	var writeErr error
	err := s.raw.Write(func(fd uintptr) bool {
		for written < len(p) {
			n, err := writeNonblocking(fd, p[written:])
			if err == syscall.EAGAIN {
				return false
			}
			if err != nil {
				writeErr = os.NewSyscallError("write", err)
				return true
			}
			written += n
		}
		return true
	})
	if err == nil {
		err = writeErr
	}
	return written, err
}

// readNonblocking reads the non-blocking socket fd once, retrying when a
// signal interrupts it; syscall.EAGAIN means there was nothing to read.
func readNonblocking(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_READ, fd, p)
}

// writeNonblocking writes to the non-blocking socket fd once, retrying
// when a signal interrupts it; syscall.EAGAIN means its buffer is full.
func writeNonblocking(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_WRITE, fd, p)
}

func rawIO(trap, fd uintptr, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}
