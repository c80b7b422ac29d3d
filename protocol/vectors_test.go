package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/internal/mpwire"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const vectorsPath = "testdata/vectors.json"

// The conformance vectors are shared with the Python SDK's tests, which read
// testdata/vectors.json. This table is their source; -update regenerates
// the file and the test fails if the two disagree.

type vectorError struct {
	ErrorType string `json:"error_type"`
	Message   string `json:"message"`
	Details   any    `json:"details"`
}

type validVector struct {
	Name      string       `json:"name"`
	Kind      string       `json:"kind"`
	Frame     string       `json:"frame"`
	RequestID string       `json:"request_id"`
	Payload   any          `json:"payload"`
	Error     *vectorError `json:"error"`
}

type malformedFrame struct {
	Name         string     `json:"name"`
	Bytes        string     `json:"bytes"`
	Fault        FrameFault `json:"fault"`
	MaxFrameSize int        `json:"max_frame_size,omitempty"`
}

type malformedEnvelope struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Frame string `json:"frame"`
	Fault string `json:"fault"`
}

type badPayload struct {
	Name    string `json:"name"`
	Payload string `json:"payload"`
	Message string `json:"message"`
}

type vectorFile struct {
	Comment            string              `json:"comment"`
	Valid              []validVector       `json:"valid"`
	MalformedFrames    []malformedFrame    `json:"malformed_frames"`
	MalformedEnvelopes []malformedEnvelope `json:"malformed_envelopes"`
	BadPayloads        []badPayload        `json:"bad_payloads"`
	// DeadlineRequests are requests with the deadline capability's key, and
	// CancelRequests the cancel capability's envelopes, for servers of
	// artifacts that declare them: valid ones, and malformed ones (Fault
	// set, an envelope error).
	DeadlineRequests []extensionVector `json:"deadline_requests"`
	CancelRequests   []extensionVector `json:"cancel_requests"`
	// Stream holds the stream capability's envelopes, both ways: Kind
	// "request" and "credit" are read by servers (DecodeRequest), "item"
	// and "end" by clients (DecodeResponse); with Fault set, an envelope
	// error.
	Stream []streamVector `json:"stream"`
}

type streamVector struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Frame     string `json:"frame"`
	RequestID string `json:"request_id,omitempty"`
	// Payload is the request's payload, or the item.
	Payload any    `json:"payload,omitempty"`
	Stream  int    `json:"stream,omitempty"`
	Credit  int    `json:"credit,omitempty"`
	Fault   string `json:"fault,omitempty"`
}

type extensionVector struct {
	Name       string `json:"name"`
	Frame      string `json:"frame"`
	RequestID  string `json:"request_id,omitempty"`
	Payload    any    `json:"payload,omitempty"`
	DeadlineMS int64  `json:"deadline_ms,omitempty"`
	Fault      string `json:"fault,omitempty"`
}

const vectorID = "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"

func mustID(t testing.TB, s string) ID {
	id, err := ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustPayload(t testing.TB, v any) []byte {
	b, err := EncodePayload(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func frameHex(t testing.TB, body []byte) string {
	f, err := AppendFrame(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(f)
}

func buildVectors(t testing.TB) vectorFile {
	id := mustID(t, vectorID)
	request := func(name string, payload map[string]any) validVector {
		frame := AppendRequestFrame(nil, Request{ID: id, Payload: mustPayload(t, payload)})
		return validVector{Name: name, Kind: "request", Frame: hex.EncodeToString(frame), RequestID: vectorID, Payload: payload}
	}
	success := func(name string, payload map[string]any) validVector {
		frame := AppendResponseFrame(nil, Response{ID: id, Payload: mustPayload(t, payload)})
		return validVector{Name: name, Kind: "response", Frame: hex.EncodeToString(frame), RequestID: vectorID, Payload: payload}
	}
	failure := func(name string, e *AppError) validVector {
		frame := AppendResponseFrame(nil, Response{ID: id, Error: EncodeError(e)})
		return validVector{Name: name, Kind: "response", Frame: hex.EncodeToString(frame), RequestID: vectorID,
			Error: &vectorError{ErrorType: e.Type, Message: e.Message, Details: e.Details}}
	}
	// envelope builds a frame body by hand, for envelopes the encoder refuses to make.
	envelope := func(parts ...[]byte) string { return frameHex(t, bytes.Join(parts, nil)) }
	str := func(s string) []byte { return mpwire.AppendStr(nil, s) }
	bin := func(b []byte) []byte { return appendBinOrNil(nil, b) }
	hexb := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	echo := mustPayload(t, map[string]any{"value": "hi"})

	return vectorFile{
		Comment: "OCIApp wire protocol v1 conformance vectors; generated by `go test ./protocol -run TestVectors -update`. Hex strings are raw bytes; frames include the 4-byte big-endian length.",
		Valid: []validVector{
			request("request_echo", map[string]any{"value": "hi"}),
			request("request_nested", map[string]any{
				"count": 3, "negative": -40000, "ratio": 0.5, "tags": []any{"a", "b"},
				"nested":    map[string]any{"ok": true, "nothing": nil},
				"long_text": "a string of more than thirty-one bytes uses str8",
			}),
			request("request_empty_map", map[string]any{}),
			success("response_success", map[string]any{"value": "hi"}),
			failure("response_validation_error", NewValidationError([]ValidationIssue{
				{Type: "missing", Loc: []any{"value"}, Msg: "Field required", Input: map[string]any{}},
			})),
			failure("response_payload_codec_error", &AppError{Type: ErrorTypePayloadCodec, Message: msgPayloadNotMap}),
			failure("response_app_error", &AppError{Type: "RuntimeError", Message: "boom"}),
			failure("response_app_error_with_details", &AppError{Type: "QuotaExceeded", Message: "quota exceeded", Details: map[string]any{"limit": 10}}),
		},
		MalformedFrames: []malformedFrame{
			{Name: "zero_length", Bytes: "00000000", Fault: FaultZeroLength},
			{Name: "truncated_header", Bytes: "0000", Fault: FaultTruncatedHeader},
			{Name: "truncated_body", Bytes: "0000001081a1", Fault: FaultTruncatedBody},
			{Name: "too_large", Bytes: "00100001", Fault: FaultTooLarge, MaxFrameSize: 1 << 20},
		},
		MalformedEnvelopes: []malformedEnvelope{
			{Name: "request_not_msgpack", Kind: "request", Frame: frameHex(t, []byte{0xc1}), Fault: "body is not msgpack"},
			{Name: "request_not_a_map", Kind: "request", Frame: frameHex(t, hexb("920102")), Fault: "body is not a map"},
			{Name: "request_trailing_bytes", Kind: "request", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("payload"), bin(echo), []byte{0x00}), Fault: "bytes after the envelope map"},
			{Name: "request_missing_payload", Kind: "request", Frame: envelope([]byte{0x81}, str("request_id"), str(vectorID)), Fault: "payload is missing"},
			{Name: "request_missing_id", Kind: "request", Frame: envelope([]byte{0x81}, str("payload"), bin(echo)), Fault: "request_id is missing"},
			{Name: "request_payload_is_str", Kind: "request", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("payload"), str("hi")), Fault: "payload is a string, not bin"},
			{Name: "request_payload_is_nil", Kind: "request", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("payload"), []byte{0xc0}), Fault: "payload is nil"},
			{Name: "request_id_not_uuid", Kind: "request", Frame: envelope([]byte{0x82}, str("request_id"), str("not-a-uuid"), str("payload"), bin(echo)), Fault: "request_id is not a UUID"},
			{Name: "request_id_not_str", Kind: "request", Frame: envelope([]byte{0x82}, str("request_id"), []byte{0x07}, str("payload"), bin(echo)), Fault: "request_id is an integer"},
			{Name: "response_both_payload_and_error", Kind: "response", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), bin(echo), str("error"), bin(EncodeError(&AppError{Type: "E", Message: "m"}))), Fault: "payload and error are both set"},
			{Name: "response_neither_payload_nor_error", Kind: "response", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), []byte{0xc0}, str("error"), []byte{0xc0}), Fault: "payload and error are both nil"},
			{Name: "response_payload_is_str", Kind: "response", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), str("hi"), str("error"), []byte{0xc0}), Fault: "payload is a string, not bin"},
		},
		BadPayloads: []badPayload{
			{Name: "empty", Payload: "", Message: msgPayloadNotMsgpack},
			{Name: "invalid_type_byte", Payload: "c1", Message: msgPayloadNotMsgpack},
			{Name: "truncated_map", Payload: "81a576616c7565", Message: msgPayloadNotMsgpack},
			{Name: "trailing_bytes", Payload: "8000", Message: msgPayloadNotMsgpack},
			{Name: "array", Payload: "920102", Message: msgPayloadNotMap},
			{Name: "string", Payload: "a26869", Message: msgPayloadNotMap},
			{Name: "integer_key", Payload: "8101a178", Message: msgPayloadKeys},
			{Name: "bin_key", Payload: "81c40178a178", Message: msgPayloadKeys},
		},
		CancelRequests: []extensionVector{
			{Name: "cancel", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Cancel: true})), RequestID: vectorID},
			{Name: "cancel_false", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("cancel"), []byte{0xc2}),
				Fault: "cancel must be true"},
			{Name: "cancel_with_payload", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("cancel"), []byte{0xc3}, str("payload"), bin(echo)),
				Fault: "a cancel envelope has no payload"},
			{Name: "cancel_without_id", Frame: envelope([]byte{0x81}, str("cancel"), []byte{0xc3}),
				Fault: "request_id is missing"},
		},
		Stream: []streamVector{
			{Name: "stream_request", Kind: "request", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Payload: echo, Stream: 16})),
				RequestID: vectorID, Payload: map[string]any{"value": "hi"}, Stream: 16},
			{Name: "stream_request_with_deadline", Kind: "request", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Payload: echo, Deadline: 30 * time.Second, Stream: 300})),
				RequestID: vectorID, Payload: map[string]any{"value": "hi"}, Stream: 300},
			{Name: "credit", Kind: "credit", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Credit: 8})),
				RequestID: vectorID, Credit: 8},
			{Name: "item", Kind: "item", Frame: hex.EncodeToString(AppendResponseFrame(nil, Response{ID: id, Payload: mustPayload(t, map[string]any{"n": 1}), Item: true})),
				RequestID: vectorID, Payload: map[string]any{"n": 1}},
			{Name: "end", Kind: "end", Frame: hex.EncodeToString(AppendResponseFrame(nil, Response{ID: id, End: true})),
				RequestID: vectorID},
			{Name: "stream_zero", Kind: "request", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), bin(echo), str("stream"), []byte{0x00}),
				Fault: "stream: must be at least 1"},
			{Name: "stream_str", Kind: "request", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), bin(echo), str("stream"), str("16")),
				Fault: "stream: must be an integer"},
			{Name: "credit_zero", Kind: "credit", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("credit"), []byte{0x00}),
				Fault: "credit: must be at least 1"},
			{Name: "credit_negative", Kind: "credit", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("credit"), []byte{0xff}),
				Fault: "credit: must not be negative"},
			{Name: "credit_with_payload", Kind: "credit", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("credit"), []byte{0x01}, str("payload"), bin(echo)),
				Fault: "a credit envelope has no payload"},
			{Name: "item_nil", Kind: "item", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("item"), []byte{0xc0}),
				Fault: "item must be bin, found nil"},
			{Name: "item_with_error", Kind: "item", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("item"), bin(echo), str("error"), []byte{0xc0}),
				Fault: "an item envelope has no payload, error or end"},
			{Name: "end_false", Kind: "end", Frame: envelope([]byte{0x82}, str("request_id"), str(vectorID), str("end"), []byte{0xc2}),
				Fault: "end must be true"},
			{Name: "end_with_payload", Kind: "end", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("end"), []byte{0xc3}, str("payload"), bin(echo)),
				Fault: "an end envelope has no payload or error"},
		},
		DeadlineRequests: []extensionVector{
			{Name: "deadline_30s", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Payload: echo, Deadline: 30 * time.Second})),
				RequestID: vectorID, Payload: map[string]any{"value": "hi"}, DeadlineMS: 30000},
			{Name: "deadline_1ms", Frame: hex.EncodeToString(AppendRequestFrame(nil, Request{ID: id, Payload: echo, Deadline: time.Microsecond})),
				RequestID: vectorID, Payload: map[string]any{"value": "hi"}, DeadlineMS: 1},
			{Name: "deadline_negative", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), bin(echo), str("deadline_ms"), []byte{0xff}),
				Fault: "deadline_ms: must not be negative"},
			{Name: "deadline_str", Frame: envelope([]byte{0x83}, str("request_id"), str(vectorID), str("payload"), bin(echo), str("deadline_ms"), str("30")),
				Fault: "deadline_ms: must be an integer"},
		},
	}
}

func TestVectorsGolden(t *testing.T) {
	want, err := json.MarshalIndent(buildVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(vectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("reading vectors (run with -update to create them): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date; run go test ./protocol -run TestVectorsGolden -update", vectorsPath)
	}
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// jsonValue normalises a decoded value for comparison with the JSON in the
// vector file (numbers become float64, nil maps compare equal to null).
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtensionVectors(t *testing.T) {
	v := loadVectors(t)
	for group, vectors := range map[string][]extensionVector{"deadline": v.DeadlineRequests, "cancel": v.CancelRequests} {
		for _, v := range vectors {
			t.Run(v.Name, func(t *testing.T) {
				frame := unhex(t, v.Frame)
				body, err := ReadFrame(bytes.NewReader(frame), 0)
				if err != nil {
					t.Fatal(err)
				}
				req, err := DecodeRequest(body)
				if v.Fault != "" {
					var ee *EnvelopeError
					if !errors.As(err, &ee) || !strings.Contains(err.Error(), v.Fault) {
						t.Fatalf("got %v, want an envelope error saying %q", err, v.Fault)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if req.ID.String() != v.RequestID || req.Deadline != time.Duration(v.DeadlineMS)*time.Millisecond || req.Cancel != (group == "cancel") {
					t.Fatalf("decoded %s with deadline %v, cancel %v", req.ID, req.Deadline, req.Cancel)
				}
				if got := AppendRequestFrame(nil, req); !bytes.Equal(got, frame) {
					t.Errorf("re-encoded request differs:\n got %x\nwant %x", got, frame)
				}
			})
		}
	}
}

func TestStreamVectors(t *testing.T) {
	for _, v := range loadVectors(t).Stream {
		t.Run(v.Name, func(t *testing.T) {
			frame := unhex(t, v.Frame)
			body, err := ReadFrame(bytes.NewReader(frame), 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			switch v.Kind {
			case "request", "credit":
				var req Request
				req, err = DecodeRequest(body)
				if err == nil {
					if req.ID.String() != v.RequestID || req.Stream != v.Stream || req.Credit != v.Credit {
						t.Fatalf("decoded %s with stream %d, credit %d", req.ID, req.Stream, req.Credit)
					}
					if v.Kind == "request" {
						wantPayload(t, req.Payload, v.Payload)
					}
					got = AppendRequestFrame(nil, req)
				}
			case "item", "end":
				var resp Response
				resp, err = DecodeResponse(body)
				if err == nil {
					if resp.ID.String() != v.RequestID || resp.Item != (v.Kind == "item") || resp.End != (v.Kind == "end") {
						t.Fatalf("decoded %s with item %v, end %v", resp.ID, resp.Item, resp.End)
					}
					if resp.Item {
						wantPayload(t, resp.Payload, v.Payload)
					}
					got = AppendResponseFrame(nil, resp)
				}
			default:
				t.Fatalf("unknown kind %q", v.Kind)
			}
			if v.Fault != "" {
				var ee *EnvelopeError
				if !errors.As(err, &ee) || !strings.Contains(err.Error(), v.Fault) {
					t.Fatalf("got %v, want an envelope error saying %q", err, v.Fault)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, frame) {
				t.Errorf("re-encoded envelope differs:\n got %x\nwant %x", got, frame)
			}
		})
	}
}

func wantPayload(t *testing.T, payload []byte, want any) {
	t.Helper()
	v, err := DecodePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	if got := jsonValue(t, v); !reflect.DeepEqual(got, jsonValue(t, want)) {
		t.Fatalf("payload %v, want %v", got, want)
	}
}

func TestValidVectorsDecode(t *testing.T) {
	for _, v := range loadVectors(t).Valid {
		t.Run(v.Name, func(t *testing.T) {
			frame := unhex(t, v.Frame)
			body, err := ReadFrame(bytes.NewReader(frame), 0)
			if err != nil {
				t.Fatal(err)
			}
			var id ID
			var payload, errBytes []byte
			switch v.Kind {
			case "request":
				req, err := DecodeRequest(body)
				if err != nil {
					t.Fatal(err)
				}
				id, payload = req.ID, req.Payload
				if got := AppendRequestFrame(nil, req); !bytes.Equal(got, frame) {
					t.Errorf("re-encoded request differs:\n got %x\nwant %x", got, frame)
				}
			case "response":
				resp, err := DecodeResponse(body)
				if err != nil {
					t.Fatal(err)
				}
				id, payload, errBytes = resp.ID, resp.Payload, resp.Error
				if got := AppendResponseFrame(nil, resp); !bytes.Equal(got, frame) {
					t.Errorf("re-encoded response differs:\n got %x\nwant %x", got, frame)
				}
			}
			if id.String() != v.RequestID {
				t.Errorf("request id = %s, want %s", id, v.RequestID)
			}
			if v.Error == nil {
				m, err := DecodePayload(payload)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := jsonValue(t, m), jsonValue(t, v.Payload); !reflect.DeepEqual(got, want) {
					t.Errorf("payload = %v, want %v", got, want)
				}
				return
			}
			appErr, err := DecodeError(errBytes)
			if err != nil {
				t.Fatal(err)
			}
			got := jsonValue(t, vectorError{appErr.Type, appErr.Message, appErr.Details})
			if want := jsonValue(t, v.Error); !reflect.DeepEqual(got, want) {
				t.Errorf("error = %v, want %v", got, want)
			}
		})
	}
}

func TestMalformedFrameVectors(t *testing.T) {
	for _, v := range loadVectors(t).MalformedFrames {
		t.Run(v.Name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(unhex(t, v.Bytes)), v.MaxFrameSize)
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *FrameError", err)
			}
			if fe.Fault != v.Fault {
				t.Errorf("fault = %s, want %s", fe.Fault, v.Fault)
			}
			if !IsMalformed(err) {
				t.Error("IsMalformed = false")
			}
		})
	}
}

func TestMalformedEnvelopeVectors(t *testing.T) {
	for _, v := range loadVectors(t).MalformedEnvelopes {
		t.Run(v.Name, func(t *testing.T) {
			body, err := ReadFrame(bytes.NewReader(unhex(t, v.Frame)), 0)
			if err != nil {
				t.Fatalf("the frame itself must be well formed: %v", err)
			}
			if v.Kind == "request" {
				_, err = DecodeRequest(body)
			} else {
				_, err = DecodeResponse(body)
			}
			var ee *EnvelopeError
			if !errors.As(err, &ee) || ee.Kind != v.Kind {
				t.Fatalf("err = %v, want *EnvelopeError for a %s", err, v.Kind)
			}
		})
	}
}

func TestBadPayloadVectors(t *testing.T) {
	for _, v := range loadVectors(t).BadPayloads {
		t.Run(v.Name, func(t *testing.T) {
			_, err := DecodePayload(unhex(t, v.Payload))
			var pe *PayloadError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *PayloadError", err)
			}
			if pe.Message != v.Message {
				t.Errorf("message = %q, want %q", pe.Message, v.Message)
			}
		})
	}
}
