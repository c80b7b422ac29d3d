package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
)

func payload(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := protocol.EncodePayload(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// leftMS decodes a daemontest.Deadlines answer.
func leftMS(t *testing.T, out []byte) int64 {
	t.Helper()
	m, err := protocol.DecodePayload(out)
	if err != nil {
		t.Fatal(err)
	}
	return daemontest.Int(t, m["left_ms"])
}

// deadlineDaemon serves a daemon whose runner is a daemontest.Deadlines,
// with an artifact uploaded; it returns the runner, the daemon and the
// artifact's digest.
func deadlineDaemon(t *testing.T) (*daemontest.Deadlines, *testDaemon, string) {
	t.Helper()
	deadlines := &daemontest.Deadlines{}
	d := startServer(t, deadlines.Runner())
	path, _, _ := smallArtifact(t, t.TempDir())
	return deadlines, d, d.upload(t, path)
}

// wantCallerDeadline checks an error body: request_timeout, marked as the
// caller's deadline, with the time it had.
func wantCallerDeadline(t *testing.T, e *api.Error, left time.Duration) {
	t.Helper()
	if e.Code != api.CodeRequestTimeout || !e.CallerDeadline || e.Timeout != left || !strings.Contains(e.Message, "caller's deadline") {
		t.Fatalf("got %+v, want the caller's deadline with %v left", e, left)
	}
}

// TestMuxCallerDeadline: a request frame's deadline_ms is the deadline of
// the context the runtime runs it under; a time already up is answered
// request_timeout without running it, and a deadline that passes while
// it runs is answered request_timeout, not dropped as a cancelled
// request's answer. The daemon's own request timeout stays its own.
func TestMuxCallerDeadline(t *testing.T) {
	deadlines, d, digest := deadlineDaemon(t)
	c := dialMux(t, d.sock)
	if !strings.Contains(c.features, api.MuxFeatureDeadline) {
		t.Fatalf("features %q", c.features)
	}
	ask := payload(t, map[string]any{"op": "left"})

	c.send(t, api.MuxRequest{ID: 1, Digest: digest, Payload: ask, Deadline: 2 * time.Second})
	resp := c.recv(t)
	if left := leftMS(t, resp.Payload); left <= 1000 || left > 2000 {
		t.Fatalf("the runtime had %d ms of a caller's 2 s", left)
	}
	c.send(t, api.MuxRequest{ID: 2, Digest: digest, Payload: ask})
	if left := leftMS(t, c.recv(t).Payload); left != -1 {
		t.Fatalf("a request without a deadline ran with %d ms left", left)
	}

	ran := deadlines.Calls()
	c.send(t, api.MuxRequest{ID: 3, Digest: digest, Payload: ask, Deadline: api.DeadlinePassed})
	wantCallerDeadline(t, wantMuxError(t, c.recv(t), 3, api.CodeRequestTimeout), 0)
	c.send(t, api.MuxRequest{ID: 4, Digest: digest, Payload: ask, Stream: 4, Deadline: api.DeadlinePassed})
	wantCallerDeadline(t, wantMuxError(t, c.recv(t), 4, api.CodeRequestTimeout), 0)
	if got := deadlines.Calls(); got != ran {
		t.Fatalf("%d requests whose time was up ran", got-ran)
	}

	start := time.Now()
	c.send(t, api.MuxRequest{ID: 5, Digest: digest, Payload: payload(t, map[string]any{"op": "wait"}), Deadline: 150 * time.Millisecond})
	wantCallerDeadline(t, wantMuxError(t, c.recv(t), 5, api.CodeRequestTimeout), 150*time.Millisecond)
	if took := time.Since(start); took < 150*time.Millisecond || took > 5*time.Second {
		t.Fatalf("answered after %v", took)
	}

	c.send(t, api.MuxRequest{ID: 6, Digest: digest, Payload: payload(t, map[string]any{"op": "own timeout"}), Deadline: time.Minute})
	if e := wantMuxError(t, c.recv(t), 6, api.CodeRequestTimeout); e.CallerDeadline || e.Timeout != time.Millisecond {
		t.Fatalf("the runtime's own timeout came back as %+v", e)
	}
	if got := d.metricValue(t, `ociapp_daemon_http_requests_total{route="mux_execute",code="504"}`); got != 3 {
		t.Fatalf("mux_execute 504 counted %d times, want 3", got)
	}
}

// TestMuxStreamCallerDeadline: a stream's deadline bounds the whole
// stream: one held for credit past it ends with request_timeout.
func TestMuxStreamCallerDeadline(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	d, digest := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	c.send(t, api.MuxRequest{ID: 1, Digest: digest, Payload: []byte{0x80}, Stream: 2, Deadline: 200 * time.Millisecond})
	c.wantItems(t, 0, 2)
	wantCallerDeadline(t, wantMuxError(t, c.recv(t), 1, api.CodeRequestTimeout), 200*time.Millisecond)
	p.WaitStopped(t)
}

// TestHTTPCallerDeadline: the Ociapp-Deadline-Ms header is to the HTTP
// routes what deadline_ms is to the channel.
func TestHTTPCallerDeadline(t *testing.T) {
	deadlines, d, digest := deadlineDaemon(t)
	execute := func(body string, headers ...string) (*http.Response, []byte) {
		return d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(body), append([]string{"Content-Type", api.MediaJSON}, headers...)...)
	}

	resp, body := execute(`{"op": "left"}`, api.HeaderDeadline, "2000")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s", resp.Status, body)
	}
	var left int64
	if _, err := fmt.Sscanf(string(body), `{"left_ms":%d}`, &left); err != nil || left <= 1000 || left > 2000 {
		t.Fatalf("the runtime had %s of a caller's 2 s (%v)", body, err)
	}
	if _, body := execute(`{"op": "left"}`); string(body) != `{"left_ms":-1}` {
		t.Fatalf("without the header: %s", body)
	}

	ran := deadlines.Calls()
	for _, v := range []string{"0", "-5"} {
		resp, body := execute(`{"op": "left"}`, api.HeaderDeadline, v)
		wantCallerDeadline(t, wantError(t, resp, body, api.CodeRequestTimeout), 0)
	}
	resp, body = d.do(t, http.MethodPost, api.StreamPath(digest), strings.NewReader(`{}`), "Content-Type", api.MediaJSON, api.HeaderDeadline, "0")
	wantCallerDeadline(t, wantError(t, resp, body, api.CodeRequestTimeout), 0)
	resp, body = execute(`{"op": "left"}`, api.HeaderDeadline, "soon")
	if e := wantError(t, resp, body, api.CodeBadRequest); !strings.Contains(e.Message, api.HeaderDeadline) {
		t.Fatalf("got %+v", e)
	}
	if got := deadlines.Calls(); got != ran {
		t.Fatalf("%d refused requests ran", got-ran)
	}

	resp, body = execute(`{"op": "wait"}`, api.HeaderDeadline, "100")
	wantCallerDeadline(t, wantError(t, resp, body, api.CodeRequestTimeout), 100*time.Millisecond)

	// A stream's handler runs under the caller's deadline too; one that
	// outlives it ends with request_timeout.
	_, lines := d.streamLines(t, api.StreamPath(digest), `{"op": "left"}`, "Content-Type", api.MediaJSON, api.HeaderDeadline, "3000")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `{"item": {"left_ms":`) || lines[0] == `{"item": {"left_ms":-1}}` {
		t.Fatalf("stream lines %q", lines)
	}
	resp, body = d.do(t, http.MethodPost, api.StreamPath(digest), strings.NewReader(`{"op": "wait"}`), "Content-Type", api.MediaJSON, api.HeaderDeadline, "100")
	wantCallerDeadline(t, wantError(t, resp, body, api.CodeRequestTimeout), 100*time.Millisecond)
}

// TestAbandonedRequestIsBrokenOff: a request whose client went away while
// it ran gets no answer at all: the handler breaks the exchange off
// (http.ErrAbortHandler) rather than return without writing, which net/http
// would send as 200 with an empty body, a response to a client still
// reading at the moment its deadline passes.
func TestAbandonedRequestIsBrokenOff(t *testing.T) {
	deadlines := &daemontest.Deadlines{}
	d := startServer(t, deadlines.Runner())
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)
	for _, route := range []string{api.ExecutePath(digest), api.StreamPath(digest)} {
		t.Run(route, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, route, bytes.NewReader(payload(t, map[string]any{"op": "wait"})))
			req.Header.Set("Content-Type", api.MediaMsgpack)
			rec := httptest.NewRecorder()
			ran := deadlines.Calls()
			go func() {
				for deadlines.Calls() == ran {
					time.Sleep(time.Millisecond)
				}
				cancel() // the client leaves while the request runs
			}()
			defer func() {
				if p := recover(); p != http.ErrAbortHandler {
					t.Fatalf("the handler ended with %v and answered %d %q, want it broken off", p, rec.Code, rec.Body)
				}
			}()
			d.srv.ServeHTTP(rec, req)
		})
	}
}
