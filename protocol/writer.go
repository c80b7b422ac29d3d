package protocol

import (
	"io"
	"net"
	"runtime"
	"sync"
)

// Writer writes frames to a stream on behalf of many goroutines. Writes are
// serialized, and frames queued while a write is under way go out together
// in the next one: under load, one system call carries many frames; alone, a
// frame is written by its own caller with no hand-off.
type Writer struct {
	w io.Writer

	mu      sync.Mutex
	buf     []byte
	spare   []byte
	writing bool
	err     error
}

// NewWriter returns a Writer over w. A w that is a socket with a file
// descriptor is written with raw system calls (see rawSocket).
func NewWriter(w io.Writer) *Writer {
	if conn, ok := w.(net.Conn); ok {
		w = socketIO(conn)
	}
	return &Writer{w: w}
}

// maxRetainedBuffer is the largest buffer kept for reuse after a write.
const maxRetainedBuffer = 1 << 20

// WriteRequest queues req as a frame and returns once it has been written,
// or handed to a write already under way. The error of a failed write is
// returned to the goroutine that performed it and to every later caller.
func (w *Writer) WriteRequest(req Request) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	w.buf = AppendRequestFrame(w.buf, req)
	return w.flushLocked()
}

// GatherRequest is WriteRequest for a caller that expects others to write
// soon: when no write is under way, it yields to the process's other
// goroutines once before writing, so that frames they queue meanwhile go
// out in the same system call. The yield delays the frame by what the
// goroutines runnable then do until they block or yield, which is why a
// Client gathers only while it has more than two calls in flight.
func (w *Writer) GatherRequest(req Request) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	w.buf = AppendRequestFrame(w.buf, req)
	if w.writing {
		w.mu.Unlock()
		return nil
	}
	w.writing = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	w.writing = false
	return w.flushLocked()
}

// QueueResponse adds resp to the frames waiting to be written, without
// writing them unless they have grown large (maxQueued) or a write is
// already under way, which takes them along. Flush, or any later write,
// writes them. A server answering a batch of requests queues every
// response but the last, so the batch goes out in one system call.
func (w *Writer) QueueResponse(resp Response) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	w.buf = AppendResponseFrame(w.buf, resp)
	if len(w.buf) < maxQueued {
		w.mu.Unlock()
		return nil
	}
	return w.flushLocked()
}

// maxQueued is how many bytes QueueResponse lets wait.
const maxQueued = 64 << 10

// Flush writes the queued frames, unless a write under way takes them.
func (w *Writer) Flush() error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	return w.flushLocked()
}

// WriteResponse is WriteRequest for a response envelope.
func (w *Writer) WriteResponse(resp Response) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	w.buf = AppendResponseFrame(w.buf, resp)
	return w.flushLocked()
}

// flushLocked is called with w.mu held and releases it.
func (w *Writer) flushLocked() error {
	if w.writing {
		w.mu.Unlock()
		return nil
	}
	w.writing = true
	for len(w.buf) > 0 && w.err == nil {
		out := w.buf
		w.buf = w.spare[:0]
		w.mu.Unlock()
		_, err := w.w.Write(out)
		w.mu.Lock()
		if err != nil {
			w.err = err
		}
		if cap(out) <= maxRetainedBuffer {
			w.spare = out[:0]
		} else {
			w.spare = nil
		}
	}
	w.writing = false
	err := w.err
	w.mu.Unlock()
	return err
}
