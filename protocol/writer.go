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
		w = SocketIO(conn)
	}
	return &Writer{w: w}
}

// maxRetainedBuffer is the largest buffer kept for reuse after a write.
const maxRetainedBuffer = 1 << 20

// maxQueued is how many bytes queued frames may hold before they are
// written anyway.
const maxQueued = 64 << 10

// A WriteMode says when a frame put on a Writer is written.
type WriteMode int

const (
	// WriteNow writes the frame before returning, or hands it to a write
	// already under way. The error of a failed write is returned to the
	// goroutine that performed it and to every later caller.
	WriteNow WriteMode = iota
	// WriteGathered is WriteNow for a caller that expects others to write
	// soon: when no write is under way, it yields to the process's other
	// goroutines once before writing, so that frames they put meanwhile
	// go out in the same system call. The yield delays the frame by what
	// the goroutines runnable then do until they block or yield, so
	// callers gather only under load (ModeFor).
	WriteGathered
	// WriteQueued leaves the frame waiting, unless the frames waiting have
	// grown large (maxQueued) or a write under way takes them along; Flush,
	// or any later write, writes them. A server answering a batch of
	// requests queues every response but the last, so the batch goes out
	// in one system call.
	WriteQueued
)

// ModeFor is the mode of a frame sent with inFlight calls in flight on its
// connection, its own included: WriteGathered above two, else WriteNow.
// With one or two, the callers wait for their answers one by one, and
// nothing would join the frame.
func ModeFor(inFlight int) WriteMode {
	if inFlight > 2 {
		return WriteGathered
	}
	return WriteNow
}

// WriteRequest writes req as a frame (WriteNow).
func (w *Writer) WriteRequest(req Request) error { return w.PutRequest(req, WriteNow) }

// PutRequest writes req as a frame, when mode says.
func (w *Writer) PutRequest(req Request, mode WriteMode) error {
	return w.Put(func(b []byte) []byte { return AppendRequestFrame(b, req) }, mode)
}

// WriteResponse writes resp as a frame (WriteNow).
func (w *Writer) WriteResponse(resp Response) error {
	return w.Put(func(b []byte) []byte { return AppendResponseFrame(b, resp) }, WriteNow)
}

// QueueResponse queues resp as a frame (WriteQueued).
func (w *Writer) QueueResponse(resp Response) error {
	return w.Put(func(b []byte) []byte { return AppendResponseFrame(b, resp) }, WriteQueued)
}

// Put appends a frame to the frames waiting to be written, with add, which
// appends it to its argument and returns the result; mode says when it is
// written. Put serves framings other than this protocol's envelopes (the
// daemon's execute channel).
func (w *Writer) Put(add func([]byte) []byte, mode WriteMode) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	w.buf = add(w.buf)
	switch {
	case mode == WriteQueued && len(w.buf) < maxQueued:
		w.mu.Unlock()
		return nil
	case mode == WriteGathered && !w.writing:
		w.writing = true
		w.mu.Unlock()
		runtime.Gosched()
		w.mu.Lock()
		w.writing = false
	}
	return w.flushLocked()
}

// Flush writes the queued frames, unless a write under way takes them.
func (w *Writer) Flush() error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
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
