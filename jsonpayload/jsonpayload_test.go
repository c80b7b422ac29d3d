package jsonpayload

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/protocol"
	"github.com/vmihailenco/msgpack/v5"
)

// TestRoundTrip pins the documented behaviour (docs/daemon.md, "JSON and
// msgpack"): what a JSON request becomes, and how the payload is written
// back.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name, in, out string
	}{
		{"key order kept", `{"b": 1, "a": 2}`, `{"b":1,"a":2}`},
		{"integral float stays a float", `{"f": 1.0, "i": 1}`, `{"f":1.0,"i":1}`},
		{"floats", `{"a": 1.5, "b": 1e-7, "c": 1e21, "d": -0.0}`, `{"a":1.5,"b":1e-7,"c":1e+21,"d":-0.0}`},
		{"large integers", `{"u": 18446744073709551615, "m": -9223372036854775808}`, `{"u":18446744073709551615,"m":-9223372036854775808}`},
		{"beyond float64", `{"x": 1e400}`, `{"x":"+Inf"}`},
		{"strings", `{"s": "<a&b>\u00e9\u2028\"\\\n"}`, `{"s":"<a&b>é\u2028\"\\\n"}`},
		{"nesting", ` { "l" : [ 1 , null , { "x" : true } , [ ] , { } ] } `, `{"l":[1,null,{"x":true},[],{}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := FromJSON([]byte(tt.in), 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ToJSON(payload)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.out {
				t.Errorf("%s became %s, want %s", tt.in, got, tt.out)
			}
		})
	}
}

// TestToJSON covers what only an application's msgpack can hold.
func TestToJSON(t *testing.T) {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		payload []byte
		out     string
	}{
		{"bytes are base64", enc(map[string]any{"b": []byte("bin")}), `{"b":"Ymlu"}`},
		{"float32 keeps its digits", enc(map[string]any{"f": float32(0.1), "g": float32(2)}), ``},
		{"non-string keys become text", enc(map[int]string{1: "x"}), `{"1":"x"}`},
		{"NaN is a string", enc(map[string]any{"n": math.NaN()}), `{"n":"NaN"}`},
		{"timestamps are RFC 3339", enc(map[string]any{"t": time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}), `{"t":"2026-01-02T03:04:05.000000006Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ToJSON(tt.payload)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.out
			if want == "" { // map order of a Go map: either
				if string(got) != `{"f":0.1,"g":2.0}` && string(got) != `{"g":2.0,"f":0.1}` {
					t.Errorf("got %s", got)
				}
				return
			}
			if string(got) != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestFromJSONErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{``, "the request is empty; it must be a JSON object"},
		{`  `, "the request is empty; it must be a JSON object"},
		{`[1]`, "the request must be a JSON object, not an array"},
		{`"x"`, "the request must be a JSON object, not a string"},
		{`true`, "the request must be a JSON object, not a boolean"},
		{`null`, "the request must be a JSON object, not null"},
		{`3`, "the request must be a JSON object, not a number"},
		{`{} {}`, "the request has data after its JSON value"},
		{`{"a": }`, "the request is not valid JSON: invalid character '}' looking for beginning of value"},
		{`{"d":` + strings.Repeat(`[`, 200) + strings.Repeat(`]`, 200) + `}`, "more than 128 levels deep"},
	}
	for _, tt := range tests {
		_, err := FromJSON([]byte(tt.in), 0)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FromJSON(%.20q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	if _, err := FromJSON([]byte(`{"a": 1.5}`), 8); err != ErrTooLarge {
		t.Errorf("a 12-byte payload with a limit of 8: %v, want ErrTooLarge", err)
	}
}

// TestFromJSONIsProtocolPayload: what FromJSON writes, the protocol reads.
func TestFromJSONIsProtocolPayload(t *testing.T) {
	payload, err := FromJSON([]byte(`{"value": "hi", "n": [1, 2.5]}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := protocol.DecodePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	if m["value"] != "hi" || !bytes.Equal(mustJSON(t, payload), []byte(`{"value":"hi","n":[1,2.5]}`)) {
		t.Fatalf("decoded %v", m)
	}
}

func mustJSON(t *testing.T, payload []byte) []byte {
	t.Helper()
	b, err := ToJSON(payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
