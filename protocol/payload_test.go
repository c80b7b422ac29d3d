package protocol

import (
	"bytes"
	"reflect"
	"testing"
)

// Bin values decode as []byte and encode as bin again, invalid UTF-8
// included, in payloads and in error details alike.
func TestBinStaysBin(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want map[string]any
	}{
		{"bin 8, not UTF-8", []byte{0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xc4, 0x01, 0xff}, map[string]any{"value": []byte{0xff}}},
		{"bin 8, empty", []byte{0x81, 0xa1, 'v', 0xc4, 0x00}, map[string]any{"v": []byte{}}},
		{"bin 16 in an array", append([]byte{0x81, 0xa1, 'v', 0x91, 0xc5, 0x00, 0x02}, 0xc3, 0x28), map[string]any{"v": []any{[]byte{0xc3, 0x28}}}},
		{"bin 32 in a nested map", []byte{0x81, 0xa1, 'm', 0x81, 0xa1, 'b', 0xc6, 0, 0, 0, 1, 0x80}, map[string]any{"m": map[string]any{"b": []byte{0x80}}}},
		{"bin key of a nested map", []byte{0x81, 0xa1, 'm', 0x81, 0xc4, 0x01, 'k', 0x01}, map[string]any{"m": map[any]any{"k": int64(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodePayload(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decoded %#v, want %#v", got, tt.want)
			}
			if tt.name == "bin key of a nested map" {
				return // the key is kept by its bytes, as a str
			}
			again, err := EncodePayload(got)
			if err != nil {
				t.Fatal(err)
			}
			// The encoder takes the smallest bin header: decoding again
			// tells bin from str.
			if back, err := DecodePayload(again); err != nil || !reflect.DeepEqual(back, tt.want) {
				t.Fatalf("re-encoded % x decodes to %#v (%v), want %#v", again, back, err, tt.want)
			}
			if tt.name == "bin 8, not UTF-8" && !bytes.Equal(again, tt.raw) {
				t.Fatalf("re-encoded % x, want % x", again, tt.raw)
			}
			// As an application error's details.
			e, err := DecodeError(EncodeError(&AppError{Type: "T", Message: "m", Details: got}))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e.Details, tt.want) {
				t.Fatalf("details %#v, want %#v", e.Details, tt.want)
			}
		})
	}
}
