package daemon

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/ociapp/ociapp/protocol"
)

// FuzzJSONToPayload feeds execute bodies to the JSON decoder: whatever it
// accepts must be a JSON object and become a valid payload.
func FuzzJSONToPayload(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"value": "hi"}`, `{"n": 1, "f": 1.5, "big": 18446744073709551615, "huge": 1e400}`,
		`{"l": [1, null, {"x": true}]}`, `[1]`, `"x"`, `{} {}`, `{"a": }`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		payload, err := jsonToPayload(body)
		if err != nil {
			return
		}
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not one JSON object", body)
		}
		if _, err := protocol.DecodePayload(payload); err != nil {
			t.Fatalf("%q became an invalid payload: %v", body, err)
		}
	})
}
