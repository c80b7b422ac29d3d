package protocol

import (
	"encoding/binary"
	"io"
)

// inboxSize is the buffer an inbox reads into; a frame that does not fit in
// it is read straight into its own body instead.
const inboxSize = 64 << 10

// An inbox assembles frames from the bytes read off a connection, whatever
// the reads' boundaries. It lets a Client's reads be made by whichever
// goroutine gets there first (its reader, or a caller polling for its own
// response) and stop at any byte, which a bufio.Reader driven by ReadFrame
// cannot: ReadFrame blocks until its frame is whole.
//
// Its faults are ReadFrame's, for the same bytes.
type inbox struct {
	maxFrame int
	buf      []byte // buf[start:end] is read and not yet framed
	start    int
	end      int
	// big is the body of a frame too large for buf, read straight into it;
	// got counts its bytes read so far.
	big []byte
	got int
}

// newInbox returns an inbox for frames of up to maxFrame bytes that reads
// into a buffer of size bytes (inboxSize outside tests).
func newInbox(maxFrame, size int) inbox {
	return inbox{maxFrame: maxFrame, buf: make([]byte, size)}
}

// space returns where the next read goes: never empty.
func (b *inbox) space() []byte {
	if b.big != nil {
		return b.big[b.got:]
	}
	if b.end == len(b.buf) {
		// next keeps a partial frame that does not fit from buf's start in
		// big, so moving the partial bytes down always frees space.
		b.end = copy(b.buf, b.buf[b.start:b.end])
		b.start = 0
	}
	return b.buf[b.end:]
}

// filled records n bytes read into what space returned.
func (b *inbox) filled(n int) {
	if b.big != nil {
		b.got += n
	} else {
		b.end += n
	}
}

// next returns the next whole frame's body, in memory of its own, or nil
// when no frame is whole yet.
func (b *inbox) next() ([]byte, error) {
	if b.big != nil {
		if b.got < len(b.big) {
			return nil, nil
		}
		body := b.big
		b.big, b.got = nil, 0
		return body, nil
	}
	avail := b.end - b.start
	if avail < HeaderSize {
		return nil, nil
	}
	size, err := checkLength(binary.BigEndian.Uint32(b.buf[b.start:]), b.maxFrame)
	if err != nil {
		return nil, err
	}
	from := b.start + HeaderSize
	switch {
	case avail >= HeaderSize+size:
		body := make([]byte, size)
		copy(body, b.buf[from:from+size])
		b.start = from + size
		if b.start == b.end {
			b.start, b.end = 0, 0
		}
		return body, nil
	case HeaderSize+size > len(b.buf):
		b.big = make([]byte, size)
		b.got = copy(b.big, b.buf[from:b.end])
		b.start, b.end = 0, 0
	}
	return nil, nil
}

// eof returns what the connection's end means here: io.EOF between frames,
// a *FrameError inside one.
func (b *inbox) eof() error {
	if b.big != nil {
		return &FrameError{Fault: FaultTruncatedBody, Length: len(b.big), Err: io.ErrUnexpectedEOF}
	}
	switch avail := b.end - b.start; {
	case avail == 0:
		return io.EOF
	case avail < HeaderSize:
		return &FrameError{Fault: FaultTruncatedHeader, Err: io.ErrUnexpectedEOF}
	default:
		// next has taken every whole frame and checked this one's length.
		return &FrameError{Fault: FaultTruncatedBody, Length: int(binary.BigEndian.Uint32(b.buf[b.start:])), Err: io.ErrUnexpectedEOF}
	}
}
