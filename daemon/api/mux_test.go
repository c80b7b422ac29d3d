package api

import (
	"context"
	"encoding/binary"
	"math"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestMuxFramesRoundTrip(t *testing.T) {
	reqs := []MuxRequest{
		{ID: 1, Digest: "sha256:" + string(make([]byte, 0)), Payload: []byte{0x80}},
		{ID: 1 << 40, Path: "/a/b.ociapp", File: "1:2:3:4", Payload: []byte{0x81, 0xa1, 'v', 0xc4, 0x01, 0xff}},
		{ID: 9, Cancel: true},
		{ID: 10, Digest: "sha256:x", Payload: []byte{0x80}, Stream: 16},
		{ID: 11, Path: "/a", File: "1:2:3:4", Payload: []byte{0x80}, Stream: 1 << 63},
		{ID: 12, Credit: 8},
		{ID: 13, Credit: 1 << 40},
		{ID: 14, Digest: "sha256:x", Payload: []byte{0x80}, Deadline: 250 * time.Millisecond},
		{ID: 15, Path: "/a", File: "1:2:3:4", Payload: []byte{0x80}, Stream: 4, Deadline: 90 * 24 * time.Hour},
		{ID: 16, Digest: "sha256:x", Payload: []byte{0x80}, Deadline: DeadlinePassed},
	}
	reqs[0].Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, req := range reqs {
		frame := AppendMuxRequest(nil, req)
		if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
			t.Fatalf("length %d for %d bytes", n, len(frame)-4)
		}
		got, err := DecodeMuxRequest(frame[4:])
		if err != nil || !reflect.DeepEqual(got, req) {
			t.Fatalf("%+v %v, want %+v", got, err, req)
		}
		if id, ok := MuxFrameID(frame[4 : 4+MuxIDPrefix]); !ok || id != req.ID {
			t.Fatalf("id %d %v", id, ok)
		}
	}
	for _, resp := range []MuxResponse{{ID: 7, Payload: []byte{0x80}}, {ID: 8, Error: []byte{0x80}}, {ID: 9, Item: []byte{0x80}}, {ID: 10, Item: []byte{}}, {ID: 11, End: true}} {
		frame := AppendMuxResponse(nil, resp)
		got, err := DecodeMuxResponse(frame[4:])
		if err != nil || !reflect.DeepEqual(got, resp) {
			t.Fatalf("%+v %v, want %+v", got, err, resp)
		}
	}
}

func TestMuxRequestRefused(t *testing.T) {
	tests := map[string][]byte{
		"not a map":          {0x91, 0x01},
		"no payload":         {0x81, 0xa2, 'i', 'd', 0x01},
		"no artifact":        {0x82, 0xa2, 'i', 'd', 0x01, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc4, 0x01, 0x80},
		"payload not bin":    {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'd', 'i', 'g', 'e', 's', 't', 0xa1, 'x', 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0x01},
		"bytes after":        append(AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Payload: []byte{0x80}})[4:], 0x00),
		"truncated":          AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Payload: []byte{0x80}})[4:10],
		"digest and path":    AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Path: "/p", File: "f", Payload: []byte{0x80}})[4:],
		"too many keys (17)": {0xde, 0x00, 0x11},
		"cancel false":       {0x82, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0xc2},
		"cancel without id":  {0x81, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0xc3},
		"cancel and payload": {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0xc3, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc4, 0x01, 0x80},
		"stream 0":           withStream(0x00),
		"stream negative":    withStream(0xff),
		"stream not uint":    withStream(0xc3),
		"credit 0":           {0x82, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x00},
		"credit not uint":    {0x82, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0xa1, '8'},
		"credit without id":  {0x81, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x08},
		"credit and cancel":  {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x08, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0xc3},
		"credit and payload": {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x08, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc4, 0x01, 0x80},
		"deadline not int":   withDeadline(0xa3, '2', '5', '0'),
		"deadline float":     withDeadline(0xcb, 0x40, 0x6f, 0x40, 0, 0, 0, 0, 0),
		"deadline nil":       withDeadline(0xc0),
		"deadline in cancel": {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0xc3, 0xab, 'd', 'e', 'a', 'd', 'l', 'i', 'n', 'e', '_', 'm', 's', 0x01},
		"deadline in credit": {0x83, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x08, 0xab, 'd', 'e', 'a', 'd', 'l', 'i', 'n', 'e', '_', 'm', 's', 0x01},
	}
	for name, body := range tests {
		if _, err := DecodeMuxRequest(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The same frame with a valid stream key is a stream request.
	if req, err := DecodeMuxRequest(withStream(0x10)); err != nil || req.Stream != 16 {
		t.Errorf("stream 16: %+v %v", req, err)
	}
}

func TestMuxResponseRefused(t *testing.T) {
	id := []byte{0xa2, 'i', 'd', 0x01}
	tests := map[string][]byte{
		"no answer":        append([]byte{0x81}, id...),
		"item and end":     append(append([]byte{0x83}, id...), 0xa4, 'i', 't', 'e', 'm', 0xc4, 0x00, 0xa3, 'e', 'n', 'd', 0xc3),
		"item and payload": append(append([]byte{0x83}, id...), 0xa4, 'i', 't', 'e', 'm', 0xc4, 0x00, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc4, 0x01, 0x80),
		"end false":        append(append([]byte{0x82}, id...), 0xa3, 'e', 'n', 'd', 0xc2),
		"end not bool":     append(append([]byte{0x82}, id...), 0xa3, 'e', 'n', 'd', 0x01),
		"item not bin":     append(append([]byte{0x82}, id...), 0xa4, 'i', 't', 'e', 'm', 0x01),
		"end without id":   {0x81, 0xa3, 'e', 'n', 'd', 0xc3},
		"error and end":    append(append([]byte{0x83}, id...), 0xa5, 'e', 'r', 'r', 'o', 'r', 0xc4, 0x01, 0x80, 0xa3, 'e', 'n', 'd', 0xc3),
	}
	for name, body := range tests {
		if _, err := DecodeMuxResponse(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestMuxStreamFrameBytes checks the encoders against the examples in
// docs/daemon.md, "Streams".
func TestMuxStreamFrameBytes(t *testing.T) {
	idBytes := []byte{0x82, 0xa2, 'i', 'd', 0xcf, 0, 0, 0, 0, 0, 0, 0, 3}
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"item", AppendMuxResponse(nil, MuxResponse{ID: 3, Item: []byte{0x81, 0xa1, 'i', 0x00}}), append(append([]byte{0, 0, 0, 0x18}, idBytes...), 0xa4, 'i', 't', 'e', 'm', 0xc4, 0x04, 0x81, 0xa1, 'i', 0x00)},
		{"end", AppendMuxResponse(nil, MuxResponse{ID: 3, End: true}), append(append([]byte{0, 0, 0, 0x12}, idBytes...), 0xa3, 'e', 'n', 'd', 0xc3)},
		{"credit", AppendMuxRequest(nil, MuxRequest{ID: 3, Credit: 8}), append(append([]byte{0, 0, 0, 0x15}, idBytes...), 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x08)},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, tt.got, tt.want)
		}
	}
}

// TestMuxDeadline: the time left travels in whole milliseconds rounded up,
// 0 once it is up; the daemon reads 0 and negative values as a time
// already up, and clamps what a Duration cannot hold.
func TestMuxDeadline(t *testing.T) {
	sent := []struct {
		left time.Duration
		want time.Duration
	}{
		{400 * time.Microsecond, time.Millisecond},
		{time.Nanosecond, time.Millisecond},
		{1500 * time.Microsecond, 2 * time.Millisecond},
		{30 * time.Second, 30 * time.Second},
		{DeadlinePassed, DeadlinePassed},
		{-time.Hour, DeadlinePassed},
		{math.MaxInt64, time.Duration(maxDeadlineMS) * time.Millisecond},
	}
	for _, tt := range sent {
		req, err := DecodeMuxRequest(AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Payload: []byte{0x80}, Deadline: tt.left})[4:])
		if err != nil || req.Deadline != tt.want {
			t.Errorf("%v left: decoded %v %v, want %v", tt.left, req.Deadline, err, tt.want)
		}
	}
	read := []struct {
		name string
		v    []byte
		want time.Duration
	}{
		{"0", []byte{0x00}, DeadlinePassed},
		{"-1", []byte{0xff}, DeadlinePassed},
		{"int64 min", []byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, DeadlinePassed},
		{"uint16 30000", []byte{0xcd, 0x75, 0x30}, 30 * time.Second},
		{"int16 30000", []byte{0xd1, 0x75, 0x30}, 30 * time.Second},
		{"uint64 max", []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, time.Duration(maxDeadlineMS) * time.Millisecond},
	}
	for _, tt := range read {
		req, err := DecodeMuxRequest(withDeadline(tt.v...))
		if err != nil || req.Deadline != tt.want {
			t.Errorf("deadline_ms %s: %v %v, want %v", tt.name, req.Deadline, err, tt.want)
		}
	}
}

// TestMuxDeadlineFrameBytes checks the encoder against the example in
// docs/daemon.md, "Deadlines".
func TestMuxDeadlineFrameBytes(t *testing.T) {
	digest := "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	got := AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: digest, Payload: []byte{0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xa2, 'h', 'i'}, Deadline: 249500 * time.Microsecond})
	want := []byte{0, 0, 0, 0x7f, 0x84, 0xa2, 'i', 'd', 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xa6, 'd', 'i', 'g', 'e', 's', 't', 0xd9, 0x47}
	want = append(want, digest...)
	want = append(want, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc4, 0x0a, 0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xa2, 'h', 'i')
	want = append(want, 0xab, 'd', 'e', 'a', 'd', 'l', 'i', 'n', 'e', '_', 'm', 's', 0xcc, 0xfa)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("% x\nwant % x", got, want)
	}
}

// TestDeadlineHeader: the HTTP header is a decimal count of milliseconds,
// rounded up when written; 0 and negative values are a time already up.
func TestDeadlineHeader(t *testing.T) {
	for _, tt := range []struct {
		left time.Duration
		want string
	}{{400 * time.Microsecond, "1"}, {2 * time.Second, "2000"}, {DeadlinePassed, "0"}} {
		if got := FormatDeadlineHeader(tt.left); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.left, got, tt.want)
		}
	}
	for _, tt := range []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"", 0, true},
		{"250", 250 * time.Millisecond, true},
		{"0", DeadlinePassed, true},
		{"-20", DeadlinePassed, true},
		{"99999999999999999999999", time.Duration(maxDeadlineMS) * time.Millisecond, true},
		{"-99999999999999999999999", DeadlinePassed, true},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"1e3", 0, false},
	} {
		h := http.Header{}
		if tt.value != "" {
			h.Set(HeaderDeadline, tt.value)
		}
		got, err := ParseDeadlineHeader(h)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("%q: %v %v, want %v (ok %v)", tt.value, got, err, tt.want, tt.ok)
		}
	}
}

// TestTimeLeft: a context's time until its deadline, none, or passed.
func TestTimeLeft(t *testing.T) {
	if got := TimeLeft(t.Context()); got != 0 {
		t.Errorf("no deadline: %v", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	if got := TimeLeft(ctx); got <= 59*time.Minute || got > time.Hour {
		t.Errorf("an hour: %v", got)
	}
	past, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	if got := TimeLeft(past); got != DeadlinePassed {
		t.Errorf("passed: %v", got)
	}
}

// withDeadline is a request frame's body with a "deadline_ms" key of the
// msgpack value v added.
func withDeadline(v ...byte) []byte {
	body := AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Payload: []byte{0x80}})[4:]
	body[0]++ // one more key in the fixmap
	return append(append(body, 0xab, 'd', 'e', 'a', 'd', 'l', 'i', 'n', 'e', '_', 'm', 's'), v...)
}

// withStream is a request frame's body with a "stream" key of the
// msgpack value v added.
func withStream(v ...byte) []byte {
	body := AppendMuxRequest(nil, MuxRequest{ID: 1, Digest: "d", Payload: []byte{0x80}})[4:]
	body[0]++ // one more key in the fixmap
	return append(append(body, 0xa6, 's', 't', 'r', 'e', 'a', 'm'), v...)
}

func FuzzDecodeMuxRequest(f *testing.F) {
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Digest: "sha256:x", Payload: []byte{0x80}})[4:])
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Path: "/p", File: "1:2:3:4", Payload: []byte{0x80}})[4:])
	f.Add([]byte{0x81, 0xa2, 'i', 'd', 0x01})
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Cancel: true})[4:])
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Digest: "sha256:x", Payload: []byte{0x80}, Stream: 16})[4:])
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Credit: 8})[4:])
	f.Add(withStream(0x00))
	f.Add([]byte{0x82, 0xa2, 'i', 'd', 0x01, 0xa6, 'c', 'r', 'e', 'd', 'i', 't', 0x00})
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Digest: "sha256:x", Payload: []byte{0x80}, Deadline: 250 * time.Millisecond})[4:])
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Path: "/p", File: "1:2:3:4", Payload: []byte{0x80}, Stream: 16, Deadline: DeadlinePassed})[4:])
	f.Add(withDeadline(0xff))
	f.Add(withDeadline(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	f.Add(withDeadline(0xcb, 0x40, 0x6f, 0x40, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeMuxRequest(body)
		if err != nil {
			return
		}
		again, err := DecodeMuxRequest(AppendMuxRequest(nil, req)[4:])
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("%+v does not round-trip: %+v %v", req, again, err)
		}
		MuxFrameID(body) // must not panic
	})
}

func FuzzDecodeMuxResponse(f *testing.F) {
	f.Add(AppendMuxResponse(nil, MuxResponse{ID: 3, Payload: []byte{0x80}})[4:])
	f.Add(AppendMuxResponse(nil, MuxResponse{ID: 3, Error: []byte{0x80}})[4:])
	f.Add(AppendMuxResponse(nil, MuxResponse{ID: 3, Item: []byte{0x80}})[4:])
	f.Add(AppendMuxResponse(nil, MuxResponse{ID: 3, End: true})[4:])
	f.Add([]byte{0x82, 0xa2, 'i', 'd', 0x01, 0xa3, 'e', 'n', 'd', 0xc2})
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := DecodeMuxResponse(body)
		if err != nil {
			return
		}
		again, err := DecodeMuxResponse(AppendMuxResponse(nil, resp)[4:])
		if err != nil || !reflect.DeepEqual(again, resp) {
			t.Fatalf("%+v does not round-trip: %+v %v", resp, again, err)
		}
	})
}
