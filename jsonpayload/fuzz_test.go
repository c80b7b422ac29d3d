package jsonpayload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ociapp/ociapp/protocol"
)

// treeJSONToPayload is the conversion through a value tree that
// FromJSON replaces: what it accepts, FromJSON must accept with
// the same meaning.
func treeJSONToPayload(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if err := dec.Decode(new(any)); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	return protocol.EncodePayload(treeNumbers(m))
}

// FuzzJSONToPayload feeds execute bodies to the JSON conversion: whatever
// it accepts must be one JSON object and become a valid payload that
// decodes to what the value-tree conversion gives; whatever that accepts,
// it must accept.
func FuzzJSONToPayload(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"value": "hi"}`, `{"n": 1, "f": 1.5, "big": 18446744073709551615, "huge": 1e400}`,
		`{"l": [1, null, {"x": true}]}`, `[1]`, `"x"`, `{} {}`, `{"a": }`, ``,
		`{"s": "a\"b\\c\u00e9\ud83d\ude00", "e": [], "o": {}, "neg": -129, "m": -9223372036854775808}`,
		` { "a" : [ 1 , 2 , { "b" : [ ] } ] , "c" : "\u2028" } `, "{\"bad\": \"\xff\"}",
		`{"d":` + strings.Repeat(`[`, 200) + strings.Repeat(`]`, 200) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		payload, err := FromJSON(body, 1<<20)
		want, wantErr := treeJSONToPayload(body)
		if err != nil {
			if wantErr == nil {
				t.Fatalf("refused %q (%v), which the tree conversion accepts", body, err)
			}
			return
		}
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not one JSON object", body)
		}
		got, err := protocol.DecodePayload(payload)
		if err != nil {
			t.Fatalf("%q became an invalid payload: %v", body, err)
		}
		if wantErr != nil {
			t.Fatalf("accepted %q, which the tree conversion refuses: %v", body, wantErr)
		}
		wantV, _ := protocol.DecodePayload(want)
		if !reflect.DeepEqual(got, wantV) {
			t.Fatalf("%q became %#v, want %#v", body, got, wantV)
		}
	})
}

// treePayloadToJSON is the conversion through a value tree that
// ToJSON replaces.
func treePayloadToJSON(payload []byte) ([]byte, error) {
	v, err := protocol.DecodePayload(payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(treeJSONValue(v))
}

// onlyStringKeys reports whether every map in v has string keys of valid
// UTF-8, so that no two keys can have the same JSON text.
func onlyStringKeys(v any) bool {
	switch x := v.(type) {
	case map[any]any:
		return false
	case map[string]any:
		for k, e := range x {
			if !utf8.ValidString(k) || !onlyStringKeys(e) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !onlyStringKeys(e) {
				return false
			}
		}
	}
	return true
}

// FuzzPayloadToJSON feeds application responses to the JSON conversion:
// its output must be valid JSON with the meaning the value-tree conversion
// gives.
func FuzzPayloadToJSON(f *testing.F) {
	for _, v := range []map[string]any{
		{}, {"value": "hi"}, {"n": int64(-5), "u": uint64(1 << 63), "f": 1.5, "nan": "x", "b": []byte("bin")},
		{"l": []any{1, nil, map[string]any{"x": true}}, "s": "<&>\u2028\"\\\n\x01"},
		{"tiny": 1e-7, "large": 1e21, "neg": math.Copysign(0, -1)},
	} {
		b, err := protocol.EncodePayload(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x81, 0x01, 0x02})                  // an integer key
	f.Add([]byte{0x81, 0xa1, 'k', 0xca, 0, 0, 0, 0}) // a float32
	f.Add([]byte{0x81, 0xa1, 'k', 0xd6, 0xff, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := ToJSON(payload)
		want, wantErr := treePayloadToJSON(payload)
		if err != nil {
			if wantErr == nil {
				t.Fatalf("refused %x (%v), which the tree conversion accepts", payload, err)
			}
			return
		}
		if !json.Valid(got) {
			t.Fatalf("%x became invalid JSON %q", payload, got)
		}
		if wantErr != nil {
			// The tree conversion refuses a few payloads the protocol's
			// checks refuse (nesting, keys); the output is still JSON.
			return
		}
		tree, _ := protocol.DecodePayload(payload)
		if !onlyStringKeys(tree) || slices.ContainsFunc(payload, func(c byte) bool { return c >= 0xc4 && c <= 0xc6 || c == 0xca }) {
			// Keys of other types may share a text; the tree decoder
			// reads binary as text where the documented answer is base64,
			// and a float32 as a float64, whose digits differ.
			return
		}
		var gv, wv any
		if err := json.Unmarshal(got, &gv); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &wv); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gv, wv) {
			t.Fatalf("%x became %s, want %s", payload, got, want)
		}
	})
}

// treeNumbers turns the json.Numbers of a value decoded with UseNumber
// into int64, uint64 or float64, as FromJSON does.
func treeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u
		}
		f, _ := x.Float64() // beyond float64's range: an infinity
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = treeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = treeNumbers(e)
		}
	}
	return v
}

// treeJSONValue makes a decoded payload writable by encoding/json, as
// ToJSON writes it: non-string keys as their text, NaN and infinities as
// strings.
func treeJSONValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = treeJSONValue(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = treeJSONValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = treeJSONValue(e)
		}
		return out
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'g', -1, 32)
		}
	}
	return v
}
