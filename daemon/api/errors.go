package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/jsonpayload"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// Code is the stable, machine-readable kind of an error response.
type Code string

// The error codes. Each maps to one HTTP status (Code.Status) and, where the
// in-process runtime has one, to one Go error type (Error.Err).
const (
	CodeAppError          Code = "app_error"          // *runtime.AppError
	CodeRequestTimeout    Code = "request_timeout"    // *runtime.RequestTimeoutError
	CodeStartupFailed     Code = "startup_failed"     // *runtime.StartupError
	CodeWorkerCrashed     Code = "worker_crashed"     // *runtime.WorkerCrashError
	CodeOverloaded        Code = "overloaded"         // *runtime.OverloadedError
	CodeArtifactInvalid   Code = "artifact_invalid"   // *runtime.ArtifactError
	CodeArtifactNotFound  Code = "artifact_not_found" // the daemon holds no such upload
	CodeEngineUnavailable Code = "engine_unavailable" // *runtime.EngineUnavailableError
	CodeClosed            Code = "closed"             // runtime.ErrClosed
	CodeUnauthorized      Code = "unauthorized"
	CodeBodyTooLarge      Code = "body_too_large"
	CodeBodyTimeout       Code = "body_timeout" // the body arrived too slowly
	CodeStorageFull       Code = "storage_full" // the upload does not fit in the store's quota
	CodeBadRequest        Code = "bad_request"
	CodeUnsupportedMedia  Code = "unsupported_media_type"
	CodeNotFound          Code = "not_found"
	CodeMethodNotAllowed  Code = "method_not_allowed"
	CodeInternal          Code = "internal"
)

var statuses = map[Code]int{
	CodeAppError:          http.StatusUnprocessableEntity,
	CodeRequestTimeout:    http.StatusGatewayTimeout,
	CodeStartupFailed:     http.StatusBadGateway,
	CodeWorkerCrashed:     http.StatusBadGateway,
	CodeOverloaded:        http.StatusServiceUnavailable,
	CodeArtifactInvalid:   http.StatusUnprocessableEntity,
	CodeArtifactNotFound:  http.StatusNotFound,
	CodeEngineUnavailable: http.StatusServiceUnavailable,
	CodeClosed:            http.StatusServiceUnavailable,
	CodeUnauthorized:      http.StatusUnauthorized,
	CodeBodyTooLarge:      http.StatusRequestEntityTooLarge,
	CodeBodyTimeout:       http.StatusRequestTimeout,
	CodeStorageFull:       http.StatusInsufficientStorage,
	CodeBadRequest:        http.StatusBadRequest,
	CodeUnsupportedMedia:  http.StatusUnsupportedMediaType,
	CodeNotFound:          http.StatusNotFound,
	CodeMethodNotAllowed:  http.StatusMethodNotAllowed,
	CodeInternal:          http.StatusInternalServerError,
}

// Status returns the HTTP status of responses with this code; an unknown
// code is an internal error.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Fault names of artifact_invalid errors: stable words for artifact.Fault.
var faultNames = map[artifact.Fault]string{
	artifact.FaultMissing:              "missing",
	artifact.FaultUnreadable:           "unreadable",
	artifact.FaultNotTar:               "not_tar",
	artifact.FaultTruncated:            "truncated",
	artifact.FaultNoImage:              "no_image",
	artifact.FaultDigestMismatch:       "digest_mismatch",
	artifact.FaultUnsupportedMediaType: "unsupported_media_type",
	artifact.FaultAmbiguous:            "ambiguous",
	artifact.FaultMalformed:            "malformed",
}

// Error is the body of every error response, in JSON or msgpack. Code and
// Message are always present; the other fields belong to particular codes
// and are omitted when zero.
type Error struct {
	// Status is the HTTP status the error came with (set by Decode's
	// callers; not part of the body).
	Status int

	Code    Code
	Message string

	// app_error: the application's error map.
	ErrorType string
	Details   any

	// request_timeout, startup_failed, worker_crashed, overloaded.
	Artifact    string
	ContainerID string
	Reason      string
	Exited      bool // ExitCode and OOMKilled are meaningful only when set
	ExitCode    int
	OOMKilled   bool
	Logs        string
	RetryIn     time.Duration // retry_in_ms
	Timeout     time.Duration // timeout_ms
	Queued      int

	// CallerDeadline (caller_deadline) marks a request_timeout whose
	// time was the caller's (HeaderDeadline, a request frame's
	// "deadline_ms"), not the daemon's request timeout: Timeout is then
	// the time the caller had left when the daemon received the request.
	CallerDeadline bool

	// artifact_invalid: the artifact.Fault, in words of faultNames.
	Fault  string
	Detail string

	// engine_unavailable: what the daemon could not reach ("" for the
	// Docker daemon, "the Kubernetes API server", "containerd") and the
	// address it tried.
	Engine string
	Host   string

	// body_too_large, storage_full: the limit in bytes.
	Limit int64

	// Cause is the text of the underlying error, when there is one.
	Cause string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ociapp runtime daemon: %s: %s", e.Code, e.Message)
}

// FromError describes err, as returned by runtime.Runtime.ExecutePayload or
// Warm, as an error body.
func FromError(err error) *Error {
	e := &Error{Message: err.Error(), Code: CodeInternal}
	switch runtime.Classify(err) {
	case runtime.KindApp:
		var appErr *runtime.AppError
		errors.As(err, &appErr)
		e.Code, e.Message, e.ErrorType, e.Details = CodeAppError, appErr.Message, appErr.Type, appErr.Details
	case runtime.KindTimeout:
		var timeout *runtime.RequestTimeoutError
		errors.As(err, &timeout)
		e.Code, e.Artifact, e.Timeout = CodeRequestTimeout, timeout.Artifact, timeout.Timeout
	case runtime.KindStartup:
		var startup *runtime.StartupError
		errors.As(err, &startup)
		e.Code, e.Artifact, e.ContainerID, e.Reason = CodeStartupFailed, startup.Artifact, startup.ContainerID, startup.Reason
		e.Exited, e.ExitCode, e.OOMKilled, e.Logs, e.RetryIn = startup.Exited, startup.ExitCode, startup.OOMKilled, startup.Logs, startup.RetryIn
		e.Cause = errText(startup.Err)
	case runtime.KindCrash:
		var crash *runtime.WorkerCrashError
		errors.As(err, &crash)
		e.Code, e.Artifact, e.ContainerID, e.Reason = CodeWorkerCrashed, crash.Artifact, crash.ContainerID, crash.Reason
		e.Exited, e.ExitCode, e.OOMKilled, e.Logs = crash.Exited, crash.ExitCode, crash.OOMKilled, crash.Logs
		e.Cause = errText(crash.Err)
	case runtime.KindOverloaded:
		var overload *runtime.OverloadedError
		errors.As(err, &overload)
		e.Code, e.Artifact, e.Queued = CodeOverloaded, overload.Artifact, overload.Queued
	case runtime.KindArtifact:
		var artErr *runtime.ArtifactError
		errors.As(err, &artErr)
		e.Code = CodeArtifactInvalid
		var ae *artifact.Error
		if errors.As(artErr.Err, &ae) {
			e.Fault, e.Detail, e.Cause = faultNames[ae.Fault], ae.Detail, errText(ae.Err)
		} else {
			e.Cause = errText(artErr.Err)
		}
	case runtime.KindEngine:
		var engErr *engine.UnavailableError
		errors.As(err, &engErr)
		e.Code, e.Engine, e.Host, e.Cause = CodeEngineUnavailable, engErr.Engine, engErr.Host, errText(engErr.Err)
	case runtime.KindClosed:
		e.Code = CodeClosed
	case runtime.KindPayload:
		e.Code = CodeBadRequest
	}
	return e
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Err turns an error body into the error the in-process runtime would have
// returned for a request on the artifact at artifactPath, so that errors.As
// works the same on local and remote execution. Codes the runtime has no
// type for come back as the *Error itself.
func (e *Error) Err(artifactPath string) error {
	switch e.Code {
	case CodeAppError:
		return &runtime.AppError{Type: e.ErrorType, Message: e.Message, Details: e.Details}
	case CodeRequestTimeout:
		if e.CallerDeadline {
			// What the in-process runtime returns when the caller's
			// context ends first: the context's error.
			return fmt.Errorf("executing %s: %s: %w", artifactPath, e.Message, context.DeadlineExceeded)
		}
		return &runtime.RequestTimeoutError{Artifact: e.Artifact, Timeout: e.Timeout}
	case CodeStartupFailed:
		return &runtime.StartupError{
			Artifact: e.Artifact, ContainerID: e.ContainerID, Reason: e.Reason,
			Exited: e.Exited, ExitCode: e.ExitCode, OOMKilled: e.OOMKilled,
			Logs: e.Logs, RetryIn: e.RetryIn, Err: causeErr(e.Cause),
		}
	case CodeWorkerCrashed:
		return &runtime.WorkerCrashError{
			Artifact: e.Artifact, ContainerID: e.ContainerID, Reason: e.Reason,
			Exited: e.Exited, ExitCode: e.ExitCode, OOMKilled: e.OOMKilled,
			Logs: e.Logs, Err: causeErr(e.Cause),
		}
	case CodeOverloaded:
		return &runtime.OverloadedError{Artifact: e.Artifact, Queued: e.Queued}
	case CodeArtifactInvalid:
		for f, name := range faultNames {
			if name == e.Fault {
				return &runtime.ArtifactError{Path: artifactPath, Err: &artifact.Error{
					Path: artifactPath, Fault: f, Detail: e.Detail, Err: causeErr(e.Cause),
				}}
			}
		}
		cause := e.Cause
		if cause == "" {
			cause = e.Message
		}
		return &runtime.ArtifactError{Path: artifactPath, Err: errors.New(cause)}
	case CodeArtifactNotFound:
		return &runtime.ArtifactError{Path: artifactPath, Err: e}
	case CodeEngineUnavailable:
		cause := e.Cause
		if cause == "" {
			cause = e.Message
		}
		return &engine.UnavailableError{Engine: e.Engine, Host: e.Host, Err: errors.New(cause)}
	case CodeClosed:
		return fmt.Errorf("ociapp runtime daemon: %s: %w", e.Message, runtime.ErrClosed)
	}
	return e
}

func causeErr(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

// Encode encodes e as a body of the given media type (MediaMsgpack, else
// JSON, converted from the msgpack body by package jsonpayload).
func (e *Error) Encode(media string) []byte {
	m := e.fields()
	b, err := protocol.EncodePayload(m)
	if err != nil {
		// Details the encoder cannot take are sent as text rather than
		// losing the error.
		m["details"] = fmt.Sprint(e.Details)
		b, _ = protocol.EncodePayload(m)
	}
	if media == MediaMsgpack {
		return b
	}
	j, err := jsonpayload.ToJSON(b)
	if err != nil {
		m["details"] = fmt.Sprint(e.Details)
		b, _ = protocol.EncodePayload(m)
		j, _ = jsonpayload.ToJSON(b)
	}
	return j
}

func (e *Error) fields() map[string]any {
	m := map[string]any{"code": string(e.Code), "message": e.Message}
	put := func(k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	if e.Code == CodeAppError {
		m["error_type"], m["details"] = e.ErrorType, e.Details
	}
	put("artifact", e.Artifact, e.Artifact != "")
	put("container_id", e.ContainerID, e.ContainerID != "")
	put("reason", e.Reason, e.Reason != "")
	put("exited", e.Exited, e.Exited)
	put("exit_code", e.ExitCode, e.Exited)
	put("oom_killed", e.OOMKilled, e.Exited)
	put("logs", e.Logs, e.Logs != "")
	put("retry_in_ms", e.RetryIn.Milliseconds(), e.RetryIn > 0)
	put("timeout_ms", e.Timeout.Milliseconds(), e.Timeout > 0)
	put("caller_deadline", true, e.CallerDeadline)
	put("queued", e.Queued, e.Code == CodeOverloaded)
	put("fault", e.Fault, e.Fault != "")
	put("detail", e.Detail, e.Detail != "")
	put("engine", e.Engine, e.Engine != "")
	put("host", e.Host, e.Host != "")
	put("limit", e.Limit, e.Limit > 0)
	put("cause", e.Cause, e.Cause != "")
	return m
}

// DecodeError decodes an error body of the given media type (MediaMsgpack,
// else JSON). A body without a string code and message is an error.
func DecodeError(media string, body []byte) (*Error, error) {
	if media != MediaMsgpack {
		var err error
		if body, err = jsonpayload.FromJSON(body, 0); err != nil {
			return nil, fmt.Errorf("decoding error body: %w", err)
		}
	}
	m, err := protocol.DecodePayload(body)
	if err != nil {
		return nil, fmt.Errorf("decoding error body: %w", err)
	}
	code, ok1 := m["code"].(string)
	msg, ok2 := m["message"].(string)
	if !ok1 || !ok2 || code == "" {
		return nil, errors.New("decoding error body: code and message must be strings")
	}
	e := &Error{Code: Code(code), Message: msg, Details: m["details"]}
	str := func(k string) string { s, _ := m[k].(string); return s }
	flag := func(k string) bool { b, _ := m[k].(bool); return b }
	e.ErrorType, e.Artifact, e.ContainerID, e.Reason = str("error_type"), str("artifact"), str("container_id"), str("reason")
	e.Logs, e.Fault, e.Detail, e.Engine, e.Host, e.Cause = str("logs"), str("fault"), str("detail"), str("engine"), str("host"), str("cause")
	e.Exited, e.OOMKilled, e.CallerDeadline = flag("exited"), flag("oom_killed"), flag("caller_deadline")
	e.ExitCode = int(number(m["exit_code"]))
	e.Queued = int(number(m["queued"]))
	e.Limit = number(m["limit"])
	e.RetryIn, e.Timeout = millis(m["retry_in_ms"]), millis(m["timeout_ms"])
	return e, nil
}

// number reads an integer field, clamping what does not fit; anything that
// is not a number reads as 0.
func number(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case uint64:
		return int64(min(n, math.MaxInt64))
	case float64:
		switch {
		case n != n:
			return 0
		case n >= math.MaxInt64:
			return math.MaxInt64
		case n <= math.MinInt64:
			return math.MinInt64
		}
		return int64(n)
	}
	return 0
}

// millis reads a field of milliseconds as a duration, clamped to what a
// Duration holds.
func millis(v any) time.Duration {
	ms := number(v)
	limit := int64(math.MaxInt64 / time.Millisecond)
	return time.Duration(max(min(ms, limit), -limit)) * time.Millisecond
}
