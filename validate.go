package ociapp

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ociapp/ociapp/protocol"
)

// validateInto converts a decoded payload into *dst, collecting every
// problem in pydantic's error shape rather than stopping at the first, so
// Go and Python apps report bad requests alike. Unknown fields are refused
// (extra_forbidden): a misspelt optional field must not be silently ignored.
func validateInto[T any](input map[string]any, dst *T) []protocol.ValidationIssue {
	v := &validator{}
	v.convert(input, reflect.ValueOf(dst).Elem(), nil)
	return v.issues
}

type validator struct {
	issues []protocol.ValidationIssue
}

func (v *validator) fail(loc []any, typ, msg string, input any) {
	v.issues = append(v.issues, protocol.ValidationIssue{Type: typ, Loc: append([]any{}, loc...), Msg: msg, Input: input})
}

// field is a struct field as the wire names it.
type field struct {
	index    int
	name     string
	optional bool
}

// structFields lists t's exported fields under their wire names. A field is
// optional when it is a pointer, or tagged omitempty.
func structFields(t reflect.Type) []field {
	var fields []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts := f.Name, ""
		for _, key := range []string{"msgpack", "json"} {
			if tag, ok := f.Tag.Lookup(key); ok {
				n, o, _ := strings.Cut(tag, ",")
				if n == "-" {
					name = ""
					break
				}
				if n != "" {
					name = n
				}
				opts = o
				break
			}
		}
		if name == "" {
			continue
		}
		optional := f.Type.Kind() == reflect.Pointer || strings.Contains(","+opts+",", ",omitempty,")
		fields = append(fields, field{index: i, name: name, optional: optional})
	}
	return fields
}

func (v *validator) convert(in any, dst reflect.Value, loc []any) {
	t := dst.Type()
	switch t.Kind() {
	case reflect.Interface:
		if in != nil {
			dst.Set(reflect.ValueOf(in))
		}
	case reflect.Pointer:
		if in == nil {
			return
		}
		p := reflect.New(t.Elem())
		v.convert(in, p.Elem(), loc)
		dst.Set(p)
	case reflect.Struct:
		m, ok := in.(map[string]any)
		if !ok {
			v.fail(loc, "model_type", fmt.Sprintf("Input should be a valid dictionary or instance of %s", t.Name()), in)
			return
		}
		known := make(map[string]bool, len(m))
		for _, f := range structFields(t) {
			known[f.name] = true
			val, present := m[f.name]
			floc := append(loc, f.name)
			if !present {
				if !f.optional {
					v.fail(floc, "missing", "Field required", in)
				}
				continue
			}
			v.convert(val, dst.Field(f.index), floc)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !known[k] {
				v.fail(append(loc, k), "extra_forbidden", "Extra inputs are not permitted", m[k])
			}
		}
	case reflect.Map:
		m, ok := in.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			v.fail(loc, "dict_type", "Input should be a valid dictionary", in)
			return
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ev := reflect.New(t.Elem()).Elem()
			v.convert(m[k], ev, append(loc, k))
			out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		dst.Set(out)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			switch b := in.(type) {
			case []byte:
				dst.SetBytes(b)
			case string:
				dst.SetBytes([]byte(b))
			default:
				v.fail(loc, "bytes_type", "Input should be a valid bytes", in)
			}
			return
		}
		items, ok := in.([]any)
		if !ok {
			v.fail(loc, "list_type", "Input should be a valid list", in)
			return
		}
		out := reflect.MakeSlice(t, len(items), len(items))
		for i, item := range items {
			v.convert(item, out.Index(i), append(loc, i))
		}
		dst.Set(out)
	case reflect.String:
		switch s := in.(type) {
		case string:
			dst.SetString(s)
		case []byte:
			// As pydantic's lax mode: bytes are a string when they are
			// UTF-8.
			if !utf8.Valid(s) {
				v.fail(loc, "string_unicode", "Input should be a valid string, unable to parse raw data as a unicode string", in)
				return
			}
			dst.SetString(string(s))
		default:
			v.fail(loc, "string_type", "Input should be a valid string", in)
		}
	case reflect.Bool:
		b, ok := in.(bool)
		if !ok {
			v.fail(loc, "bool_type", "Input should be a valid boolean", in)
			return
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.integer(in, loc)
		if !ok {
			return
		}
		if !n.fitsInt64() || dst.OverflowInt(n.int64()) {
			v.fail(loc, "int_overflow", fmt.Sprintf("Input should fit in %s", t.Kind()), in)
			return
		}
		dst.SetInt(n.int64())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.integer(in, loc)
		if !ok {
			return
		}
		if n.neg && n.mag > 0 {
			v.fail(loc, "greater_than_equal", "Input should be greater than or equal to 0", in)
			return
		}
		if dst.OverflowUint(n.mag) {
			v.fail(loc, "int_overflow", fmt.Sprintf("Input should fit in %s", t.Kind()), in)
			return
		}
		dst.SetUint(n.mag)
	case reflect.Float32, reflect.Float64:
		switch x := in.(type) {
		case float64:
			dst.SetFloat(x)
		case int64:
			dst.SetFloat(float64(x))
		case uint64:
			dst.SetFloat(float64(x))
		default:
			v.fail(loc, "float_type", "Input should be a valid number", in)
		}
	default:
		v.fail(loc, "type_unsupported", fmt.Sprintf("the application's field type %s cannot be decoded", t), in)
	}
}

// integer is a whole number as sign and magnitude, so that the full range of
// both int64 and uint64 fits.
type integer struct {
	neg bool
	mag uint64
}

func (n integer) fitsInt64() bool {
	if n.neg {
		return n.mag <= 1<<63
	}
	return n.mag <= math.MaxInt64
}

func (n integer) int64() int64 {
	if n.neg {
		return -int64(n.mag-1) - 1
	}
	return int64(n.mag)
}

func (v *validator) integer(in any, loc []any) (integer, bool) {
	switch x := in.(type) {
	case int64:
		if x < 0 {
			return integer{neg: true, mag: uint64(-(x + 1)) + 1}, true
		}
		return integer{mag: uint64(x)}, true
	case uint64:
		return integer{mag: x}, true
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			v.fail(loc, "int_from_float", "Input should be a valid integer, got a number with a fractional part", in)
			return integer{}, false
		}
		if math.Abs(x) >= 1<<63 {
			v.fail(loc, "int_overflow", "Input should be a finite integer that fits in 64 bits", in)
			return integer{}, false
		}
		return v.integer(int64(x), loc)
	}
	v.fail(loc, "int_type", "Input should be a valid integer", in)
	return integer{}, false
}
