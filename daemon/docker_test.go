package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testapps"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/internal/testtls"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

var apps struct {
	once sync.Once
	dir  string
	a    testapps.TestAppArtifacts
	err  error
}

// testApps builds the test application's artifacts once per test binary.
func testApps(t testing.TB) testapps.TestAppArtifacts {
	t.Helper()
	apps.once.Do(func() {
		apps.dir, apps.err = os.MkdirTemp("", "daemon-apps-")
		if apps.err == nil {
			apps.a, apps.err = testapps.BuildTestApp(context.Background(), apps.dir)
		}
	})
	if apps.err != nil {
		t.Fatal(apps.err)
	}
	return apps.a
}

func cleanupApps() {
	if apps.dir != "" {
		os.RemoveAll(apps.dir)
	}
}

// Limits of the daemons the suite runs against.
const (
	suiteRequestTimeout  = 2 * time.Second
	suiteMaxRequestSize  = 64 << 10
	suiteMaxArtifactSize = 4 << 20
	suiteToken           = "suite-token-7f1c"
)

// suiteRuntimeOptions keep the pools small, so that a burst overloads them.
func suiteRuntimeOptions() []runtime.Option {
	return []runtime.Option{
		runtime.WithRequestTimeout(suiteRequestTimeout),
		runtime.WithShutdownTimeout(2 * time.Second),
		runtime.WithMaxContainers(2),
		runtime.WithContainerConcurrency(2),
		runtime.WithQueueSize(8),
	}
}

// childEnv, when set, makes the test binary run a daemon (see runChild)
// with the JSON childConfig it holds, instead of the tests.
const childEnv = "OCIAPP_DAEMON_TEST_CHILD"

type childConfig struct {
	Listen, StateDir, Token, TLSCert, TLSKey string
	MaxArtifactSize, MaxRequestSize          int64
	// PlainSocketDirs turns the socket directory tmpfs off: a daemon under
	// ip netns exec has a mount namespace of its own, whose mounts the
	// engine does not see.
	PlainSocketDirs bool
	// DefaultRuntime runs the runtime with its defaults, not the suite's
	// small pools (a benchmark's daemon).
	DefaultRuntime bool
}

// runChild runs a daemon until SIGTERM: the process that tests run in
// another network namespace, or kill.
func runChild() int {
	// As ociapp-runtime serve runs a daemon.
	goruntime.GOMAXPROCS(daemon.Procs(goruntime.GOMAXPROCS(0)))
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := suiteRuntimeOptions()
	if cfg.DefaultRuntime {
		opts = nil
	}
	if cfg.PlainSocketDirs {
		opts = append(opts, runtime.WithSocketDirLimit(0))
	}
	eng, err := docker.New(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer eng.Close()
	dopts := []daemon.Option{
		daemon.WithListen(cfg.Listen), daemon.WithStateDir(cfg.StateDir),
		daemon.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		daemon.WithReady(func(a net.Addr) { fmt.Printf("ready %s\n", a) }),
		daemon.WithRuntimeOptions(opts...),
	}
	if cfg.Token != "" {
		dopts = append(dopts, daemon.WithToken(cfg.Token))
	}
	if cfg.MaxArtifactSize != 0 {
		dopts = append(dopts, daemon.WithMaxArtifactSize(cfg.MaxArtifactSize))
	}
	if cfg.MaxRequestSize != 0 {
		dopts = append(dopts, daemon.WithMaxRequestSize(cfg.MaxRequestSize))
	}
	if cfg.TLSCert != "" {
		dopts = append(dopts, daemon.WithTLS(cfg.TLSCert, cfg.TLSKey))
	}
	err = daemon.Run(ctx, eng, dopts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// child is a daemon running in a re-executed test binary.
type child struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once the process is reaped
	err    error         // its exit, once exited is closed
}

// startChild starts a daemon process, under `ip netns exec NS` when ns is
// set, and waits until it listens.
func startChild(t testing.TB, ns string, cfg childConfig) *child {
	t.Helper()
	env, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{self, "-test.run=^$"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+string(env))
	logFile, err := os.CreateTemp("", "daemon-child-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, log: logFile.Name(), exited: make(chan struct{})}
	logFile.Close()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signaled := false
		for sc.Scan() {
			if !signaled && strings.HasPrefix(sc.Text(), "ready ") {
				close(ready)
				signaled = true
			}
		}
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			// Let it stop its containers; kill it only if it hangs.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.exited:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				<-c.exited
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(c.log)
			t.Logf("daemon log:\n%s", b)
		}
		os.Remove(c.log)
	})
	select {
	case <-ready:
	case <-c.exited:
		b, _ := os.ReadFile(c.log)
		t.Fatalf("the daemon exited at start (%v):\n%s", c.err, b)
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not start within a minute")
	}
	return c
}

// stop sends sig and waits for the process to exit.
func (c *child) stop(t *testing.T, sig os.Signal, within time.Duration) error {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		return c.err
	case <-time.After(within):
		t.Fatalf("the daemon did not exit within %v of %v", within, sig)
		return nil
	}
}

// target is a daemon the suite runs against, and how to reach it.
type target struct {
	url  string
	opts []remote.Option // how to connect (dialer, CA), not the token
	raw  *http.Client
	base string
}

func (tg target) client(t *testing.T, extra ...remote.Option) *remote.Executor {
	t.Helper()
	ex, err := remote.New(tg.url, append(append([]remote.Option{}, tg.opts...), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex
}

// authed is a client with the suite's token that uploads artifacts ("by
// path" covers executing them where they lie).
func (tg target) authed(t *testing.T) *remote.Executor {
	return tg.client(t, remote.WithToken(suiteToken), remote.WithUploads())
}

// get sends a raw request with the suite's token.
func (tg target) send(t *testing.T, method, path, contentType string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, tg.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+suiteToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := tg.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// metric reads one sample (a full series name) from the daemon's metrics.
func (tg target) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body := tg.send(t, http.MethodGet, api.MetricsPath, "", nil)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// runSuite exercises a daemon holding a fresh state directory through
// remote executors: uploads, execution, every error type, auth, limits and
// concurrent clients.
func runSuite(t *testing.T, tg target) {
	a := testApps(t)
	ctx := context.Background()
	type echo struct {
		Value string `msgpack:"value"`
	}

	t.Run("upload once", func(t *testing.T) {
		ex := tg.authed(t)
		before := tg.metric(t, "ociapp_daemon_uploads_total")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Go(func() {
				resp, err := ex.Execute(ctx, a.App, map[string]any{"value": fmt.Sprint(i)})
				if err == nil && resp["value"] != fmt.Sprint(i) {
					err = fmt.Errorf("got %v", resp)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := tg.metric(t, "ociapp_daemon_uploads_total"); got != before+1 {
			t.Fatalf("%v uploads for concurrent first executes, want 1", got-before)
		}
		// Another client finds it there and does not send it again.
		heads := tg.metric(t, `ociapp_daemon_http_requests_total{route="artifact",code="200"}`)
		if _, err := tg.authed(t).Execute(ctx, a.App, map[string]any{"value": "again"}); err != nil {
			t.Fatal(err)
		}
		if got := tg.metric(t, "ociapp_daemon_uploads_total"); got != before+1 {
			t.Fatal("a second client uploaded the artifact again")
		}
		if got := tg.metric(t, `ociapp_daemon_http_requests_total{route="artifact",code="200"}`); got != heads+1 {
			t.Fatalf("the second client asked %v times whether the artifact is there, want 1", got-heads)
		}
		info, err := ex.Upload(ctx, a.App)
		if err != nil {
			t.Fatal(err)
		}
		art, err := artifact.Open(t.Context(), a.App)
		if err != nil {
			t.Fatal(err)
		}
		if info.ArtifactDigest != art.Digest.String() || info.Name != "testapp" {
			t.Fatalf("the daemon describes it as %+v", info)
		}
	})

	t.Run("by path", func(t *testing.T) {
		// A client of a Unix socket has the daemon open its file where it
		// lies; over TCP it uploads.
		ex := tg.client(t, remote.WithToken(suiteToken))
		dir := t.TempDir()
		copyPath := filepath.Join(dir, "copy.ociapp")
		if err := os.WriteFile(copyPath, readFile(t, a.App), 0o644); err != nil {
			t.Fatal(err)
		}
		uploads := tg.metric(t, "ociapp_daemon_uploads_total")
		got, err := runtime.ExecuteAs[echo](ctx, ex, copyPath, echo{Value: "where it lies"})
		if err != nil || got.Value != "where it lies" {
			t.Fatalf("%+v %v", got, err)
		}
		// Over a Unix socket the daemon opens the copy where it lies; over
		// TCP the client finds its content stored ("upload once") by
		// digest. Either way nothing is sent again. (TestExecuteLocal*
		// cover the route's refusal over TCP.)
		if u := tg.metric(t, "ociapp_daemon_uploads_total"); u != uploads {
			t.Fatalf("%v uploads of a file whose content the daemon has, want 0", u-uploads)
		}
		// The runtime's errors come back as they do by digest.
		_, err = ex.Execute(ctx, copyPath, map[string]any{"value": 5})
		var appErr *runtime.AppError
		if !errors.As(err, &appErr) || appErr.Type != "ValidationError" {
			t.Fatalf("got %#v", err)
		}
	})

	t.Run("execute", func(t *testing.T) {
		ex := tg.authed(t)
		got, err := runtime.ExecuteAs[echo](ctx, ex, a.App, echo{Value: "héllo"})
		if err != nil || got.Value != "héllo" {
			t.Fatalf("%+v %v", got, err)
		}
		resp, body := tg.send(t, http.MethodPost, api.ExecutePath(fileDigest(t, a.App)), api.MediaJSON, strings.NewReader(`{"value": "json"}`))
		if resp.StatusCode != http.StatusOK || string(body) != `{"value":"json"}` {
			t.Fatalf("JSON execute: %s %s", resp.Status, body)
		}
	})

	t.Run("app error", func(t *testing.T) {
		ex := tg.authed(t)
		_, err := ex.Execute(ctx, a.App, map[string]any{"op": "fail", "value": "boom!", "millis": 7})
		var appErr *runtime.AppError
		if !errors.As(err, &appErr) || appErr.Type != "Boom" || appErr.Message != "boom!" {
			t.Fatalf("got %#v", err)
		}
		if d, _ := appErr.Details.(map[string]any); d["reason"] != "asked" || d["millis"] != int64(7) {
			t.Fatalf("details %#v", appErr.Details)
		}
		_, err = ex.Execute(ctx, a.App, map[string]any{"value": 5})
		if !errors.As(err, &appErr) || appErr.Type != "ValidationError" {
			t.Fatalf("got %#v", err)
		}
		if d, _ := appErr.Details.(map[string]any); d["errors"] == nil {
			t.Fatalf("details %#v", appErr.Details)
		}
		// Bytes that are not UTF-8, echoed by the app's validation error,
		// come back as bin: the same bytes, not a str holding them.
		_, err = ex.Execute(ctx, a.App, map[string]any{"value": []byte{0xff}})
		if !errors.As(err, &appErr) || appErr.Type != "ValidationError" {
			t.Fatalf("got %#v", err)
		}
		issues, _ := appErr.Details.(map[string]any)["errors"].([]any)
		if len(issues) != 1 || !reflect.DeepEqual(issues[0].(map[string]any)["input"], []byte{0xff}) {
			t.Fatalf("details %#v", appErr.Details)
		}
		body, _ := protocol.EncodePayload(map[string]any{"value": []byte{0xff}})
		resp, raw := tg.send(t, http.MethodPost, api.ExecutePath(fileDigest(t, a.App)), api.MediaMsgpack, bytes.NewReader(body))
		if resp.StatusCode != http.StatusUnprocessableEntity || !bytes.Contains(raw, []byte("\xa5input\xc4\x01\xff")) {
			t.Fatalf("msgpack error body: %s % x", resp.Status, raw)
		}
	})

	t.Run("overloaded", func(t *testing.T) {
		ex := tg.authed(t)
		const burst = 24
		errs := make(chan error, burst)
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				_, err := ex.Execute(ctx, a.App, map[string]any{"op": "sleep", "millis": 1000})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		overloaded := 0
		for err := range errs {
			var oe *runtime.OverloadedError
			switch {
			case err == nil:
			case errors.As(err, &oe):
				if oe.Artifact != "testapp 0.1.0" {
					t.Fatalf("overloaded error names %q", oe.Artifact)
				}
				overloaded++
			default:
				t.Fatalf("unexpected error in a burst: %v", err)
			}
		}
		if overloaded == 0 || overloaded == burst {
			t.Fatalf("%d of %d requests overloaded; want some, not all", overloaded, burst)
		}
	})

	t.Run("concurrent clients", func(t *testing.T) {
		const clients, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			ex := tg.authed(t)
			wg.Go(func() {
				for i := range each {
					want := fmt.Sprintf("client %d request %d", c, i)
					got, err := runtime.ExecuteAs[echo](ctx, ex, a.App, echo{Value: want})
					if err != nil || got.Value != want {
						errs <- fmt.Errorf("%s: got %q, %v", want, got.Value, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("request timeout", func(t *testing.T) {
		start := time.Now()
		_, err := tg.authed(t).Execute(ctx, a.App, map[string]any{"op": "sleep", "millis": 5000})
		var te *runtime.RequestTimeoutError
		if !errors.As(err, &te) || te.Timeout != suiteRequestTimeout || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %#v", err)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Fatalf("the timeout took %v", took)
		}
	})

	t.Run("worker crashed", func(t *testing.T) {
		ex := tg.authed(t)
		_, err := ex.Execute(ctx, a.App, map[string]any{"op": "crash"})
		var ce *runtime.WorkerCrashError
		if !errors.As(err, &ce) || !ce.Exited || ce.ExitCode != 3 || !strings.Contains(ce.Logs, "crashing as asked") {
			t.Fatalf("got %#v", err)
		}
		// The next request gets a working container.
		if _, err := ex.Execute(ctx, a.App, map[string]any{"value": "after"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("startup failed", func(t *testing.T) {
		_, err := tg.authed(t).Execute(ctx, a.ExitStart, map[string]any{})
		var se *runtime.StartupError
		if !errors.As(err, &se) || !se.Exited || se.ExitCode != 3 || !strings.Contains(se.Logs, "ImportError") || se.Artifact != "exitstart 0.1.0" {
			t.Fatalf("got %#v", err)
		}
	})

	t.Run("artifact invalid", func(t *testing.T) {
		data := readFile(t, a.App)
		data[len(data)/2] ^= 0xff
		bad := filepath.Join(t.TempDir(), "corrupt.ociapp")
		if err := os.WriteFile(bad, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := tg.authed(t).Execute(ctx, bad, map[string]any{})
		var ae *runtime.ArtifactError
		var fe *artifact.Error
		if !errors.As(err, &ae) || ae.Path != bad || !errors.As(err, &fe) || fe.Fault != artifact.FaultDigestMismatch {
			t.Fatalf("got %#v", err)
		}
		_, err = tg.authed(t).Execute(ctx, filepath.Join(t.TempDir(), "missing.ociapp"), map[string]any{})
		if !errors.As(err, &ae) {
			t.Fatalf("missing file: %#v", err)
		}
	})

	t.Run("artifact not found", func(t *testing.T) {
		resp, body := tg.send(t, http.MethodPost, api.ExecutePath("sha256:"+strings.Repeat("0", 64)), api.MediaJSON, strings.NewReader(`{}`))
		wantError(t, resp, body, api.CodeArtifactNotFound)
	})

	t.Run("unauthorized", func(t *testing.T) {
		for name, ex := range map[string]*remote.Executor{
			"no token":    tg.client(t),
			"wrong token": tg.client(t, remote.WithToken(suiteToken+"x")),
		} {
			_, err := ex.Execute(ctx, a.App, map[string]any{"value": "x"})
			var re *remote.Error
			if !errors.As(err, &re) || re.Code != api.CodeUnauthorized || re.Status != http.StatusUnauthorized {
				t.Fatalf("%s: got %#v", name, err)
			}
			if _, err := ex.Pools(ctx); !errors.As(err, &re) || re.Code != api.CodeUnauthorized {
				t.Fatalf("%s: pools: %v", name, err)
			}
			if err := ex.Health(ctx); err != nil {
				t.Fatalf("%s: the health check needs no token: %v", name, err)
			}
		}
	})

	t.Run("oversized", func(t *testing.T) {
		ex := tg.authed(t)
		_, err := ex.Execute(ctx, a.App, map[string]any{"value": strings.Repeat("x", suiteMaxRequestSize)})
		var re *remote.Error
		if !errors.As(err, &re) || re.Code != api.CodeBodyTooLarge || re.Limit != suiteMaxRequestSize {
			t.Fatalf("request: got %#v", err)
		}
		big := filepath.Join(t.TempDir(), "big.ociapp")
		f, err := os.Create(big)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, suiteMaxArtifactSize+1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, err = ex.Execute(ctx, big, map[string]any{})
		if !errors.As(err, &re) || re.Code != api.CodeBodyTooLarge || re.Limit != suiteMaxArtifactSize {
			t.Fatalf("artifact: got %#v", err)
		}
	})

	t.Run("pools and containers", func(t *testing.T) {
		ex := tg.authed(t)
		pools, err := ex.Pools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range pools {
			found = found || (p.Artifact == "testapp 0.1.0" && p.Containers >= 1)
		}
		if !found {
			t.Fatalf("pools %+v", pools)
		}
		cs, err := ex.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found = false
		for _, c := range cs {
			found = found || (c.Artifact == "testapp" && c.State == "running")
		}
		if !found {
			t.Fatalf("containers %+v", cs)
		}
		arts, err := ex.Artifacts(ctx)
		if err != nil || len(arts) != 2 {
			t.Fatalf("artifacts %+v %v", arts, err)
		}
		if tg.metric(t, "ociapp_runtime_cold_starts_total") < 2 {
			t.Fatal("metrics count no cold starts")
		}
	})
	// After "pools and containers", which counts the artifacts.
	t.Run("stream", func(t *testing.T) {
		// A handler that does not stream gives its one response as the
		// only item, and its error as the stream's error.
		ex := tg.authed(t)
		var items []map[string]any
		for item, err := range ex.Stream(ctx, a.Capable, map[string]any{"op": "deadline"}) {
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, item)
		}
		if len(items) != 1 || items[0]["n"] == nil {
			t.Fatalf("items %v, want the one response", items)
		}
		n := 0
		for item, err := range ex.Stream(ctx, a.Capable, map[string]any{"op": "unknown"}) {
			n++
			var appErr *runtime.AppError
			if !errors.As(err, &appErr) || appErr.Type != "UnknownOp" || item != nil {
				t.Fatalf("%v %v, want the app error", item, err)
			}
		}
		if n != 1 {
			t.Fatalf("%d results for a failing request", n)
		}

		// A handler that streams: its items complete and in order, and its
		// error after its items.
		next := int64(0)
		for item, err := range ex.Stream(ctx, a.Streamer, map[string]any{"count": 10_000, "size": 4}) {
			if err != nil {
				t.Fatalf("after %d items: %v", next, err)
			}
			if item["i"] != next || item["pad"] != "xxxx" {
				t.Fatalf("item %d is %v", next, item)
			}
			next++
		}
		if next != 10_000 {
			t.Fatalf("%d items, want 10000", next)
		}
		var last error
		n = 0
		for _, err := range ex.Stream(ctx, a.Streamer, map[string]any{"count": 10, "fail_at": 3}) {
			if err != nil {
				last = err
				continue
			}
			n++
		}
		var appErr *runtime.AppError
		if n != 3 || !errors.As(last, &appErr) || appErr.Type != "StreamFailed" {
			t.Fatalf("%d items, then %v; want 3, then StreamFailed", n, last)
		}

		// Over HTTP, the items are NDJSON lines; the artifact was uploaded
		// above.
		resp, body := tg.send(t, http.MethodPost, api.StreamPath(fileDigest(t, a.Streamer)), api.MediaJSON, strings.NewReader(`{"count": 2, "size": 1}`))
		want := `{"item": {"i":0,"pad":"x"}}` + "\n" + `{"item": {"i":1,"pad":"x"}}` + "\n" + `{"end": true}` + "\n"
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaNDJSON || string(body) != want {
			t.Fatalf("NDJSON stream: %s %s %q", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		resp, body = tg.send(t, http.MethodPost, api.StreamPath(fileDigest(t, a.Streamer)), api.MediaJSON, strings.NewReader(`{"count": 5, "fail_at": 1}`))
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		if resp.StatusCode != http.StatusOK || len(lines) != 2 || lines[0] != `{"item": {"i":0,"pad":""}}` || !strings.Contains(lines[1], `"error": {`) || !strings.Contains(lines[1], "StreamFailed") {
			t.Fatalf("NDJSON stream failing after an item: %s %q", resp.Status, body)
		}
	})

	t.Run("caller deadline", func(t *testing.T) {
		// The capable app's handler sees the caller's deadline through
		// the daemon, on the channel and over HTTP, for executes and
		// streams; without one, an execute's is the request timeout and
		// a stream's none.
		left := func(item map[string]any, err error) int64 {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			n, ok := item["n"].(int64)
			if !ok {
				t.Fatalf("answer %v", item)
			}
			return n
		}
		for name, ex := range map[string]*remote.Executor{
			"channel": tg.authed(t),
			"http":    tg.client(t, remote.WithToken(suiteToken), remote.WithUploads(), remote.WithHTTPExecute()),
		} {
			// Warm, so that the deadline is not spent starting a container.
			if n := left(ex.Execute(ctx, a.Capable, map[string]any{"op": "deadline"})); n <= 0 || n > suiteRequestTimeout.Milliseconds() {
				t.Fatalf("%s: the handler had %d ms without a caller's deadline, want the request timeout", name, n)
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			if n := left(ex.Execute(cctx, a.Capable, map[string]any{"op": "deadline"})); n <= 0 || n > 1000 {
				t.Fatalf("%s: the handler had %d ms of its caller's 1 s", name, n)
			}
			for item, err := range ex.Stream(cctx, a.Capable, map[string]any{"op": "deadline"}) {
				if n := left(item, err); n <= 0 || n > 1000 {
					t.Fatalf("%s: the stream's handler had %d ms of its caller's 1 s", name, n)
				}
			}
			cancel()
			for item, err := range ex.Stream(ctx, a.Capable, map[string]any{"op": "deadline"}) {
				if n := left(item, err); name == "channel" && n != -1 {
					t.Fatalf("the stream's handler had %d ms without a caller's deadline", n)
				}
			}

			// A handler that outlives its caller's deadline ends there,
			// before the request timeout, with the context's error.
			start := time.Now()
			cctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
			_, err := ex.Execute(cctx, a.Capable, map[string]any{"op": "block"})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, new(*runtime.RequestTimeoutError)) || time.Since(start) > 1500*time.Millisecond {
				t.Fatalf("%s: %#v after %v, want the caller's deadline", name, err, time.Since(start))
			}
		}

		// A request whose time is up is answered without running.
		req, err := http.NewRequest(http.MethodPost, tg.base+api.ExecutePath(fileDigest(t, a.Capable)), strings.NewReader(`{"op": "block"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+suiteToken)
		req.Header.Set("Content-Type", api.MediaJSON)
		req.Header.Set(api.HeaderDeadline, "0")
		resp, err := tg.raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e, err := api.DecodeError(api.MediaJSON, body)
		if resp.StatusCode != http.StatusGatewayTimeout || err != nil || e.Code != api.CodeRequestTimeout || !e.CallerDeadline {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})
}

// TestDaemonUnixSocket runs the suite against a daemon in this process,
// over its Unix socket.
func TestDaemonUnixSocket(t *testing.T) {
	eng := dockertest.Engine(t)
	dir := testenv.ShortTempDir(t)
	sock := filepath.Join(dir, "d.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, eng,
			daemon.WithListen("unix://"+sock), daemon.WithStateDir(filepath.Join(dir, "state")), daemon.WithToken(suiteToken),
			daemon.WithMaxArtifactSize(suiteMaxArtifactSize), daemon.WithMaxRequestSize(suiteMaxRequestSize),
			daemon.WithReady(func(net.Addr) { close(ready) }),
			daemon.WithRuntimeOptions(suiteRuntimeOptions()...),
		)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	raw := unixClient(sock)
	defer raw.CloseIdleConnections()
	runSuite(t, target{url: "unix://" + sock, raw: raw, base: "http://daemon"})

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertNoContainers(t, filepath.Join(dir, "state", "rt"))
}

// assertNoContainers checks that no container of the runtime state
// directory rtDir is left.
func assertNoContainers(t *testing.T, rtDir string) {
	t.Helper()
	if n := countContainers(t, rtDir); n != 0 {
		t.Fatalf("%d containers left behind", n)
	}
}

func countContainers(t *testing.T, rtDir string) int {
	t.Helper()
	ctx := context.Background()
	eng, err := docker.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	list, err := eng.ListContainers(ctx, map[string]string{runtime.LabelStateDir: rtDir})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// TestDaemonNetworkNamespace runs the suite against a daemon in its own
// network namespace, reached over TCP with TLS and a token from a client in
// another namespace, through a veth pair: two hosts on one machine.
func TestDaemonNetworkNamespace(t *testing.T) {
	dockertest.Engine(t)
	n := setupNetns(t)
	dir := testenv.ShortTempDir(t)
	cert, key := testtls.SelfSigned(t, dir, net.ParseIP(n.daemonIP))
	addr := net.JoinHostPort(n.daemonIP, "7443")
	d := startChild(t, n.daemonNS, childConfig{
		Listen: "tcp://" + addr, StateDir: filepath.Join(dir, "state"), Token: suiteToken,
		TLSCert: cert, TLSKey: key,
		MaxArtifactSize: suiteMaxArtifactSize, MaxRequestSize: suiteMaxRequestSize,
		PlainSocketDirs: true,
	})

	// The daemon must not be reachable from this test's own namespace: it
	// lives in another network. (A bare connect proves nothing where
	// outbound traffic is intercepted, so ask for the health check.)
	outside, err := remote.New("https://"+addr, remote.WithCAFile(cert))
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 3*time.Second)
	err = outside.Health(hctx)
	hcancel()
	outside.Close()
	if err == nil {
		t.Fatal("the daemon is reachable from the root namespace")
	}

	dial := n.clientDialer()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(readFile(t, cert))
	raw := &http.Client{Transport: &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer raw.CloseIdleConnections()
	tg := target{
		url:  "https://" + addr,
		opts: []remote.Option{remote.WithDialer(dial), remote.WithCAFile(cert)},
		raw:  raw, base: "https://" + addr,
	}
	runSuite(t, tg)
	defer func() {
		if err := d.stop(t, syscall.SIGTERM, time.Minute); err != nil {
			t.Fatalf("the daemon's exit: %v", err)
		}
		assertNoContainers(t, filepath.Join(dir, "state", "rt"))
	}()

	t.Run("tls required", func(t *testing.T) {
		ex := tg.client(t, remote.WithToken(suiteToken))
		plain, err := remote.New("http://"+addr, remote.WithDialer(dial), remote.WithToken(suiteToken))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if _, err := plain.Pools(context.Background()); err == nil {
			t.Fatal("plain HTTP to a TLS daemon worked")
		}
		untrusted, err := remote.New("https://"+addr, remote.WithDialer(dial), remote.WithToken(suiteToken))
		if err != nil {
			t.Fatal(err)
		}
		defer untrusted.Close()
		var ue *remote.UnavailableError
		if _, err := untrusted.Pools(context.Background()); !errors.As(err, &ue) {
			t.Fatalf("an untrusted certificate was accepted: %v", err)
		}
		if _, err := ex.Pools(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDaemonShutdownAndRestart checks a graceful stop (the request in
// flight finishes, the containers go), that a restarted daemon keeps the
// uploaded artifacts, and that one started after a crash removes the
// containers the crashed one left.
func TestDaemonShutdownAndRestart(t *testing.T) {
	dockertest.Engine(t)
	a := testApps(t)
	dir := testenv.ShortTempDir(t)
	sock := filepath.Join(dir, "d.sock")
	stateDir := filepath.Join(dir, "state")
	rtDir := filepath.Join(stateDir, "rt")
	cfg := childConfig{Listen: "unix://" + sock, StateDir: stateDir, Token: suiteToken}
	raw := unixClient(sock)
	defer raw.CloseIdleConnections()
	tg := target{url: "unix://" + sock, raw: raw, base: "http://daemon"}
	ctx := context.Background()

	first := startChild(t, "", cfg)
	ex := tg.authed(t)
	if _, err := ex.Execute(ctx, a.App, map[string]any{"value": "warm"}); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		resp, err := ex.Execute(ctx, a.App, map[string]any{"op": "sleep", "millis": 1500, "value": "slow"})
		if err == nil && resp["value"] != "slow" {
			err = fmt.Errorf("got %v", resp)
		}
		slow <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if err := first.stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("the daemon's exit: %v", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the request in flight at SIGTERM: %v", err)
	}
	assertNoContainers(t, rtDir)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the socket is still there: %v", err)
	}

	// Restarted: the upload is still there.
	second := startChild(t, "", cfg)
	ex = tg.authed(t)
	if _, err := ex.Execute(ctx, a.App, map[string]any{"value": "again"}); err != nil {
		t.Fatal(err)
	}
	if n := tg.metric(t, "ociapp_daemon_uploads_total"); n != 0 {
		t.Fatalf("the restarted daemon received the artifact %v times, want 0", n)
	}
	// Crashed: its containers stay behind...
	if err := second.stop(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("a killed daemon exited cleanly")
	}
	if n := countContainers(t, rtDir); n == 0 {
		t.Fatal("a killed daemon left no container; the cleanup below proves nothing")
	}
	// ...until the next daemon starts and removes them.
	third := startChild(t, "", cfg)
	assertNoContainers(t, rtDir)
	if _, err := tg.authed(t).Execute(ctx, a.App, map[string]any{"value": "third"}); err != nil {
		t.Fatal(err)
	}
	if err := third.stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	assertNoContainers(t, rtDir)
}
