package remote_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/internal/testtls"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server serves a daemon handler, which tests may swap, on a Unix socket,
// counting requests by method.
type server struct {
	sock    string
	handler atomic.Pointer[http.Handler]

	mu     sync.Mutex
	counts map[string]int
}

func newDaemon(t *testing.T, rt daemon.Runner, opts ...daemon.Option) http.Handler {
	t.Helper()
	store, err := daemon.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func serve(t *testing.T, h http.Handler) *server {
	t.Helper()
	dir := testenv.ShortTempDir(t)
	s := &server{sock: filepath.Join(dir, "d.sock"), counts: map[string]int{}}
	s.handler.Store(&h)
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[r.Method]++
		s.mu.Unlock()
		(*s.handler.Load()).ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return s
}

func (s *server) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[method]
}

// executor returns an executor that uploads artifacts, as to a daemon on
// another host, and executes with HTTP requests, which the server counts
// (TestExecuteByPath and the mux tests cover the other ways).
func (s *server) executor(t *testing.T, opts ...remote.Option) *remote.Executor {
	t.Helper()
	ex, err := remote.New("unix://"+s.sock, append([]remote.Option{remote.WithUploads(), remote.WithHTTPExecute()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex
}

func smallArtifact(t *testing.T, name string) string {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+"-1.0.ociapp")
	if err := artifact.WriteFile(context.Background(), path, img, artifact.Metadata{Name: name, Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUploadOnce(t *testing.T) {
	s := serve(t, newDaemon(t, &daemontest.Runner{}))
	ex := s.executor(t)
	path := smallArtifact(t, "a")
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			resp, err := ex.Execute(ctx, path, map[string]any{"i": i})
			if err != nil || resp["i"] != int64(i) {
				t.Errorf("request %d: %v %v", i, resp, err)
			}
		})
	}
	wg.Wait()
	if s.count(http.MethodHead) != 1 || s.count(http.MethodPut) != 1 || s.count(http.MethodPost) != 16 {
		t.Fatalf("requests by method: %v", s.counts)
	}
	// Known now: straight to execute.
	if _, err := ex.Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if s.count(http.MethodHead) != 1 || s.count(http.MethodPut) != 1 {
		t.Fatalf("requests by method: %v", s.counts)
	}
	// Another client asks, and does not send it.
	if _, err := s.executor(t).Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if s.count(http.MethodHead) != 2 || s.count(http.MethodPut) != 1 {
		t.Fatalf("requests by method: %v", s.counts)
	}
	// A rebuilt file is a new artifact.
	img, _ := random.Image(256, 1)
	if err := artifact.WriteFile(ctx, path, img, artifact.Metadata{Name: "a", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	info, err := ex.Upload(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if s.count(http.MethodPut) != 2 || info.Name != "a" {
		t.Fatalf("rebuilt file: %v %+v", s.counts, info)
	}
	arts, err := ex.Artifacts(ctx)
	if err != nil || len(arts) != 2 {
		t.Fatalf("artifacts %+v %v", arts, err)
	}
}

func TestReuploadWhenTheDaemonLostIt(t *testing.T) {
	s := serve(t, newDaemon(t, &daemontest.Runner{}))
	ex := s.executor(t)
	path := smallArtifact(t, "a")
	ctx := context.Background()
	if _, err := ex.Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	// A daemon on a new state directory, behind the same address.
	fresh := newDaemon(t, &daemontest.Runner{})
	s.handler.Store(&fresh)
	resp, err := ex.Execute(ctx, path, map[string]any{"again": true})
	if err != nil || resp["again"] != true {
		t.Fatalf("%v %v", resp, err)
	}
	if s.count(http.MethodPut) != 2 {
		t.Fatalf("requests by method: %v", s.counts)
	}
}

// TestErrorsAs checks that remote execution fails with the same error
// values as the in-process runtime.
func TestErrorsAs(t *testing.T) {
	rt := &daemontest.Runner{}
	s := serve(t, newDaemon(t, rt))
	ex := s.executor(t)
	path := smallArtifact(t, "a")
	ctx := context.Background()
	if _, err := ex.Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want error // nil: err itself
	}{
		{"app", &runtime.AppError{Type: "ValueError", Message: "bad", Details: map[string]any{"n": int64(1), "l": []any{"x"}}}, nil},
		{"timeout", &runtime.RequestTimeoutError{Artifact: "a 1.0", Timeout: 30 * time.Second}, nil},
		{"startup", &runtime.StartupError{Artifact: "a 1.0", ContainerID: "c", Reason: "r", Exited: true, ExitCode: 1, Logs: "Traceback", RetryIn: time.Second}, nil},
		{"crash", &runtime.WorkerCrashError{Artifact: "a 1.0", ContainerID: "c", Reason: "r", Exited: true, ExitCode: 137, OOMKilled: true, Logs: "l"}, nil},
		{"overloaded", &runtime.OverloadedError{Artifact: "a 1.0", Queued: 1024}, nil},
		{"artifact", &runtime.ArtifactError{Path: "/store/x.ociapp", Err: &artifact.Error{Path: "/store/x.ociapp", Fault: artifact.FaultMalformed, Detail: "d"}},
			&runtime.ArtifactError{Path: path, Err: &artifact.Error{Path: path, Fault: artifact.FaultMalformed, Detail: "d"}}},
		{"engine", &engine.UnavailableError{Host: "unix:///var/run/docker.sock", Err: errors.New("refused")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt.Fn = func(context.Context, []byte) ([]byte, error) { return nil, tt.err }
			defer func() { rt.Fn = nil }()
			_, err := ex.Execute(ctx, path, map[string]any{})
			want := tt.want
			if want == nil {
				want = tt.err
			}
			if !reflect.DeepEqual(err, want) {
				t.Fatalf("got  %#v\nwant %#v", err, want)
			}
			target := reflect.New(reflect.TypeOf(want))
			if !errors.As(err, target.Interface()) {
				t.Fatalf("errors.As to %T failed", want)
			}
		})
	}
	t.Run("closed", func(t *testing.T) {
		rt.Fn = func(context.Context, []byte) ([]byte, error) { return nil, runtime.ErrClosed }
		defer func() { rt.Fn = nil }()
		if _, err := ex.Execute(ctx, path, map[string]any{}); !errors.Is(err, runtime.ErrClosed) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := ex.Execute(ctx, filepath.Join(t.TempDir(), "nope.ociapp"), map[string]any{})
		var ae *runtime.ArtifactError
		if !errors.As(err, &ae) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := ex.Execute(ctx, t.TempDir(), map[string]any{})
		var ae *runtime.ArtifactError
		if !errors.As(err, &ae) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("invalid artifact", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.ociapp")
		if err := os.WriteFile(bad, []byte("not a tar"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ex.Execute(ctx, bad, map[string]any{})
		var ae *runtime.ArtifactError
		var fe *artifact.Error
		if !errors.As(err, &ae) || ae.Path != bad || !errors.As(err, &fe) || fe.Path != bad {
			t.Fatalf("got %#v", err)
		}
	})
	t.Run("unencodable request", func(t *testing.T) {
		var pe *protocol.PayloadError
		if _, err := ex.Execute(ctx, path, map[string]any{"c": make(chan int)}); !errors.As(err, &pe) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestContextEnds(t *testing.T) {
	rt := &daemontest.Runner{}
	s := serve(t, newDaemon(t, rt))
	ex := s.executor(t)
	path := smallArtifact(t, "a")
	if _, err := ex.Execute(context.Background(), path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	rt.Fn = func(ctx context.Context, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := ex.Execute(ctx, path, map[string]any{})
	var ue *remote.UnavailableError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ue) {
		t.Fatalf("got %v", err)
	}
}

func TestAuth(t *testing.T) {
	s := serve(t, newDaemon(t, &daemontest.Runner{}, daemon.WithToken("tok")))
	path := smallArtifact(t, "a")
	ctx := context.Background()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.executor(t, remote.WithTokenFile(tokenFile)).Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	for _, ex := range []*remote.Executor{s.executor(t), s.executor(t, remote.WithToken("nope"))} {
		_, err := ex.Execute(ctx, path, map[string]any{})
		var re *remote.Error
		if !errors.As(err, &re) || re.Code != api.CodeUnauthorized || re.Status != http.StatusUnauthorized {
			t.Fatalf("got %#v", err)
		}
	}
}

func TestUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path := smallArtifact(t, "a")
	for _, url := range []string{"unix://" + filepath.Join(t.TempDir(), "none.sock"), "tcp://" + addr} {
		ex, err := remote.New(url)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ex.Execute(context.Background(), path, map[string]any{})
		var ue *remote.UnavailableError
		if !errors.As(err, &ue) || ue.URL != url {
			t.Fatalf("%s: got %#v", url, err)
		}
		if err := ex.Health(context.Background()); !errors.As(err, &ue) {
			t.Fatalf("%s: health: %v", url, err)
		}
		ex.Close()
	}
}

func TestForeignErrorBody(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return // "present"
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>proxy error</html>"))
	}))
	_, err := s.executor(t).Execute(context.Background(), smallArtifact(t, "a"), map[string]any{})
	var re *remote.Error
	if !errors.As(err, &re) || re.Status != http.StatusBadGateway || !strings.Contains(re.Message, "proxy error") {
		t.Fatalf("got %#v", err)
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	for _, tt := range []struct {
		url  string
		opts []remote.Option
	}{
		{"unix://", nil},
		{"ftp://host:1", nil},
		{"http://", nil},
		{"http://host:1/prefix", nil},
		{"unix:///x.sock", []remote.Option{remote.WithToken("")}},
		{"unix:///x.sock", []remote.Option{remote.WithTokenFile(filepath.Join(dir, "missing"))}},
		{"unix:///x.sock", []remote.Option{remote.WithTokenFile(empty)}},
		{"unix:///x.sock", []remote.Option{remote.WithCAFile(empty)}},
		{"unix:///x.sock", []remote.Option{remote.WithLogger(nil)}},
	} {
		if _, err := remote.New(tt.url, tt.opts...); err == nil {
			t.Errorf("New(%q) accepted", tt.url)
		}
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile := testtls.SelfSigned(t, t.TempDir(), net.IPv4(127, 0, 0, 1))
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	store, err := daemon.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(&daemontest.Runner{}, store, daemon.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := daemon.Listen("tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	url := "https://" + ln.Addr().String()
	path := smallArtifact(t, "a")

	ex, err := remote.New(url, remote.WithToken("tok"), remote.WithCAFile(certFile))
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	if _, err := ex.Execute(ctx, path, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	untrusted, err := remote.New(url, remote.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	var ue *remote.UnavailableError
	var unknownCA x509.UnknownAuthorityError
	if _, err := untrusted.Execute(ctx, path, map[string]any{}); !errors.As(err, &ue) || !errors.As(err, &unknownCA) {
		t.Fatalf("got %#v", err)
	}
}

// TestUploaderCanceled checks that a caller waiting for another's upload
// does not fail because that other caller gave up.
func TestUploaderCanceled(t *testing.T) {
	d := newDaemon(t, &daemontest.Runner{})
	putStarted, release := make(chan struct{}, 1), make(chan struct{})
	var gate atomic.Bool
	gate.Store(true)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && gate.Swap(false) {
			putStarted <- struct{}{}
			<-release // hold the first upload until its caller gives up
			return
		}
		d.ServeHTTP(w, r)
	})
	s := serve(t, h)
	ex := s.executor(t)
	path := smallArtifact(t, "a")

	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := ex.Execute(ctx1, path, map[string]any{})
		first <- err
	}()
	<-putStarted
	second := make(chan error, 1)
	go func() {
		_, err := ex.Execute(context.Background(), path, map[string]any{"n": 2})
		second <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the second caller wait on the first upload
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first: %v", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("second: %v", err)
	}
}

// TestArtifactNotFoundTwice checks that a daemon that keeps losing the
// artifact gets one more upload, then the caller an artifact error.
func TestArtifactNotFoundTwice(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return // "present"
		}
		w.Header().Set("Content-Type", api.MediaJSON)
		w.WriteHeader(http.StatusNotFound)
		w.Write((&api.Error{Code: api.CodeArtifactNotFound, Message: "gone"}).Encode(api.MediaJSON))
	}))
	path := smallArtifact(t, "a")
	_, err := s.executor(t).Execute(context.Background(), path, map[string]any{})
	var ae *runtime.ArtifactError
	var re *remote.Error
	if !errors.As(err, &ae) || ae.Path != path || !errors.As(err, &re) || re.Code != api.CodeArtifactNotFound {
		t.Fatalf("got %#v", err)
	}
	if s.count(http.MethodPost) != 2 || s.count(http.MethodHead) != 2 {
		t.Fatalf("requests by method: %v", s.counts)
	}
}
