package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame's big-endian length prefix.
const HeaderSize = 4

// DefaultMaxFrameSize bounds a frame body when no other limit is configured.
// It keeps a peer from making the reader allocate up to 4 GiB.
const DefaultMaxFrameSize = 16 << 20

// DefaultSocketPath is where an application server listens inside a container.
const DefaultSocketPath = "/run/ociapp/app.sock"

// ReadFrame reads one frame from r and returns its body. A body longer than
// maxSize (DefaultMaxFrameSize when maxSize <= 0) is refused before it is read.
// A clean end of stream before the first header byte returns io.EOF; every
// other fault is a *FrameError.
func ReadFrame(r io.Reader, maxSize int) ([]byte, error) {
	var header [HeaderSize]byte
	n, err := io.ReadFull(r, header[:])
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, &FrameError{Fault: FaultTruncatedHeader, Err: err}
	}
	size, err := checkLength(binary.BigEndian.Uint32(header[:]), maxSize)
	if err != nil {
		return nil, err
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, &FrameError{Fault: FaultTruncatedBody, Length: size, Err: err}
	}
	return body, nil
}

// FrameBuffered reports whether r holds a whole frame in its buffer, so that
// reading it needs no system call. A frame whose header is invalid counts
// as whole: reading it fails at once.
func FrameBuffered(r *bufio.Reader) bool {
	n := r.Buffered()
	if n < HeaderSize {
		return false
	}
	header, _ := r.Peek(HeaderSize)
	return uint64(n-HeaderSize) >= uint64(binary.BigEndian.Uint32(header))
}

func checkLength(length uint32, maxSize int) (int, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	switch {
	case length == 0:
		return 0, &FrameError{Fault: FaultZeroLength}
	case uint64(length) > uint64(maxSize):
		return 0, &FrameError{Fault: FaultTooLarge, Length: int(length), Max: maxSize}
	}
	return int(length), nil
}

// AppendFrame appends body to dst as one frame: its length, then its bytes.
func AppendFrame(dst, body []byte) ([]byte, error) {
	if len(body) == 0 {
		return dst, &FrameError{Fault: FaultZeroLength}
	}
	if uint64(len(body)) > 0xFFFFFFFF {
		return dst, &FrameError{Fault: FaultTooLarge, Length: len(body), Max: 0xFFFFFFFF}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...), nil
}

// WriteFrame writes body to w as one frame in a single Write call.
func WriteFrame(w io.Writer, body []byte) error {
	frame, err := AppendFrame(make([]byte, 0, HeaderSize+len(body)), body)
	if err != nil {
		return err
	}
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("writing frame: %w", err)
	}
	return nil
}

// beginFrame reserves a frame header at the end of dst; finishFrame fills it
// in once the body has been appended. Encoding straight into the output
// buffer saves a copy of every body.
func beginFrame(dst []byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0), len(dst)
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-HeaderSize))
	return dst
}
