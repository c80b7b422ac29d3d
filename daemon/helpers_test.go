package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
)

// testDaemon is a daemon.Server serving a Unix socket.
type testDaemon struct {
	srv      *daemon.Server
	storeDir string
	sock     string
	client   *http.Client
}

func startServer(t *testing.T, rt daemon.Runner, opts ...daemon.Option) *testDaemon {
	t.Helper()
	d, _ := startServerStop(t, rt, opts...)
	return d
}

// startServerStop is startServer, also returning stop, which drains the
// daemon.
func startServerStop(t *testing.T, rt daemon.Runner, opts ...daemon.Option) (*testDaemon, func() error) {
	t.Helper()
	dir := testenv.ShortTempDir(t)
	storeDir := filepath.Join(dir, "store")
	store, err := daemon.OpenStore(storeDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sock, stop := daemontest.Serve(t, srv, dir)
	d := &testDaemon{srv: srv, storeDir: storeDir, sock: sock, client: unixClient(sock)}
	t.Cleanup(d.client.CloseIdleConnections)
	return d, stop
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// do sends one request; headers come in name, value pairs.
func (d *testDaemon) do(t *testing.T, method, path string, body io.Reader, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://daemon"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// wantError checks an error response's status, code header and body.
func wantError(t *testing.T, resp *http.Response, body []byte, code api.Code) *api.Error {
	t.Helper()
	if resp.StatusCode != code.Status() {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, code.Status(), body)
	}
	if got := resp.Header.Get(api.HeaderErrorCode); got != string(code) {
		t.Fatalf("%s header %q, want %q", api.HeaderErrorCode, got, code)
	}
	media := resp.Header.Get("Content-Type")
	if len(body) == 0 {
		return &api.Error{Code: code}
	}
	e, err := api.DecodeError(media, body)
	if err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Code != code {
		t.Fatalf("code %q, want %q; body %s", e.Code, code, body)
	}
	return e
}

// smallArtifact writes a valid artifact holding a small random image and
// returns its path, its upload digest and its artifact digest.
func smallArtifact(t testing.TB, dir string) (path, digest, artifactDigest string) {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "small-0.1.0.ociapp")
	if err := artifact.WriteFile(context.Background(), path, img, artifact.Metadata{Name: "small", Version: "0.1.0"}); err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return path, fileDigest(t, path), a.Digest.String()
}

func fileDigest(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytesDigest(b)
}

func bytesDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upload PUTs an artifact file under its digest and checks it was stored.
func (d *testDaemon) upload(t *testing.T, path string) string {
	t.Helper()
	data := readFile(t, path)
	digest := bytesDigest(data)
	resp, body := d.do(t, http.MethodPut, api.ArtifactPath(digest), bytes.NewReader(data))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %s %s", resp.Status, body)
	}
	return digest
}

// chunked hides a reader's length, so the client sends it chunked.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }
