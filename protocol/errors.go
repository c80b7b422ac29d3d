package protocol

import (
	"errors"
	"fmt"
)

// FrameFault names what was wrong with a frame.
type FrameFault string

// The frame faults of docs/protocol.md; each is fatal for the connection.
const (
	FaultZeroLength      FrameFault = "zero_length"
	FaultTruncatedHeader FrameFault = "truncated_header"
	FaultTruncatedBody   FrameFault = "truncated_body"
	FaultTooLarge        FrameFault = "too_large"
)

// FrameError is a malformed frame. The stream cannot be resynchronised after
// one, so the connection that produced it must be closed.
type FrameError struct {
	Fault  FrameFault
	Length int // the declared body length, when known
	Max    int // the limit, for FaultTooLarge
	Err    error
}

func (e *FrameError) Error() string {
	switch e.Fault {
	case FaultZeroLength:
		return "protocol: frame length is zero; every frame must carry a body"
	case FaultTooLarge:
		return fmt.Sprintf("protocol: frame of %d bytes exceeds the maximum of %d bytes; raise the maximum frame size on both ends or send a smaller payload", e.Length, e.Max)
	case FaultTruncatedHeader:
		return fmt.Sprintf("protocol: stream ended inside a frame header: %v", e.Err)
	case FaultTruncatedBody:
		return fmt.Sprintf("protocol: stream ended inside a %d-byte frame body: %v", e.Length, e.Err)
	}
	return fmt.Sprintf("protocol: malformed frame (%s)", e.Fault)
}

func (e *FrameError) Unwrap() error { return e.Err }

// EnvelopeError is a frame whose body is not a valid envelope of the expected
// kind. Like a FrameError it is fatal for the connection.
type EnvelopeError struct {
	Kind   string // "request", "response" or "error"
	Reason string
}

func (e *EnvelopeError) Error() string {
	return fmt.Sprintf("protocol: invalid %s envelope: %s", e.Kind, e.Reason)
}

// PayloadError is a payload that is not a msgpack map with string keys, or a
// value that cannot be encoded as one. Its Message is the text the server
// reports under the PayloadCodecError type.
type PayloadError struct {
	Message string
	Err     error
}

func (e *PayloadError) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *PayloadError) Unwrap() error { return e.Err }

// The PayloadCodecError messages of the original SDK, kept word for word.
const (
	msgPayloadNotMsgpack = "payload is not valid msgpack"
	msgPayloadNotMap     = "payload must decode to a msgpack map"
	msgPayloadKeys       = "payload keys must be strings"
	msgPayloadEncode     = "payload is not msgpack serializable"
)

// AppError is an error the application reported for one request: the decoded
// error map of a response envelope. The connection stays healthy.
type AppError struct {
	Type    string
	Message string
	Details any
}

func (e *AppError) Error() string {
	return fmt.Sprintf("application error %s: %s", e.Type, e.Message)
}

// The error types a server produces itself.
const (
	ErrorTypeValidation   = "ValidationError"
	ErrorTypePayloadCodec = "PayloadCodecError"
)

// ErrConnectionClosed is wrapped by every error that a Call returns because
// its connection ended: the peer went away, the stream was malformed, or
// the client was closed. Retrying on a new connection is safe only for
// idempotent requests.
var ErrConnectionClosed = errors.New("protocol: connection closed")

// ErrCallTimeout is the error of a CallWithin whose time limit passed
// before its response came.
var ErrCallTimeout = errors.New("protocol: no response within the call's time limit")

// ConnectionError says why a connection ended. It matches
// ErrConnectionClosed with errors.Is and unwraps to its cause.
type ConnectionError struct {
	Err error
}

func (e *ConnectionError) Error() string {
	if e.Err == nil {
		return ErrConnectionClosed.Error()
	}
	return "protocol: connection closed: " + e.Err.Error()
}

func (e *ConnectionError) Unwrap() []error { return []error{ErrConnectionClosed, e.Err} }

// IsMalformed reports whether err is a frame or envelope fault, the kind that
// docs/protocol.md makes fatal for a connection.
func IsMalformed(err error) bool {
	var fe *FrameError
	var ee *EnvelopeError
	return errors.As(err, &fe) || errors.As(err, &ee)
}

// ValidationMessage is the message of every ValidationError.
const ValidationMessage = "application payload validation failed"

// ValidationIssue is one entry of a ValidationError's details.errors list, in
// the shape and key order of pydantic's error list.
type ValidationIssue struct {
	Type  string         `msgpack:"type" json:"type"`
	Loc   []any          `msgpack:"loc" json:"loc"`
	Msg   string         `msgpack:"msg" json:"msg"`
	Input any            `msgpack:"input" json:"input"`
	Ctx   map[string]any `msgpack:"ctx,omitempty" json:"ctx,omitempty"`
}

// NewValidationError returns the error a server reports when a request or
// response does not match its model.
func NewValidationError(issues []ValidationIssue) *AppError {
	return &AppError{
		Type:    ErrorTypeValidation,
		Message: ValidationMessage,
		Details: map[string]any{"errors": issues},
	}
}
