package protocol

import (
	"bytes"
	"errors"

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

// DecodePayload decodes a payload into a map. Integers come back as int64 or
// uint64, floats as float64, nested maps as map[string]any.
func DecodePayload(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := DecodePayloadInto(b, &m); err != nil {
		return nil, err
	}
	return m, nil
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
	r := &mpReader{b: b}
	if err := r.skip(0); err != nil || !r.done() {
		return &PayloadError{Message: msgPayloadNotMsgpack}
	}
	r.off = 0
	n, err := r.mapLen()
	if err != nil {
		return &PayloadError{Message: msgPayloadNotMap}
	}
	for range n {
		if _, err := r.str(); err != nil {
			return &PayloadError{Message: msgPayloadKeys}
		}
		if err := r.skip(0); err != nil {
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
	dec.SetMapDecoder(decodeStringMap)
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
		if m[k], err = dec.DecodeInterfaceLoose(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func decodeAnyMap(dec *msgpack.Decoder, partial map[string]any, left int) (any, error) {
	m := make(map[any]any, len(partial)+left)
	for k, v := range partial {
		m[k] = v
	}
	for range left {
		k, err := dec.DecodeInterfaceLoose()
		if err != nil {
			return nil, err
		}
		if !hashable(k) {
			return nil, errors.New("map key is not hashable")
		}
		if m[k], err = dec.DecodeInterfaceLoose(); err != nil {
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
	var e struct {
		Type    *string `msgpack:"error_type"`
		Message *string `msgpack:"message"`
		Details any     `msgpack:"details"`
	}
	if err := DecodePayloadInto(b, &e); err != nil {
		return nil, &EnvelopeError{Kind: "error", Reason: err.Error()}
	}
	if e.Type == nil || e.Message == nil {
		return nil, &EnvelopeError{Kind: "error", Reason: "error_type and message must be strings"}
	}
	return &AppError{Type: *e.Type, Message: *e.Message, Details: e.Details}, nil
}

// EncodeError encodes e as the error map of a response envelope, keys in
// the order error_type, message, details. Details that cannot be encoded are
// replaced by their string form rather than losing the error.
func EncodeError(e *AppError) []byte {
	var b []byte
	b = appendMapHeader(b, 3)
	b = appendStr(b, "error_type")
	b = appendStr(b, e.Type)
	b = appendStr(b, "message")
	b = appendStr(b, e.Message)
	b = appendStr(b, "details")
	details, err := marshal(e.Details)
	if err != nil {
		details, _ = marshal(map[string]any{"unencodable": err.Error()})
	}
	return append(b, details...)
}
