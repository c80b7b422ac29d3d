package ociapp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ociapp/ociapp"
	"github.com/ociapp/ociapp/protocol"
)

func TestMain(m *testing.M) {
	// Re-executed as an application binary by TestSIGTERMDrains.
	if os.Getenv("OCIAPP_TEST_APP") == "1" {
		ociapp.Main[sleepRequest, echoResponse](ociapp.Func[sleepRequest, echoResponse](sleepy))
	}
	// Re-executed as the far end of BenchmarkRawPingPongCrossProcess.
	if path := os.Getenv("OCIAPP_TEST_PINGPONG_SOCKET"); path != "" {
		os.Exit(servePingPong(path))
	}
	// Re-executed as the middle of BenchmarkRawPingPongRelay.
	if path := os.Getenv("OCIAPP_TEST_RELAY_SOCKET"); path != "" {
		os.Exit(relayPingPong(path, os.Getenv("OCIAPP_TEST_RELAY_TO")))
	}
	// Re-executed as the echo server of BenchmarkRoundTripCrossProcess.
	if path := os.Getenv("OCIAPP_TEST_ECHO_SOCKET"); path != "" {
		os.Exit(ociapp.Run(context.Background(), echoHandler(), []string{"serve", "--socket", path}, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

type echoRequest struct {
	Value string `msgpack:"value"`
}

type echoResponse struct {
	Value string `msgpack:"value"`
}

type sleepRequest struct {
	Value   string `msgpack:"value"`
	SleepMS int    `msgpack:"sleep_ms,omitempty"`
}

func sleepy(ctx context.Context, req sleepRequest) (echoResponse, error) {
	select {
	case <-time.After(time.Duration(req.SleepMS) * time.Millisecond):
		return echoResponse{Value: req.Value}, nil
	case <-ctx.Done():
		return echoResponse{}, ctx.Err()
	}
}

type testApp struct{}

type testRequest struct {
	Mode   string            `msgpack:"mode"`
	Count  int               `msgpack:"count,omitempty"`
	Ratio  float64           `msgpack:"ratio,omitempty"`
	Tags   []string          `msgpack:"tags,omitempty"`
	Labels map[string]string `msgpack:"labels,omitempty"`
	Nested *struct {
		Flag bool `msgpack:"flag"`
	} `msgpack:"nested,omitempty"`
}

type testResponse struct {
	Mode  string `msgpack:"mode"`
	Count int    `msgpack:"count"`
}

func (testApp) Execute(ctx context.Context, req testRequest) (testResponse, error) {
	switch req.Mode {
	case "typed-error":
		return testResponse{}, &ociapp.Error{Type: "QuotaExceeded", Message: "too many", Details: map[string]any{"limit": 3}}
	case "plain-error":
		return testResponse{}, errors.New("plain failure")
	case "panic":
		panic("boom")
	case "deadline":
		// The milliseconds the handler has, or -1 without a deadline.
		dl, ok := ctx.Deadline()
		if !ok {
			return testResponse{Mode: req.Mode, Count: -1}, nil
		}
		return testResponse{Mode: req.Mode, Count: int(time.Until(dl).Milliseconds())}, nil
	case "sleep":
		select {
		case <-time.After(time.Duration(req.Count) * time.Millisecond):
		case <-ctx.Done():
			return testResponse{}, ctx.Err()
		}
	}
	return testResponse{Mode: req.Mode, Count: req.Count}, nil
}

// serve starts a server for h on a fresh socket and returns its path. The
// server stops when the test ends.
func serve(t *testing.T, h ociapp.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.sock")
	ctx, cancel := context.WithCancel(context.Background())
	srv := &ociapp.Server{Handler: h, GracePeriod: time.Second}
	ln, err := ociapp.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func dial(t *testing.T, path string) *protocol.Client {
	t.Helper()
	c, err := protocol.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func call(t *testing.T, c *protocol.Client, req any) (map[string]any, error) {
	t.Helper()
	payload, err := protocol.EncodePayload(req)
	if err != nil {
		t.Fatal(err)
	}
	return callRaw(c, payload)
}

func callRaw(c *protocol.Client, payload []byte) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.Call(ctx, payload)
	if err != nil {
		return nil, err
	}
	return protocol.DecodePayload(out)
}

func TestRoundTrip(t *testing.T) {
	c := dial(t, serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{})))
	got, err := call(t, c, map[string]any{"mode": "echo", "count": 7, "ratio": 1, "tags": []any{"a"}, "nested": map[string]any{"flag": true}})
	if err != nil {
		t.Fatal(err)
	}
	if got["mode"] != "echo" || got["count"] != int64(7) {
		t.Fatalf("got %v", got)
	}
}

// A request's deadline_ms becomes its handler's context deadline; without
// it (a client of an artifact without the deadline capability) the handler
// has none.
func TestRequestDeadline(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	payload, err := protocol.EncodePayload(map[string]any{"mode": "deadline"})
	if err != nil {
		t.Fatal(err)
	}
	left := func(c *protocol.Client) int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		out, err := c.Call(ctx, payload)
		if err != nil {
			t.Fatal(err)
		}
		m, err := protocol.DecodePayload(out)
		if err != nil {
			t.Fatal(err)
		}
		return m["count"].(int64)
	}
	if got := left(dial(t, path)); got != -1 {
		t.Errorf("without the capability the handler has %d ms", got)
	}
	withDeadlines, err := protocol.Dial(t.Context(), path, protocol.WithDeadlines())
	if err != nil {
		t.Fatal(err)
	}
	defer withDeadlines.Close()
	if got := left(withDeadlines); got <= 0 || got > 5000 {
		t.Errorf("with the capability the handler has %d ms, want the caller's 5 s at most", got)
	}
}

// A cancel envelope ends the handler's context at once; the connection
// answers the next request. A client without WithCancel sends none, and the
// handler runs on.
func TestCancelEnvelope(t *testing.T) {
	started, canceled, slept := make(chan struct{}, 1), make(chan error, 1), make(chan struct{}, 1)
	h := ociapp.NewHandler[sleepRequest, echoResponse](ociapp.Func[sleepRequest, echoResponse](
		func(ctx context.Context, req sleepRequest) (echoResponse, error) {
			if req.SleepMS == 0 {
				return echoResponse{Value: req.Value}, nil
			}
			started <- struct{}{}
			select {
			case <-ctx.Done():
				canceled <- ctx.Err()
				return echoResponse{}, ctx.Err()
			case <-time.After(time.Duration(req.SleepMS) * time.Millisecond):
				slept <- struct{}{}
				return echoResponse{Value: "slept"}, nil
			}
		}))
	path := serve(t, h)
	block, err := protocol.EncodePayload(map[string]any{"value": "x", "sleep_ms": 3_600_000})
	if err != nil {
		t.Fatal(err)
	}
	c, err := protocol.Dial(t.Context(), path, protocol.WithCancel())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	called := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, block)
		called <- err
	}()
	<-started
	cancel()
	if err := <-called; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call returned %v, want context.Canceled", err)
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the handler's context ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was not cancelled")
	}
	if got, err := call(t, c, map[string]any{"value": "next"}); err != nil || got["value"] != "next" {
		t.Fatalf("the next request: %v, %v", got, err)
	}

	// Without the capability the handler is not told.
	plain := dial(t, path)
	short, err := protocol.EncodePayload(map[string]any{"value": "x", "sleep_ms": 300})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := plain.Call(ctx, short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call returned %v", err)
	}
	<-started
	select {
	case err := <-canceled:
		t.Fatalf("a client without WithCancel cancelled the handler: %v", err)
	case <-slept:
	}
}

func TestErrors(t *testing.T) {
	c := dial(t, serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{})))
	tests := []struct {
		name    string
		req     any
		raw     []byte
		want    protocol.AppError
		details any
	}{
		{
			name: "missing, mistyped and unknown fields",
			req:  map[string]any{"count": "seven", "ratio": "x", "extra": 1, "tags": []any{"a", 2}, "nested": map[string]any{}},
			want: protocol.AppError{Type: "ValidationError", Message: "application payload validation failed"},
			details: map[string]any{"errors": []any{
				map[string]any{"type": "missing", "loc": []any{"mode"}, "msg": "Field required", "input": map[string]any{"count": "seven", "ratio": "x", "extra": int64(1), "tags": []any{"a", int64(2)}, "nested": map[string]any{}}},
				map[string]any{"type": "int_type", "loc": []any{"count"}, "msg": "Input should be a valid integer", "input": "seven"},
				map[string]any{"type": "float_type", "loc": []any{"ratio"}, "msg": "Input should be a valid number", "input": "x"},
				map[string]any{"type": "string_type", "loc": []any{"tags", int64(1)}, "msg": "Input should be a valid string", "input": int64(2)},
				map[string]any{"type": "missing", "loc": []any{"nested", "flag"}, "msg": "Field required", "input": map[string]any{}},
				map[string]any{"type": "extra_forbidden", "loc": []any{"extra"}, "msg": "Extra inputs are not permitted", "input": int64(1)},
			}},
		},
		{
			name: "fractional integer",
			req:  map[string]any{"mode": "x", "count": 1.5},
			want: protocol.AppError{Type: "ValidationError", Message: "application payload validation failed"},
			details: map[string]any{"errors": []any{
				map[string]any{"type": "int_from_float", "loc": []any{"count"}, "msg": "Input should be a valid integer, got a number with a fractional part", "input": 1.5},
			}},
		},
		{
			// The input is echoed as bin, as it came: a str holding
			// invalid UTF-8 would be undecodable by msgpack readers.
			name: "bytes that are not UTF-8 for a string",
			req:  map[string]any{"mode": []byte{0xff}},
			want: protocol.AppError{Type: "ValidationError", Message: "application payload validation failed"},
			details: map[string]any{"errors": []any{
				map[string]any{"type": "string_unicode", "loc": []any{"mode"}, "msg": "Input should be a valid string, unable to parse raw data as a unicode string", "input": []byte{0xff}},
			}},
		},
		{name: "UTF-8 bytes for a string", req: map[string]any{"mode": []byte("typed-error")}, want: protocol.AppError{Type: "QuotaExceeded", Message: "too many"}, details: map[string]any{"limit": int64(3)}},
		{name: "payload not a map", raw: []byte{0x92, 0x01, 0x02}, want: protocol.AppError{Type: "PayloadCodecError", Message: "payload must decode to a msgpack map"}},
		{name: "payload not msgpack", raw: []byte{0xc1}, want: protocol.AppError{Type: "PayloadCodecError", Message: "payload is not valid msgpack"}},
		{name: "payload key not a string", raw: []byte{0x81, 0x01, 0x02}, want: protocol.AppError{Type: "PayloadCodecError", Message: "payload keys must be strings"}},
		{name: "typed error", req: map[string]any{"mode": "typed-error"}, want: protocol.AppError{Type: "QuotaExceeded", Message: "too many"}, details: map[string]any{"limit": int64(3)}},
		{name: "plain error", req: map[string]any{"mode": "plain-error"}, want: protocol.AppError{Type: "Error", Message: "plain failure"}},
		{name: "panic", req: map[string]any{"mode": "panic"}, want: protocol.AppError{Type: "Panic", Message: "boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if raw == nil {
				var err error
				if raw, err = protocol.EncodePayload(tt.req); err != nil {
					t.Fatal(err)
				}
			}
			_, err := callRaw(c, raw)
			var got *protocol.AppError
			if !errors.As(err, &got) {
				t.Fatalf("err = %v, want an application error", err)
			}
			if got.Type != tt.want.Type || got.Message != tt.want.Message {
				t.Errorf("got %s %q, want %s %q", got.Type, got.Message, tt.want.Type, tt.want.Message)
			}
			if !reflect.DeepEqual(got.Details, tt.details) {
				t.Errorf("details:\n got %#v\nwant %#v", got.Details, tt.details)
			}
		})
	}
	// The connection and the server survive all of the above, the panic included.
	if _, err := call(t, c, map[string]any{"mode": "ok"}); err != nil {
		t.Fatalf("server unusable after errors: %v", err)
	}
}

func TestPipelinedRequestsAnswerInCompletionOrder(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := protocol.NewWriter(conn)
	ids := map[string]protocol.ID{}
	for _, r := range []struct {
		name  string
		sleep int
	}{{"slow", 300}, {"medium", 100}, {"fast", 0}} {
		id, _ := protocol.ParseID(fmt.Sprintf("00000000-0000-4000-8000-%012d", r.sleep))
		ids[r.name] = id
		payload, _ := protocol.EncodePayload(map[string]any{"mode": "sleep", "count": r.sleep})
		if err := w.WriteRequest(protocol.Request{ID: id, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var order []protocol.ID
	for range 3 {
		body, err := protocol.ReadFrame(conn, 0)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := protocol.DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, resp.ID)
	}
	want := []protocol.ID{ids["fast"], ids["medium"], ids["slow"]}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("responses came in order %v, want %v", order, want)
	}
}

func TestLongRequestDoesNotHoldUpTheConnection(t *testing.T) {
	// The first request runs until the second one, on the same connection,
	// has been answered: the reader that took the first request in must
	// hand reading on while it runs. Each round starts from an idle
	// connection, where the reader runs the request it read itself.
	release := make(chan struct{})
	h := ociapp.NewHandler[echoRequest, echoResponse](ociapp.Func[echoRequest, echoResponse](
		func(ctx context.Context, req echoRequest) (echoResponse, error) {
			if req.Value == "wait" {
				select {
				case <-release:
				case <-ctx.Done():
					return echoResponse{}, ctx.Err()
				}
			}
			return echoResponse(req), nil
		}))
	c := dial(t, serve(t, h))
	for round := range 3 {
		waited := make(chan error, 1)
		go func() {
			_, err := call(t, c, echoRequest{Value: "wait"})
			waited <- err
		}()
		for c.InFlight() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		if _, err := call(t, c, echoRequest{Value: "go"}); err != nil {
			t.Fatalf("round %d: second request: %v", round, err)
		}
		release <- struct{}{}
		if err := <-waited; err != nil {
			t.Fatalf("round %d: first request: %v", round, err)
		}
	}
}

func TestManyConnectionsAtOnce(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	var wg sync.WaitGroup
	for i := range 8 {
		c := dial(t, path)
		for j := range 25 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := call(t, c, map[string]any{"mode": "echo", "count": i*100 + j})
				if err != nil || got["count"] != int64(i*100+j) {
					t.Errorf("got %v, %v", got, err)
				}
			}()
		}
	}
	wg.Wait()
}

func TestMalformedFrameClosesOnlyItsConnection(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	healthy := dial(t, path)
	bad, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	for _, junk := range [][]byte{{0, 0, 0, 0}} {
		if _, err := bad.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bad.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("malformed connection still open: n=%d err=%v", n, err)
	}
	if _, err := call(t, healthy, map[string]any{"mode": "ok"}); err != nil {
		t.Fatalf("the other connection was affected: %v", err)
	}
}

func TestMalformedEnvelopeCancelsOutstandingRequests(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := protocol.NewWriter(conn)
	payload, _ := protocol.EncodePayload(map[string]any{"mode": "sleep", "count": 60000})
	if err := w.WriteRequest(protocol.Request{ID: protocol.ID{0x40}, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(conn, []byte{0x92, 0x01, 0x02}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := protocol.ReadFrame(conn, 0); !errors.Is(err, errEOFish(err)) {
		t.Fatalf("expected the connection to close without an answer, got %v", err)
	}
}

// errEOFish accepts the ways a closed connection shows up to a reader.
func errEOFish(err error) error {
	if err == nil {
		return errors.New("no error")
	}
	var fe *protocol.FrameError
	if strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset") || errors.As(err, &fe) {
		return err
	}
	return errors.New("unexpected")
}

func TestCleanEOFFinishesOutstandingRequests(t *testing.T) {
	path := serve(t, ociapp.NewHandler[testRequest, testResponse](testApp{}))
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload, _ := protocol.EncodePayload(map[string]any{"mode": "sleep", "count": 100})
	if err := protocol.NewWriter(conn).WriteRequest(protocol.Request{ID: protocol.ID{0x41}, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	body, err := protocol.ReadFrame(conn, 0)
	if err != nil {
		t.Fatalf("no answer after a clean EOF: %v", err)
	}
	if resp, err := protocol.DecodeResponse(body); err != nil || resp.Payload == nil {
		t.Fatalf("resp %+v, %v", resp, err)
	}
}

func TestListenReplacesStaleSocketAndPublishesReadySocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "app.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // leaves the socket file behind, as a crashed server would

	ln, err := ociapp.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode = %v, want a socket with mode 0666", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary socket left behind: %v", entries)
	}
	// The published path already accepts: a dial succeeds before Serve runs.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("socket published before it accepts: %v", err)
	}
	conn.Close()
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ociapp.Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v", err)
	}
}

func TestSIGTERMDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	cmd := exec.Command(os.Args[0], "serve", "--socket", path, "--grace", "5s")
	cmd.Env = append(os.Environ(), "OCIAPP_TEST_APP=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket never appeared; stderr: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c := dial(t, path)
	result := make(chan error, 1)
	go func() {
		got, err := call(t, c, map[string]any{"value": "drained", "sleep_ms": 300})
		if err == nil && got["value"] != "drained" {
			err = fmt.Errorf("got %v", got)
		}
		result <- err
	}()
	for c.InFlight() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the request reach the server
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatalf("in-flight request failed during drain: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v; stderr: %s", err, stderr.String())
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket not removed on exit: %v", err)
	}
}

func TestSchemaCommand(t *testing.T) {
	var out, errOut strings.Builder
	code := ociapp.Run(context.Background(), ociapp.NewHandler[testRequest, testResponse](testApp{}), []string{"schema"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{`"request"`, `"response"`, `"title": "testRequest"`, `"required": [`, `"mode"`, `"additionalProperties": false`, "\"capabilities\": [\n    \"cancel\",\n    \"deadline\",\n    \"stream\"\n  ]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("schema lacks %s:\n%s", want, out.String())
		}
	}
}

func TestRunUsage(t *testing.T) {
	h := ociapp.NewHandler[testRequest, testResponse](testApp{})
	for _, args := range [][]string{nil, {"bogus"}, {"serve", "--nope"}, {"serve", "--procs", "-1"}} {
		var out, errOut strings.Builder
		if code := ociapp.Run(context.Background(), h, args, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("Run(%q) = %d, stderr %q; want 2 with a message", args, code, errOut.String())
		}
	}
}

func TestServeRunsOnProcsThreads(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set, and wins over --procs")
	}
	h := ociapp.NewHandler[echoRequest, echoResponse](ociapp.Func[echoRequest, echoResponse](
		func(context.Context, echoRequest) (echoResponse, error) {
			return echoResponse{Value: fmt.Sprint(goruntime.GOMAXPROCS(0))}, nil
		}))
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, fmt.Sprint(ociapp.DefaultServeProcs)},
		{[]string{"--procs", "3"}, "3"},
		{[]string{"--procs", "0"}, fmt.Sprint(goruntime.GOMAXPROCS(0))},
	} {
		before := goruntime.GOMAXPROCS(0)
		path := filepath.Join(t.TempDir(), "app.sock")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int)
		go func() {
			done <- ociapp.Run(ctx, h, append([]string{"serve", "--socket", path}, tt.args...), io.Discard, io.Discard)
		}()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the server never listened")
			}
		}
		c := dial(t, path)
		resp, err := call(t, c, echoRequest{Value: "?"})
		c.Close()
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("serve %q exited %d", tt.args, code)
		}
		if err != nil || resp["value"] != tt.want {
			t.Errorf("serve %q: handler saw GOMAXPROCS %v (%v), want %s", tt.args, resp["value"], err, tt.want)
		}
		if after := goruntime.GOMAXPROCS(0); after != before {
			t.Errorf("serve %q left GOMAXPROCS at %d, was %d", tt.args, after, before)
		}
	}
}
