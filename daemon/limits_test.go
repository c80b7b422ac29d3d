package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// metricValue reads one series from the daemon's metrics.
func (d *testDaemon) metricValue(t *testing.T, series string) int64 {
	t.Helper()
	_, body := d.do(t, http.MethodGet, api.MetricsPath, nil)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in the metrics", series)
	return 0
}

// TestExecuteBodyMemoryBound checks that the bytes of execute bodies held
// at once stay within the body memory: with room for two bodies, a third
// concurrent one is answered overloaded (not read), and fits once one of
// the two ends.
func TestExecuteBodyMemoryBound(t *testing.T) {
	const size = 64 << 10
	entered, release := make(chan struct{}, 3), make(chan struct{})
	var running atomic.Int32
	rt := &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		if running.Add(1) > 2 {
			// Beyond the bound: answered at once, and the test fails.
			return []byte{0x80}, nil
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte{0x80}, nil
	}}
	d := startServer(t, rt, daemon.WithMaxRequestSize(size), daemon.WithMaxBodyMemory(2*size))
	digest := d.upload(t, mustSmall(t))
	// A payload of exactly size bytes: a map holding one string.
	body, err := protocol.EncodePayload(map[string]any{"v": strings.Repeat("x", size-6)})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != size {
		t.Fatalf("payload of %d bytes", len(body))
	}
	send := func() (*http.Response, []byte) {
		return d.do(t, http.MethodPost, api.ExecutePath(digest), bytes.NewReader(body), "Content-Type", api.MediaMsgpack)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if resp, b := send(); resp.StatusCode != http.StatusOK {
				t.Errorf("a request within the bound: %s %s", resp.Status, b)
			}
		})
	}
	<-entered
	<-entered
	if got := d.metricValue(t, "ociapp_daemon_body_bytes_in_flight"); got != 2*size {
		t.Fatalf("body bytes in flight %d, want %d", got, 2*size)
	}
	resp, b := send()
	e := wantError(t, resp, b, api.CodeOverloaded)
	if !strings.Contains(e.Message, "body memory allows") {
		t.Fatalf("message %q", e.Message)
	}
	if got := d.metricValue(t, "ociapp_daemon_body_bytes_in_flight"); got > 2*size {
		t.Fatalf("body bytes in flight %d above the bound %d", got, 2*size)
	}
	close(release)
	wg.Wait()
	if resp, b := send(); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the others ended: %s %s", resp.Status, b)
	}
	if got := d.metricValue(t, "ociapp_daemon_body_bytes_in_flight"); got != 0 {
		t.Fatalf("body bytes in flight %d after every request ended", got)
	}
}

// TestJSONNesting checks that a JSON request nesting deeper than a
// payload may is refused as such, with the limit, rather than as invalid
// msgpack; and that the deepest allowed nesting reaches the application.
func TestJSONNesting(t *testing.T) {
	d := startServer(t, &daemontest.Runner{})
	digest := d.upload(t, mustSmall(t))
	nested := func(depth int) string {
		// {"a": [[...[1]...]]}: the array holding 1 is depth levels deep.
		return `{"a":` + strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth) + `}`
	}
	for _, tt := range []struct {
		depth int
		ok    bool
	}{{127, true}, {128, false}, {9000, false}, {20000, false}} {
		t.Run(strconv.Itoa(tt.depth), func(t *testing.T) {
			resp, b := d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(nested(tt.depth)), "Content-Type", api.MediaJSON)
			if tt.ok {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s %s", resp.Status, b)
				}
				return
			}
			e := wantError(t, resp, b, api.CodeBadRequest)
			if !strings.Contains(e.Message, "more than 128 levels deep") {
				t.Fatalf("message %q", e.Message)
			}
		})
	}
}

// rawRequest sends a request's head and the first bytes of its body on a
// connection of its own, then stalls, and returns the answer.
func (d *testDaemon) stalledRequest(t *testing.T, method, path, contentType string, declared int, sent []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: daemon\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", method, path, contentType, declared)
	conn.Write(sent)
	// The client stalls; a daemon without body deadlines never answers.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestStalledBodies checks that upload and execute bodies that stop
// arriving are cut off with body_timeout, and leave no temporary file.
func TestStalledBodies(t *testing.T) {
	d := startServer(t, &daemontest.Runner{}, daemon.WithBodyTimeouts(200*time.Millisecond, 1024))
	path := mustSmall(t)
	digest := d.upload(t, path)
	data := readFile(t, path)
	other := bytesDigest(append(bytes.Clone(data), 0))

	t.Run("upload", func(t *testing.T) {
		resp, b := d.stalledRequest(t, http.MethodPut, api.ArtifactPath(other), api.MediaArtifact, len(data)+1, data[:512])
		e := wantError(t, resp, b, api.CodeBodyTimeout)
		if !strings.Contains(e.Message, "a body may take") {
			t.Fatalf("message %q", e.Message)
		}
		entries, err := os.ReadDir(filepath.Join(d.storeDir, "sha256"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Fatalf("the stalled upload left %s", e.Name())
			}
		}
	})
	t.Run("execute", func(t *testing.T) {
		resp, b := d.stalledRequest(t, http.MethodPost, api.ExecutePath(digest), api.MediaJSON, 100, []byte(`{"a":`))
		wantError(t, resp, b, api.CodeBodyTimeout)
	})
	t.Run("slow but steady", func(t *testing.T) {
		// 4 KiB at 16 KiB/s: slower than the timeout alone allows for
		// the whole body, within the rate.
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(`{"a":"`))
			for range 16 {
				pw.Write(bytes.Repeat([]byte("x"), 256))
				time.Sleep(15 * time.Millisecond)
			}
			pw.Write([]byte(`"}`))
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://daemon"+api.ExecutePath(digest), pr)
		req.ContentLength = 6 + 16*256 + 2
		req.Header.Set("Content-Type", api.MediaJSON)
		resp, err := d.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s", resp.Status, b)
		}
	})
}

// TestConcurrentUploadsOfOneFile checks that concurrent uploads of the
// same bytes store them once: one 201 Created, the others 200 with the
// same description.
func TestConcurrentUploadsOfOneFile(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var verified sync.WaitGroup
	var calls sync.Mutex
	n := 0
	daemon.SetVerifier(store, func(ctx context.Context, path string) (*artifact.Artifact, error) {
		calls.Lock()
		n++
		calls.Unlock()
		<-release
		return daemon.Verify(ctx, path)
	})
	d := serveStore(t, store, dir, &daemontest.Runner{})
	path := mustSmall(t)
	data := readFile(t, path)
	digest := bytesDigest(data)
	const uploads = 4
	statuses := make([]int, uploads)
	bodies := make([][]byte, uploads)
	for i := range uploads {
		verified.Go(func() {
			resp, b := d.do(t, http.MethodPut, api.ArtifactPath(digest), bytes.NewReader(data))
			statuses[i], bodies[i] = resp.StatusCode, b
		})
	}
	// All four are in the daemon (the metrics request is the fifth).
	for d.metricValue(t, "ociapp_daemon_http_requests_in_flight") < uploads+1 {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	verified.Wait()
	created := 0
	for i, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Fatalf("upload %d: %d %s", i, s, bodies[i])
		}
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("upload %d answered %s, upload 0 %s", i, bodies[i], bodies[0])
		}
	}
	if created != 1 || n != 1 {
		t.Fatalf("%d answers 201 and %d verifications for %d uploads of one file, want 1 and 1 (statuses %v)", created, n, uploads, statuses)
	}
}

// serveStore serves store on a Unix socket in dir.
func serveStore(t *testing.T, store *daemon.Store, dir string, rt daemon.Runner, opts ...daemon.Option) *testDaemon {
	t.Helper()
	srv, err := daemon.New(rt, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sock, _ := daemontest.Serve(t, srv, dir)
	d := &testDaemon{srv: srv, storeDir: filepath.Join(dir, "store"), sock: sock, client: unixClient(sock)}
	t.Cleanup(d.client.CloseIdleConnections)
	return d
}

// distinctArtifact writes an artifact of its own (a random image) of
// about the same size as the others.
func distinctArtifact(t *testing.T) (path string, size int64) {
	t.Helper()
	path, _, _ = smallArtifact(t, t.TempDir())
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, fi.Size()
}

// TestStoreQuota checks the upload store's quota: an upload that does not
// fit removes the least recently used artifact not in use; one that does
// not fit even so is refused with storage_full and leaves nothing behind.
func TestStoreQuota(t *testing.T) {
	a, size := distinctArtifact(t)
	b, _ := distinctArtifact(t)
	c, _ := distinctArtifact(t)
	dir := testenv.ShortTempDir(t)
	// Room for two artifacts.
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil, daemon.WithStoreQuota(2*size+size/2))
	if err != nil {
		t.Fatal(err)
	}
	d := serveStore(t, store, dir, &daemontest.Runner{})
	da, db := d.upload(t, a), d.upload(t, b)
	// a is used after b: b is the least recently used.
	if resp, body := d.do(t, http.MethodPost, api.ExecutePath(da), strings.NewReader(`{}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s", resp.Status, body)
	}
	dc := d.upload(t, c)
	for digest, want := range map[string]int{da: http.StatusOK, db: http.StatusNotFound, dc: http.StatusOK} {
		if resp, _ := d.do(t, http.MethodHead, api.ArtifactPath(digest), nil); resp.StatusCode != want {
			t.Fatalf("HEAD %s: %s, want %d", digest, resp.Status, want)
		}
	}
	if used, reserved := store.Usage(); used > 2*size+size/2 || reserved != 0 {
		t.Fatalf("the store holds %d bytes (%d reserved), above its quota", used, reserved)
	}

	// With both stored artifacts in use, nothing can make room.
	_, _, releaseA, _ := store.Acquire(da)
	_, _, releaseC, _ := store.Acquire(dc)
	defer releaseA()
	defer releaseC()
	for name, body := range map[string]func() io.Reader{
		"declared": func() io.Reader { return bytes.NewReader(readFile(t, b)) },
		"chunked":  func() io.Reader { return chunked{bytes.NewReader(readFile(t, b))} },
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := d.do(t, http.MethodPut, api.ArtifactPath(db), body())
			e := wantError(t, resp, body, api.CodeStorageFull)
			if e.Limit != 2*size+size/2 || !strings.Contains(e.Message, "store is full") {
				t.Fatalf("%+v", e)
			}
			entries, _ := os.ReadDir(filepath.Join(d.storeDir, "sha256"))
			if len(entries) != 4 {
				t.Fatalf("the store holds %d files, want the 4 of two artifacts", len(entries))
			}
		})
	}
}

// TestErrorTextsBounded checks that error bodies and log lines stay small
// whatever the error's text.
func TestErrorTextsBounded(t *testing.T) {
	huge := strings.Repeat("index entry é; ", 1<<20/16)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	errs := []error{
		&runtime.ArtifactError{Path: "x", Err: &artifact.Error{Path: "x", Fault: artifact.FaultMalformed, Detail: huge, Err: errors.New(huge)}},
		errors.New(huge), // internal: logged too
		&runtime.StartupError{Artifact: "x", Reason: huge, Logs: huge},
	}
	i := 0
	rt := &daemontest.Runner{Fn: func(context.Context, []byte) ([]byte, error) { i++; return nil, errs[i-1] }}
	d := startServer(t, rt, daemon.WithLogger(log))
	digest := d.upload(t, mustSmall(t))
	for range errs {
		for _, media := range []string{api.MediaJSON} {
			resp, b := d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{}`), "Content-Type", media)
			if resp.StatusCode < 400 {
				t.Fatalf("%s", resp.Status)
			}
			if len(b) > 64<<10 {
				t.Fatalf("an error body of %d bytes", len(b))
			}
			if !strings.Contains(string(b), "more bytes)") {
				t.Fatalf("the body does not say it was cut: %.200s", b)
			}
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 16<<10 {
			t.Fatalf("a log line of %d bytes", len(line))
		}
	}
	if !strings.Contains(logs.String(), "execute failed") {
		t.Fatalf("the internal error was not logged:\n%.500s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestShutdownCancelsUpload checks that an upload still being verified
// when the drain timeout ends is canceled: Serve returns, the handler ends
// and the temporary file is gone.
func TestShutdownCancelsUpload(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	canceled := make(chan error, 1)
	daemon.SetVerifier(store, func(ctx context.Context, _ string) (*artifact.Artifact, error) {
		close(entered)
		<-ctx.Done() // as long as it is let run: a nesting bomb
		canceled <- ctx.Err()
		return nil, ctx.Err()
	})
	srv, err := daemon.New(&daemontest.Runner{}, store, daemon.WithDrainTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sock, stop := daemontest.Serve(t, srv, dir)
	client := unixClient(sock)
	defer client.CloseIdleConnections()
	data := readFile(t, mustSmall(t))
	answered := make(chan error, 1)
	go func() {
		resp, err := client.Do(mustRequest(t, http.MethodPut, api.ArtifactPath(bytesDigest(data)), data))
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	<-entered
	served := make(chan error, 1)
	go func() { served <- stop() }() // SIGTERM
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve still waits for the upload")
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the verification ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the upload's verification was not canceled")
	}
	<-answered
	// The handler removes its temporary file as it returns.
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(dir, "store", "sha256"))
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canceled upload left %v", entries)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustRequest(t *testing.T, method, path string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://daemon"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestVerificationsBounded checks that uploads are verified at most as
// many at once as there are CPUs, however many arrive together.
func TestVerificationsBounded(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	limit := goruntime.NumCPU()
	var running, most atomic.Int32
	release := make(chan struct{})
	daemon.SetVerifier(store, func(ctx context.Context, path string) (*artifact.Artifact, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		return daemon.Verify(ctx, path)
	})
	d := serveStore(t, store, dir, &daemontest.Runner{})
	var wg sync.WaitGroup
	for range limit + 2 {
		path, _ := distinctArtifact(t)
		wg.Go(func() { d.upload(t, path) })
	}
	// Every upload is in the daemon (the metrics request is one more).
	for d.metricValue(t, "ociapp_daemon_http_requests_in_flight") < int64(limit+3) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // any verification beyond the bound would start
	if got := most.Load(); got != int32(limit) {
		t.Errorf("%d verifications at once, want %d (the CPUs)", got, limit)
	}
	close(release)
	wg.Wait()
	if got := most.Load(); got > int32(limit) {
		t.Errorf("%d verifications at once, want at most %d", got, limit)
	}
}
