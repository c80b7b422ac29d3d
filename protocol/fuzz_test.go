package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"
)

// seedFrames adds every frame of the conformance vectors to f's corpus.
func seedFrames(f *testing.F, body bool) {
	v := loadVectors(f)
	add := func(s string) {
		b, _ := hex.DecodeString(s)
		if body && len(b) >= HeaderSize {
			b = b[HeaderSize:]
		}
		f.Add(b)
	}
	for _, x := range v.Valid {
		add(x.Frame)
	}
	for _, x := range v.MalformedEnvelopes {
		add(x.Frame)
	}
	for _, x := range v.MalformedFrames {
		add(x.Bytes)
	}
	for _, x := range append(v.DeadlineRequests, v.CancelRequests...) {
		add(x.Frame)
	}
	for _, x := range v.Stream {
		add(x.Frame)
	}
}

func FuzzReadFrame(f *testing.F) {
	seedFrames(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 12
		r := bytes.NewReader(data)
		for {
			body, err := ReadFrame(r, limit)
			if err != nil {
				var fe *FrameError
				if !errors.Is(err, io.EOF) && !errors.As(err, &fe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(body) == 0 || len(body) > limit {
				t.Fatalf("body of %d bytes escaped the limit", len(body))
			}
			again, err := AppendFrame(nil, body)
			if err != nil || !bytes.Equal(again[HeaderSize:], body) {
				t.Fatal("frame does not round-trip")
			}
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	seedFrames(f, true)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(body)
		if err != nil {
			var ee *EnvelopeError
			if !errors.As(err, &ee) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		frame := AppendRequestFrame(nil, req)
		again, err := DecodeRequest(frame[HeaderSize:])
		if err != nil || again.ID != req.ID || !bytes.Equal(again.Payload, req.Payload) || again.Deadline != (req.Deadline+time.Millisecond-1).Truncate(time.Millisecond) || again.Cancel != req.Cancel || again.Stream != req.Stream || again.Credit != req.Credit {
			t.Fatalf("request does not round-trip: %v", err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	seedFrames(f, true)
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := DecodeResponse(body)
		if err != nil {
			var ee *EnvelopeError
			if !errors.As(err, &ee) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		frame := AppendResponseFrame(nil, resp)
		again, err := DecodeResponse(frame[HeaderSize:])
		if err != nil || again.ID != resp.ID || !bytes.Equal(again.Payload, resp.Payload) || !bytes.Equal(again.Error, resp.Error) || again.Item != resp.Item || again.End != resp.End {
			t.Fatalf("response does not round-trip: %v", err)
		}
		if resp.Error != nil {
			_, _ = DecodeError(resp.Error) // must not panic
		}
	})
}

func FuzzDecodePayload(f *testing.F) {
	for _, p := range loadVectors(f).BadPayloads {
		b, _ := hex.DecodeString(p.Payload)
		f.Add(b)
	}
	f.Add([]byte{0x81, 0xa1, 'k', 0x92, 0x01, 0xc3})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodePayload(b)
		if err != nil {
			var pe *PayloadError
			if !errors.As(err, &pe) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		again, err := EncodePayload(m)
		if err != nil {
			t.Fatalf("decoded payload does not re-encode: %v", err)
		}
		if _, err := DecodePayload(again); err != nil {
			t.Fatalf("re-encoded payload does not decode: %v", err)
		}
	})
}
