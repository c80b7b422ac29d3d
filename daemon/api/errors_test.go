package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

const localPath = "/home/me/dist/app-1.0.ociapp"

// TestErrorRoundTrip sends every runtime error through the wire, in both
// media types, and checks that the client gets back an equal error of the
// same type, with the documented code and status.
func TestErrorRoundTrip(t *testing.T) {
	// Bytes that are not UTF-8, as an app echoes an invalid input.
	binDetails := map[string]any{"errors": []any{map[string]any{"input": []byte{0xff, 0x00}, "loc": []any{"value"}}}, "raw": []byte("ok")}
	details := map[string]any{"errors": []any{map[string]any{"loc": []any{"value"}, "msg": "Field required", "type": "missing"}}, "n": int64(3)}
	tests := []struct {
		name   string
		err    error
		code   Code
		status int
		want   error // what Err gives back; nil means err itself
	}{
		{"app", &runtime.AppError{Type: "ValidationError", Message: protocol.ValidationMessage, Details: details}, CodeAppError, 422, nil},
		{"app with bytes", &runtime.AppError{Type: "ValidationError", Message: protocol.ValidationMessage, Details: binDetails}, CodeAppError, 422, nil},
		{"app without details", &runtime.AppError{Type: "KeyError", Message: "'x'"}, CodeAppError, 422, nil},
		{"timeout", &runtime.RequestTimeoutError{Artifact: "echo 1.0", Timeout: 1500 * time.Millisecond}, CodeRequestTimeout, 504, nil},
		{"startup exited", &runtime.StartupError{Artifact: "echo 1.0", ContainerID: "abc", Reason: "the container exited before its socket was ready", Exited: true, ExitCode: 3, Logs: "ImportError: x\n", RetryIn: 2 * time.Second}, CodeStartupFailed, 502, nil},
		{"startup cause", &runtime.StartupError{Artifact: "echo 1.0", Reason: "the engine could not start it", Err: errors.New("no such image")}, CodeStartupFailed, 502, nil},
		{"crash oom", &runtime.WorkerCrashError{Artifact: "echo 1.0", ContainerID: "abc", Reason: "the container exited", Exited: true, ExitCode: 137, OOMKilled: true, Logs: "killed"}, CodeWorkerCrashed, 502, nil},
		{"crash exit zero", &runtime.WorkerCrashError{Artifact: "echo 1.0", Reason: "the container exited", Exited: true}, CodeWorkerCrashed, 502, nil},
		{"overloaded", &runtime.OverloadedError{Artifact: "echo 1.0", Queued: 1024}, CodeOverloaded, 503, nil},
		{"artifact fault", &runtime.ArtifactError{Path: "/var/lib/x.ociapp", Err: &artifact.Error{Path: "/var/lib/x.ociapp", Fault: artifact.FaultDigestMismatch, Detail: "blob sha256:ab is sha256:cd", Err: errors.New("short read")}},
			CodeArtifactInvalid, 422,
			&runtime.ArtifactError{Path: localPath, Err: &artifact.Error{Path: localPath, Fault: artifact.FaultDigestMismatch, Detail: "blob sha256:ab is sha256:cd", Err: errors.New("short read")}}},
		{"artifact load", &runtime.ArtifactError{Path: "/var/lib/x.ociapp", Err: &engine.LoadError{Message: "unsupported"}},
			CodeArtifactInvalid, 422, &runtime.ArtifactError{Path: localPath, Err: errors.New((&engine.LoadError{Message: "unsupported"}).Error())}},
		{"engine", fmt.Errorf("starting: %w", &engine.UnavailableError{Host: "unix:///var/run/docker.sock", Err: errors.New("connection refused")}),
			CodeEngineUnavailable, 503, &engine.UnavailableError{Host: "unix:///var/run/docker.sock", Err: errors.New("connection refused")}},
		{"kubernetes", fmt.Errorf("starting: %w", &engine.UnavailableError{Engine: "containerd", Host: "/run/containerd/containerd.sock", Err: errors.New("connection refused")}),
			CodeEngineUnavailable, 503, &engine.UnavailableError{Engine: "containerd", Host: "/run/containerd/containerd.sock", Err: errors.New("connection refused")}},
		{"closed", runtime.ErrClosed, CodeClosed, 503, nil},
		{"payload", &protocol.PayloadError{Message: "payload must decode to a msgpack map"}, CodeBadRequest, 400, nil},
		{"other", errors.New("something else"), CodeInternal, 500, nil},
	}
	for _, tt := range tests {
		for _, media := range []string{MediaJSON, MediaMsgpack} {
			t.Run(tt.name+"/"+media, func(t *testing.T) {
				e := FromError(tt.err)
				if e.Code != tt.code || e.Code.Status() != tt.status {
					t.Fatalf("code %s status %d, want %s %d", e.Code, e.Code.Status(), tt.code, tt.status)
				}
				got, err := DecodeError(media, e.Encode(media))
				if err != nil {
					t.Fatal(err)
				}
				back := got.Err(localPath)
				want := tt.want
				if want == nil {
					want = tt.err
				}
				switch tt.code {
				case CodeClosed:
					if !errors.Is(back, runtime.ErrClosed) {
						t.Fatalf("got %v, want ErrClosed", back)
					}
					return
				case CodeBadRequest, CodeInternal:
					var apiErr *Error
					if !errors.As(back, &apiErr) || apiErr.Message != tt.err.Error() {
						t.Fatalf("got %#v, want an *Error with the message", back)
					}
					return
				}
				if media == MediaJSON && tt.name == "app" {
					// JSON has no integers of its own; FromJSON makes
					// them int64 again.
					want = &runtime.AppError{Type: "ValidationError", Message: protocol.ValidationMessage, Details: details}
				}
				if media == MediaJSON && tt.name == "app with bytes" {
					// JSON has no bytes: they are base64 strings, as
					// docs/daemon.md says.
					want = &runtime.AppError{Type: "ValidationError", Message: protocol.ValidationMessage, Details: map[string]any{
						"errors": []any{map[string]any{"input": "/wA=", "loc": []any{"value"}}}, "raw": "b2s=",
					}}
				}
				if !reflect.DeepEqual(back, want) {
					t.Fatalf("round trip changed the error:\n got  %#v\n want %#v", back, want)
				}
				if back.Error() != want.Error() {
					t.Fatalf("message changed:\n got  %s\n want %s", back.Error(), want.Error())
				}
			})
		}
	}
}

// TestCallerDeadlineError: a request_timeout marked as the caller's
// deadline comes back as the in-process runtime reports a caller's
// deadline, the context's error, not as the daemon's request timeout.
func TestCallerDeadlineError(t *testing.T) {
	e := &Error{Code: CodeRequestTimeout, Message: "the caller's deadline passed: the request had 250ms left when the daemon received it", Timeout: 250 * time.Millisecond, CallerDeadline: true}
	if b := e.Encode(MediaJSON); !strings.Contains(string(b), `"caller_deadline":true`) || !strings.Contains(string(b), `"timeout_ms":250`) {
		t.Fatalf("encoded as %s", b)
	}
	for _, media := range []string{MediaJSON, MediaMsgpack} {
		got, err := DecodeError(media, e.Encode(media))
		if err != nil || !got.CallerDeadline || got.Timeout != e.Timeout {
			t.Fatalf("%s: %#v %v", media, got, err)
		}
		back := got.Err(localPath)
		if !errors.Is(back, context.DeadlineExceeded) || runtime.Classify(back) != runtime.KindDeadline || errors.As(back, new(*runtime.RequestTimeoutError)) {
			t.Fatalf("%s: got %#v, want the context's error", media, back)
		}
		if want := "executing " + localPath + ": " + e.Message + ": context deadline exceeded"; back.Error() != want {
			t.Fatalf("%s: %q, want %q", media, back, want)
		}
	}
	// Without the mark it is the daemon's request timeout.
	plain, err := DecodeError(MediaJSON, []byte(`{"code":"request_timeout","message":"m","timeout_ms":30000}`))
	if err != nil || plain.CallerDeadline || !errors.As(plain.Err(localPath), new(*runtime.RequestTimeoutError)) {
		t.Fatalf("%#v %v", plain, err)
	}
}

func TestErrorFieldsOmitted(t *testing.T) {
	b := (&Error{Code: CodeUnauthorized, Message: "no"}).Encode(MediaJSON)
	if string(b) != `{"code":"unauthorized","message":"no"}` {
		t.Fatalf("got %s", b)
	}
	b = (&Error{Code: CodeBodyTooLarge, Message: "big", Limit: 16}).Encode(MediaJSON)
	if string(b) != `{"code":"body_too_large","limit":16,"message":"big"}` {
		t.Fatalf("got %s", b)
	}
}

func TestErrorUnencodableDetails(t *testing.T) {
	e := &Error{Code: CodeAppError, Message: "m", ErrorType: "T", Details: map[any]any{1.5: math.NaN(), "c": make(chan int)}}
	for _, media := range []string{MediaJSON, MediaMsgpack} {
		got, err := DecodeError(media, e.Encode(media))
		if err != nil {
			t.Fatalf("%s: %v", media, err)
		}
		if got.Code != CodeAppError || got.ErrorType != "T" || got.Details == nil {
			t.Fatalf("%s: got %#v", media, got)
		}
	}
}

func TestDecodeErrorRejects(t *testing.T) {
	for _, tt := range []struct{ media, body string }{
		{MediaJSON, ``},
		{MediaJSON, `null`},
		{MediaJSON, `[]`},
		{MediaJSON, `{"message": "x"}`},
		{MediaJSON, `{"code": "", "message": "x"}`},
		{MediaJSON, `{"code": 1, "message": "x"}`},
		{MediaJSON, `<html>bad gateway</html>`},
		{MediaMsgpack, "\x91\x01"},
		{MediaMsgpack, "\x81\xa4code\xa1x"},
	} {
		if e, err := DecodeError(tt.media, []byte(tt.body)); err == nil {
			t.Errorf("%s %q: decoded as %#v", tt.media, tt.body, e)
		}
	}
}

func TestDecodeErrorClampsNumbers(t *testing.T) {
	e, err := DecodeError(MediaJSON, []byte(`{"code":"request_timeout","message":"m","timeout_ms":1e300,"retry_in_ms":-99999999999999999999,"queued":"x","exit_code":2.9}`))
	if err != nil {
		t.Fatal(err)
	}
	if e.Timeout <= 0 || e.RetryIn >= 0 || e.Queued != 0 || e.ExitCode != 2 {
		t.Fatalf("got %#v", e)
	}
}

func TestStatusOfUnknownCode(t *testing.T) {
	if s := Code("what").Status(); s != http.StatusInternalServerError {
		t.Fatalf("got %d", s)
	}
}

func TestValidDigest(t *testing.T) {
	good := "sha256:" + fmt.Sprintf("%064x", 7)
	for d, want := range map[string]bool{
		good:                       true,
		"sha256:abc":               false,
		"sha512:" + good[7:]:       false,
		"SHA256:" + good[7:]:       false,
		good + "0":                 false,
		"sha256:" + "G" + good[8:]: false,
	} {
		if ValidDigest(d) != want {
			t.Errorf("ValidDigest(%q) = %v", d, !want)
		}
	}
}

func FuzzDecodeError(f *testing.F) {
	for _, e := range []*Error{
		FromError(&runtime.StartupError{Artifact: "a", Exited: true, ExitCode: 1, Logs: "l", RetryIn: time.Second}),
		FromError(&runtime.AppError{Type: "T", Message: "m", Details: map[string]any{"k": []any{int64(1)}}}),
		{Code: CodeBodyTooLarge, Message: "m", Limit: 5},
		{Code: CodeRequestTimeout, Message: "m", Timeout: time.Second, CallerDeadline: true},
	} {
		f.Add(true, e.Encode(MediaMsgpack))
		f.Add(false, e.Encode(MediaJSON))
	}
	f.Fuzz(func(t *testing.T, msgpack bool, body []byte) {
		media := MediaJSON
		if msgpack {
			media = MediaMsgpack
		}
		e, err := DecodeError(media, body)
		if err != nil {
			return
		}
		// Whatever decodes must map to an error and encode again.
		if e.Err(localPath) == nil {
			t.Fatal("no error")
		}
		if _, err := DecodeError(media, e.Encode(media)); err != nil {
			t.Fatalf("re-encoded body does not decode: %v", err)
		}
	})
}
