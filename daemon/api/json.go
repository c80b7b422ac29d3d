package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// FromJSON converts a value decoded by encoding/json with UseNumber into the
// values the msgpack payload encoder takes: integers become int64 (uint64
// above its range), other numbers float64; maps and arrays are converted
// throughout.
func FromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u
		}
		// encoding/json accepted the syntax, so the only failure left is a
		// number beyond float64's range, which reads as an infinity.
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = FromJSON(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = FromJSON(e)
		}
		return x
	}
	return v
}

// JSONValue converts a value decoded from msgpack into one encoding/json
// can write: maps with non-string keys get their keys' text, and floats
// JSON cannot express (NaN, infinities) become their text. Binary values
// are left as they are and so become base64 strings.
func JSONValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = JSONValue(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = JSONValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = JSONValue(e)
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
