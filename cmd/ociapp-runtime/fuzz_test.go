package main

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/ociapp/ociapp/protocol"
)

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{`{}`, `{"value": "hi"}`, `{"n": 1, "f": 1.5, "big": 18446744073709551615, "neg": -9223372036854775808}`,
		`{"a": [1, {"b": null}], "c": true}`, `[1]`, `"s"`, `{"a": 1e400}`, `{"a":` + "\x00}", `{"a": 1} x`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		req, err := parseRequest(in)
		if err != nil {
			return
		}
		// Whatever parses is a payload the wire can carry, and printing it
		// back gives the same request.
		if _, err := protocol.EncodePayload(req); err != nil {
			t.Fatalf("parsed %q to %#v, which does not encode: %v", in, req, err)
		}
		var buf bytes.Buffer
		if err := writeJSON(&buf, req, false); err != nil {
			t.Fatalf("printing %#v: %v", req, err)
		}
		again, err := parseRequest(buf.String())
		if err != nil {
			t.Fatalf("reparsing %q: %v", buf.String(), err)
		}
		if !reflect.DeepEqual(jsonable(again), jsonable(req)) {
			t.Fatalf("round trip of %q: %#v, want %#v", in, again, req)
		}
	})
}
