// Package ociapp is the Go SDK for OCIApp applications: implement
// Application, call Main, and the binary serves wire protocol v1 on a Unix
// socket inside its container (or StreamApplication and MainStream, for an
// application that answers with a sequence of items).
package ociapp

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/ociapp/ociapp/protocol"
)

// Application is an OCIApp application: one typed handler. Req and Resp are
// structs (or map[string]any); fields are named by their msgpack tag, then
// their json tag, then their Go name.
type Application[Req, Resp any] interface {
	Execute(ctx context.Context, req Req) (Resp, error)
}

// Func adapts a function to Application.
type Func[Req, Resp any] func(ctx context.Context, req Req) (Resp, error)

// Execute calls f.
func (f Func[Req, Resp]) Execute(ctx context.Context, req Req) (Resp, error) { return f(ctx, req) }

// Error is an error an application returns to control what the caller
// sees: the error_type, message and details of the error response.
type Error struct {
	Type    string
	Message string
	Details any
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// Handler turns request payloads into response payloads. NewHandler makes one
// from an Application, NewStreamHandler one that also implements
// StreamHandler from a StreamApplication; Server serves one.
type Handler interface {
	// Handle returns the response payload, or the error to report.
	Handle(ctx context.Context, payload []byte) ([]byte, *protocol.AppError)
	// Schemas returns the JSON Schemas of the request and the response.
	Schemas() (request, response map[string]any)
}

// NewHandler wraps app: it validates each request payload into Req,
// reporting every problem as one ValidationError, calls Execute, and encodes
// Resp.
func NewHandler[Req, Resp any](app Application[Req, Resp]) Handler {
	return &typedHandler[Req, Resp]{app: app}
}

type typedHandler[Req, Resp any] struct {
	app Application[Req, Resp]
}

func (h *typedHandler[Req, Resp]) Handle(ctx context.Context, payload []byte) ([]byte, *protocol.AppError) {
	input, err := protocol.DecodePayload(payload)
	if err != nil {
		return nil, toAppError(err)
	}
	var req Req
	if issues := validateInto(input, &req); len(issues) > 0 {
		return nil, protocol.NewValidationError(issues)
	}
	resp, err := h.app.Execute(ctx, req)
	if err != nil {
		return nil, toAppError(err)
	}
	out, err := protocol.EncodePayload(resp)
	if err != nil {
		return nil, toAppError(err)
	}
	return out, nil
}

func (h *typedHandler[Req, Resp]) Schemas() (request, response map[string]any) {
	return schemaOf(reflect.TypeFor[Req]()), schemaOf(reflect.TypeFor[Resp]())
}

// StreamApplication is an application that answers each request with a
// sequence of items (the stream capability, docs/protocol.md). Stream sends
// each item with send, which blocks until the caller has granted credit for
// it and it is written, so a consumer that stops reading stops Stream; send
// returns an error wrapping ctx.Err() once the request is cancelled, its
// deadline passes or its connection ends, and Stream should then return.
// Returning nil ends the stream; an error after some items ends it with
// that error, reported as Execute's are.
type StreamApplication[Req, Item any] interface {
	Stream(ctx context.Context, req Req, send func(Item) error) error
}

// StreamFunc adapts a function to StreamApplication.
type StreamFunc[Req, Item any] func(ctx context.Context, req Req, send func(Item) error) error

// Stream calls f.
func (f StreamFunc[Req, Item]) Stream(ctx context.Context, req Req, send func(Item) error) error {
	return f(ctx, req, send)
}

// StreamHandler is a Handler whose requests are answered with a stream of
// items. Server calls HandleStream for a request asking for a stream, and
// Handle for any other.
type StreamHandler interface {
	Handler
	// HandleStream sends each item payload with send, which blocks until
	// the request has credit for it and it is written, and fails once the
	// request's context has ended. It returns the error to end the stream
	// with, or nil.
	HandleStream(ctx context.Context, payload []byte, send func(item []byte) error) *protocol.AppError
}

// errorTypeStreamRequired is the error a stream handler answers to a
// request that does not ask for a stream.
const errorTypeStreamRequired = "StreamRequired"

// NewStreamHandler wraps app as NewHandler wraps an Application: each
// request payload is validated into Req, and each item is encoded as a
// response is. A request that does not ask for a stream is answered with
// the error StreamRequired.
func NewStreamHandler[Req, Item any](app StreamApplication[Req, Item]) Handler {
	return &typedStreamHandler[Req, Item]{app: app}
}

type typedStreamHandler[Req, Item any] struct {
	app StreamApplication[Req, Item]
}

func (h *typedStreamHandler[Req, Item]) Handle(context.Context, []byte) ([]byte, *protocol.AppError) {
	return nil, &protocol.AppError{Type: errorTypeStreamRequired, Message: "this application streams its responses: call it as a stream"}
}

func (h *typedStreamHandler[Req, Item]) HandleStream(ctx context.Context, payload []byte, send func([]byte) error) *protocol.AppError {
	input, err := protocol.DecodePayload(payload)
	if err != nil {
		return toAppError(err)
	}
	var req Req
	if issues := validateInto(input, &req); len(issues) > 0 {
		return protocol.NewValidationError(issues)
	}
	err = h.app.Stream(ctx, req, func(item Item) error {
		out, err := protocol.EncodePayload(item)
		if err != nil {
			return fmt.Errorf("encoding an item: %w", err)
		}
		return send(out)
	})
	if err != nil {
		return toAppError(err)
	}
	return nil
}

// Schemas returns the request's schema and, as the response's, the item's.
func (h *typedStreamHandler[Req, Item]) Schemas() (request, response map[string]any) {
	return schemaOf(reflect.TypeFor[Req]()), schemaOf(reflect.TypeFor[Item]())
}

// toAppError maps an error to what the caller sees. An *Error or
// *protocol.AppError anywhere in the chain sets all three fields; a payload
// codec failure is a PayloadCodecError; any other error is reported under its
// Go type name ("Error" for errors.New and fmt.Errorf values), with its text.
func toAppError(err error) *protocol.AppError {
	var e *Error
	if errors.As(err, &e) {
		return &protocol.AppError{Type: e.Type, Message: e.Message, Details: e.Details}
	}
	var ae *protocol.AppError
	if errors.As(err, &ae) {
		return ae
	}
	var pe *protocol.PayloadError
	if errors.As(err, &pe) {
		return &protocol.AppError{Type: protocol.ErrorTypePayloadCodec, Message: pe.Message}
	}
	typeName := errorTypeName(err)
	msg := err.Error()
	if msg == "" {
		msg = typeName
	}
	return &protocol.AppError{Type: typeName, Message: msg}
}

func errorTypeName(err error) string {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := t.Name()
	if name == "" || t.PkgPath() == "errors" || (t.PkgPath() == "fmt" && name != "") {
		return "Error"
	}
	return name
}

// panicError is what a panic in Execute or Stream becomes.
func panicError(v any) *protocol.AppError {
	return &protocol.AppError{Type: "Panic", Message: fmt.Sprint(v)}
}
