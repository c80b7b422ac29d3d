package remote_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

// muxDaemon serves a daemon with rt on a Unix socket through daemon.Serve
// (the execute channel needs its connections); stop drains it.
func muxDaemon(t *testing.T, rt daemon.Runner, opts ...daemon.Option) (sock string, stop func()) {
	t.Helper()
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sock, stopServe := daemontest.Serve(t, srv, dir)
	return sock, func() {
		if err := stopServe(); err != nil {
			t.Error(err)
		}
	}
}

// TestMuxDrain: a request in flight on the execute channel when the daemon
// drains is answered.
func TestMuxDrain(t *testing.T) {
	started := make(chan struct{})
	sock, stop := muxDaemon(t, &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		close(started)
		select {
		case <-time.After(300 * time.Millisecond):
			return p, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	path := smallArtifact(t, "a")
	done := make(chan error, 1)
	go func() {
		_, err := ex.Execute(context.Background(), path, map[string]any{"v": 1})
		done <- err
	}()
	<-started
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the request in flight at the drain: %v", err)
	}
}

// metricsOf reads one series from the daemon's metrics.
func metricsOf(t *testing.T, sock, series string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://d"+api.MetricsPath, nil)
	req.Header.Set("Authorization", "Bearer tok") // the token of the daemons that have one
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "0"
}

// TestMuxCompletionOrder: concurrent requests share one channel and are
// answered as they complete, not as they were sent.
func TestMuxCompletionOrder(t *testing.T) {
	sock, _ := muxDaemon(t, &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		m, err := protocol.DecodePayload(p)
		if err != nil {
			return nil, err
		}
		time.Sleep(time.Duration(m["ms"].(int64)) * time.Millisecond)
		return p, nil
	}})
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	path := smallArtifact(t, "a")
	if _, err := ex.Execute(context.Background(), path, map[string]any{"ms": 0}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	var mu sync.Mutex
	var order []int64
	var wg sync.WaitGroup
	for i := range n {
		ms := int64((n - i) * 60)
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 5 * time.Millisecond) // sent in order
			resp, err := ex.Execute(context.Background(), path, map[string]any{"ms": ms})
			if err != nil || resp["ms"] != ms {
				t.Errorf("%v %v", resp, err)
			}
			mu.Lock()
			order = append(order, ms)
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("answered in the order %v, want the shortest first", order)
		}
	}
	if got := metricsOf(t, sock, `ociapp_daemon_http_requests_total{route="mux",code="101"}`); got != "1" {
		t.Fatalf("%s execute channels opened, want 1", got)
	}
	if got := metricsOf(t, sock, `ociapp_daemon_http_requests_total{route="mux_execute",code="200"}`); got != "7" {
		t.Fatalf("%s requests on the channel, want 7", got)
	}
}

// TestMuxCancel: a caller that gives up has its request cancelled in the
// daemon (the runtime then cancels it in its container), gets its own
// error at once, and the channel serves the next request.
func TestMuxCancel(t *testing.T) {
	started, canceled := make(chan struct{}, 1), make(chan error, 1)
	sock, _ := muxDaemon(t, &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		m, err := protocol.DecodePayload(p)
		if err != nil {
			return nil, err
		}
		if m["block"] == true {
			started <- struct{}{}
			<-ctx.Done()
			canceled <- ctx.Err()
			return nil, ctx.Err()
		}
		return p, nil
	}})
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	path := smallArtifact(t, "a")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := ex.Execute(ctx, path, map[string]any{"block": true})
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute returned %v, want context.Canceled", err)
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the daemon's request ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon's request was not cancelled")
	}
	if resp, err := ex.Execute(t.Context(), path, map[string]any{"v": "next"}); err != nil || resp["v"] != "next" {
		t.Fatalf("the next request: %v %v", resp, err)
	}
	if got := metricsOf(t, sock, `ociapp_daemon_http_requests_total{route="mux",code="101"}`); got != "1" {
		t.Fatalf("%s execute channels opened, want 1", got)
	}
}

// TestMuxErrors: errors come back typed on the channel, and leave it
// usable.
func TestMuxErrors(t *testing.T) {
	sock, _ := muxDaemon(t, &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		m, _ := protocol.DecodePayload(p)
		switch m["op"] {
		case "fail":
			return nil, &runtime.AppError{Type: "ValidationError", Message: "bad", Details: map[string]any{"input": []byte{0xff}}}
		case "wait":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return p, nil
	}}, daemon.WithMaxRequestSize(4096), daemon.WithToken("tok"))
	ex, err := remote.New("unix://"+sock, remote.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	path := smallArtifact(t, "a")
	ctx := context.Background()

	_, err = ex.Execute(ctx, path, map[string]any{"op": "fail"})
	var appErr *runtime.AppError
	if !errors.As(err, &appErr) || appErr.Type != "ValidationError" || !reflect.DeepEqual(appErr.Details, map[string]any{"input": []byte{0xff}}) {
		t.Fatalf("got %#v", err)
	}
	_, err = ex.Execute(ctx, path, map[string]any{"big": strings.Repeat("x", 8192)})
	var re *remote.Error
	if !errors.As(err, &re) || re.Code != api.CodeBodyTooLarge || re.Limit != 4096 {
		t.Fatalf("got %#v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = ex.Execute(cctx, path, map[string]any{"op": "wait"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if resp, err := ex.Execute(ctx, path, map[string]any{"v": "still"}); err != nil || resp["v"] != "still" {
		t.Fatalf("the channel after errors: %v %v", resp, err)
	}
	if got := metricsOf(t, sock, `ociapp_daemon_http_requests_total{route="mux",code="101"}`); got != "1" {
		t.Fatalf("%s execute channels opened, want 1", got)
	}

	// A wrong token is refused at the upgrade.
	bad, err := remote.New("unix://"+sock, remote.WithToken("nope"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Execute(ctx, path, map[string]any{}); !errors.As(err, &re) || re.Code != api.CodeUnauthorized {
		t.Fatalf("got %#v", err)
	}
}

// TestMuxFallback: a daemon without the execute channel gets HTTP requests.
func TestMuxFallback(t *testing.T) {
	d := newDaemon(t, &daemontest.Runner{})
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.MuxPath {
			http.NotFound(w, r)
			return
		}
		d.ServeHTTP(w, r)
	}))
	ex, err := remote.New("unix://"+s.sock, remote.WithUploads())
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	path := smallArtifact(t, "a")
	for range 2 {
		if resp, err := ex.Execute(context.Background(), path, map[string]any{"v": 1}); err != nil || resp["v"] != int64(1) {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if s.count(http.MethodGet) != 1 || s.count(http.MethodPost) != 2 {
		t.Fatalf("requests by method: %v", s.counts)
	}
}
