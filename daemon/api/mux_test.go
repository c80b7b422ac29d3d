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
	for _, resp := range []MuxResponse{{ID: 7, Payload: []byte{0x80}}, {ID: 8, Error: []byte{0x80}}} {
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
	}
	for name, body := range tests {
		if _, err := DecodeMuxRequest(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeMuxRequest(f *testing.F) {
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Digest: "sha256:x", Payload: []byte{0x80}})[4:])
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Path: "/p", File: "1:2:3:4", Payload: []byte{0x80}})[4:])
	f.Add([]byte{0x81, 0xa2, 'i', 'd', 0x01})
	f.Add(AppendMuxRequest(nil, MuxRequest{ID: 3, Cancel: true})[4:])
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
