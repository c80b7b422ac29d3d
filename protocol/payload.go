package protocol

import (
	"bytes"
	"errors"
	"math"

	"github.com/ociapp/ociapp/internal/mpwire"
	"github.com/vmihailenco/msgpack/v5"
)

// EncodePayload encodes v (a map with string keys, or a struct) as a msgpack
// map. Struct fields are named by their msgpack tag, then their json tag, then
// their Go name. Map keys are written in sorted order so that equal values
// encode to equal bytes; integers take their smallest encoding, as the
// original encoder does.
func EncodePayload(v any) ([]byte, error) {
	b, err := marshal(v)
	if err != nil {
		return nil, &PayloadError{Message: msgPayloadEncode, Err: err}
	}
	if err := checkPayload(b); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodePayload decodes a payload into a map. Integers come back as int64
// (uint64 only above the int64 range), floats as float64, bin as []byte (so
// that it encodes as bin again, whatever bytes it holds), arrays as []any,
// nested maps as map[string]any (map[any]any if a key is not a string).
func DecodePayload(b []byte) (map[string]any, error) {
	if err := checkPayload(b); err != nil {
		return nil, err
	}
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(b))
	v, err := decodeStringMap(dec)
	if err != nil {
		return nil, &PayloadError{Message: msgPayloadNotMsgpack, Err: err}
	}
	return v.(map[string]any), nil // checkPayload guarantees string keys
}

// DecodePayloadInto checks that b is a msgpack map with string keys, then
// decodes it into v.
func DecodePayloadInto(b []byte, v any) error {
	if err := checkPayload(b); err != nil {
		return err
	}
	if err := unmarshal(b, v); err != nil {
		return &PayloadError{Message: msgPayloadNotMsgpack, Err: err}
	}
	return nil
}

// checkPayload applies the original server's rules, in its order: valid
// msgpack (one value, nothing after it), a map, string keys.
func checkPayload(b []byte) error {
	r := mpwire.NewReader(b)
	if err := r.Skip(); err != nil || !r.Done() {
		return &PayloadError{Message: msgPayloadNotMsgpack}
	}
	r = mpwire.NewReader(b)
	n, err := r.MapLen()
	if err != nil {
		return &PayloadError{Message: msgPayloadNotMap}
	}
	for range n {
		if _, err := r.Str(); err != nil {
			return &PayloadError{Message: msgPayloadKeys}
		}
		if err := r.Skip(); err != nil {
			return &PayloadError{Message: msgPayloadNotMsgpack}
		}
	}
	return nil
}

// Marshal encodes any value with the payload encoder's conventions. Error
// details and other nested values use it.
func Marshal(v any) ([]byte, error) { return marshal(v) }

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	enc.SetCustomStructTag("json")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func unmarshal(b []byte, v any) error {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(b))
	dec.UseLooseInterfaceDecoding(true)
	dec.SetCustomStructTag("json")
	return dec.Decode(v)
}

// decodeStringMap makes nested maps map[string]any when their keys are
// strings, and map[any]any otherwise, instead of failing.
func decodeStringMap(dec *msgpack.Decoder) (any, error) {
	n, err := dec.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	m := make(map[string]any, n)
	for i := range n {
		code, err := dec.PeekCode()
		if err != nil {
			return nil, err
		}
		if !isStrCode(code) {
			return decodeAnyMap(dec, m, n-i)
		}
		k, err := dec.DecodeString()
		if err != nil {
			return nil, err
		}
		if m[k], err = decodeValue(dec); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// decodeValue decodes any value with DecodePayload's type conventions.
func decodeValue(dec *msgpack.Decoder) (any, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c >= 0xc4 && c <= 0xc6: // bin 8, 16, 32
		// The loose decoder would make it a string, which encodes as str:
		// binary data, invalid UTF-8 included, must stay bin.
		return dec.DecodeBytes()
	case c >= 0xcc && c <= 0xcf: // unsigned integers of 1 to 8 bytes
		u, err := dec.DecodeUint64()
		if err != nil || u > math.MaxInt64 {
			return u, err
		}
		return int64(u), nil
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		return decodeStringMap(dec)
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		n, err := dec.DecodeArrayLen()
		if err != nil || n < 0 {
			return nil, err
		}
		items := make([]any, n)
		for i := range items {
			if items[i], err = decodeValue(dec); err != nil {
				return nil, err
			}
		}
		return items, nil
	}
	return dec.DecodeInterfaceLoose()
}

func decodeAnyMap(dec *msgpack.Decoder, partial map[string]any, left int) (any, error) {
	m := make(map[any]any, len(partial)+left)
	for k, v := range partial {
		m[k] = v
	}
	for range left {
		k, err := decodeValue(dec)
		if err != nil {
			return nil, err
		}
		if b, ok := k.([]byte); ok {
			// A bin key is kept by its bytes: a slice cannot be a key.
			k = string(b)
		}
		if !hashable(k) {
			return nil, errors.New("map key is not hashable")
		}
		if m[k], err = decodeValue(dec); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func hashable(v any) bool {
	switch v.(type) {
	case []any, map[string]any, map[any]any, []byte:
		return false
	}
	return true
}

func isStrCode(c byte) bool { return c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb) }

// DecodeError decodes the error map of a response envelope.
func DecodeError(b []byte) (*AppError, error) {
	m, err := DecodePayload(b)
	if err != nil {
		return nil, &EnvelopeError{Kind: "error", Reason: err.Error()}
	}
	typ, ok1 := m["error_type"].(string)
	msg, ok2 := m["message"].(string)
	if !ok1 || !ok2 {
		return nil, &EnvelopeError{Kind: "error", Reason: "error_type and message must be strings"}
	}
	return &AppError{Type: typ, Message: msg, Details: m["details"]}, nil
}

// EncodeError encodes e as the error map of a response envelope, keys in
// the order error_type, message, details. Details that cannot be encoded are
// replaced by their string form rather than losing the error.
func EncodeError(e *AppError) []byte {
	var b []byte
	b = mpwire.AppendMapHeader(b, 3)
	b = mpwire.AppendStr(b, "error_type")
	b = mpwire.AppendStr(b, e.Type)
	b = mpwire.AppendStr(b, "message")
	b = mpwire.AppendStr(b, e.Message)
	b = mpwire.AppendStr(b, "details")
	details, err := marshal(e.Details)
	if err != nil {
		details, _ = marshal(map[string]any{"unencodable": err.Error()})
	}
	return append(b, details...)
}
