package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

// inboxFrames feeds data to an inbox in reads of the sizes chunks gives in
// turn (cycling; 0 is taken as 1), as a socket might deliver it, and
// returns the bodies it makes and the error that ends them (io.EOF after
// the last whole frame).
func inboxFrames(data []byte, chunks []byte, maxFrame, bufSize int) ([][]byte, error) {
	in := newInbox(maxFrame, bufSize)
	var bodies [][]byte
	for i := 0; ; i++ {
		if len(data) == 0 {
			return bodies, in.eof()
		}
		size := 1
		if len(chunks) > 0 {
			size = max(int(chunks[i%len(chunks)])*37, 1)
		}
		n := copy(in.space()[:min(size, len(in.space()))], data)
		data = data[n:]
		in.filled(n)
		for {
			body, err := in.next()
			if err != nil {
				return bodies, err
			}
			if body == nil {
				break
			}
			bodies = append(bodies, body)
		}
	}
}

// readFrames is inboxFrames done by ReadFrame.
func readFrames(data []byte, maxFrame int) ([][]byte, error) {
	r := bytes.NewReader(data)
	var bodies [][]byte
	for {
		body, err := ReadFrame(r, maxFrame)
		if err != nil {
			return bodies, err
		}
		bodies = append(bodies, body)
	}
}

func frameOf(size int, fill byte) []byte {
	f := binary.BigEndian.AppendUint32(nil, uint32(size))
	return append(f, bytes.Repeat([]byte{fill}, size)...)
}

func TestInboxMatchesReadFrame(t *testing.T) {
	big := frameOf(inboxSize+100, 'b') // read straight into its body
	whole := frameOf(inboxSize-HeaderSize, 'w')
	tests := map[string][]byte{
		"nothing":                  nil,
		"one small frame":          frameOf(3, 'a'),
		"frames back to back":      append(frameOf(3, 'a'), frameOf(5, 'c')...),
		"a frame filling buf":      whole,
		"a frame larger than buf":  big,
		"small, large, small":      append(append(frameOf(2, 'a'), big...), frameOf(1, 'z')...),
		"truncated header":         {0, 0},
		"truncated body":           frameOf(10, 'x')[:8],
		"truncated large body":     big[:inboxSize],
		"zero length":              {0, 0, 0, 0},
		"too large":                {0x7f, 0, 0, 0, 1},
		"a frame after a bad one":  append([]byte{0, 0, 0, 0}, frameOf(1, 'a')...),
		"many frames across a buf": bytes.Repeat(frameOf(1000, 'm'), 200),
	}
	for name, data := range tests {
		for _, chunks := range [][]byte{nil, {1}, {255}, {3, 200, 1}} {
			gotBodies, gotErr := inboxFrames(data, chunks, DefaultMaxFrameSize, inboxSize)
			wantBodies, wantErr := readFrames(data, DefaultMaxFrameSize)
			if !reflect.DeepEqual(gotBodies, wantBodies) || !sameFrameError(gotErr, wantErr) {
				t.Errorf("%s, reads %v: got %d frames, %v; ReadFrame: %d frames, %v",
					name, chunks, len(gotBodies), gotErr, len(wantBodies), wantErr)
			}
		}
	}
}

// sameFrameError reports whether a and b are both io.EOF or both
// *FrameError with the same fault and length.
func sameFrameError(a, b error) bool {
	if a == io.EOF || b == io.EOF { //nolint:errorlint // the end between frames, never wrapped
		return a == b
	}
	var fa, fb *FrameError
	return errors.As(a, &fa) && errors.As(b, &fb) && fa.Fault == fb.Fault && fa.Length == fb.Length && fa.Max == fb.Max
}

func FuzzInbox(f *testing.F) {
	seedFrames(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 12
		// The data's first byte, when there is one, picks the reads' sizes.
		var chunks []byte
		if len(data) > 0 {
			chunks = []byte{data[0], data[0] / 3, 1}
		}
		// A small buffer, so that frames larger than it are common.
		gotBodies, gotErr := inboxFrames(data, chunks, limit, 64)
		wantBodies, wantErr := readFrames(data, limit)
		if !reflect.DeepEqual(gotBodies, wantBodies) || !sameFrameError(gotErr, wantErr) {
			t.Fatalf("inbox: %d frames, %v; ReadFrame: %d frames, %v", len(gotBodies), gotErr, len(wantBodies), wantErr)
		}
	})
}
