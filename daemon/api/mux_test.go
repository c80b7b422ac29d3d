package api

import (
	"encoding/binary"
	"reflect"
	"testing"
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
