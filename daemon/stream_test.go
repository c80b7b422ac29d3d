package daemon_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// rawMux is a client of the execute channel speaking frames directly.
type rawMux struct {
	conn     net.Conn
	br       *bufio.Reader
	features string
}

func dialMux(t *testing.T, sock string) *rawMux {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET "+api.MuxPath+" HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: "+api.MuxProtocol+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return &rawMux{conn: conn, br: br, features: resp.Header.Get(api.MuxFeaturesHeader)}
}

func (c *rawMux) send(t *testing.T, req api.MuxRequest) {
	t.Helper()
	if _, err := c.conn.Write(api.AppendMuxRequest(nil, req)); err != nil {
		t.Fatal(err)
	}
}

func (c *rawMux) recv(t *testing.T) api.MuxResponse {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := protocol.ReadFrame(c.br, 32<<20)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	resp, err := api.DecodeMuxResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// wantItems receives n items, which must be those numbered from first on.
func (c *rawMux) wantItems(t *testing.T, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		if resp := c.recv(t); resp.Item == nil || itemIndex(t, resp.Item) != i {
			t.Fatalf("item %d: %+v", i, resp)
		}
	}
}

// itemIndex decodes the "i" of an item.
func itemIndex(t *testing.T, item []byte) int {
	t.Helper()
	m, err := runtime.DecodeResponse("", item)
	if err != nil {
		t.Fatal(err)
	}
	return int(daemontest.Int(t, m["i"]))
}

// streamDaemon serves a daemon whose runner streams with p, with an
// artifact uploaded; it returns the daemon and the artifact's digest.
func streamDaemon(t *testing.T, p *daemontest.Producer) (*testDaemon, string) {
	t.Helper()
	rt := newStreamRunner(p)
	d := startServer(t, rt)
	path, _, _ := smallArtifact(t, t.TempDir())
	return d, d.upload(t, path)
}

func wantMuxError(t *testing.T, resp api.MuxResponse, id uint64, code api.Code) *api.Error {
	t.Helper()
	if resp.ID != id || resp.Error == nil {
		t.Fatalf("got %+v, want error %s for request %d", resp, code, id)
	}
	e, err := api.DecodeError(api.MediaMsgpack, resp.Error)
	if err != nil || e.Code != code {
		t.Fatalf("error %+v %v, want %s", e, err, code)
	}
	return e
}

// TestMuxStreamItems: 10,000 items arrive in order under credit granted
// back in half windows, then the end; the channel advertises streams.
func TestMuxStreamItems(t *testing.T) {
	const n, window = 10_000, 16
	p := daemontest.NewProducer(n, 0, nil)
	d, digest := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	if !strings.Contains(c.features, api.MuxFeatureStream) || !strings.Contains(c.features, api.MuxFeatureCancel) {
		t.Fatalf("features %q", c.features)
	}
	c.send(t, api.MuxRequest{ID: 7, Digest: digest, Payload: []byte{0x80}, Stream: window})
	for i := range n {
		resp := c.recv(t)
		if resp.ID != 7 || resp.Item == nil {
			t.Fatalf("frame %d: %+v", i, resp)
		}
		if got := itemIndex(t, resp.Item); got != i {
			t.Fatalf("item %d has index %d", i, got)
		}
		if (i+1)%(window/2) == 0 {
			c.send(t, api.MuxRequest{ID: 7, Credit: window / 2})
		}
	}
	if resp := c.recv(t); resp.ID != 7 || !resp.End {
		t.Fatalf("after the items: %+v", resp)
	}
	p.WaitStopped(t)
	if got := d.metricValue(t, `ociapp_daemon_http_requests_total{route="mux_stream",code="200"}`); got != 1 {
		t.Fatalf("mux_stream 200 counted %d times", got)
	}
}

// TestMuxStreamCredit: a client that stops granting credit holds the
// producer: the daemon takes at most one item beyond the credit.
func TestMuxStreamCredit(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	d, digest := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	c.send(t, api.MuxRequest{ID: 1, Digest: digest, Payload: []byte{0x80}, Stream: 5})
	c.wantItems(t, 0, 5)
	p.WaitPulled(t, 6)
	c.send(t, api.MuxRequest{ID: 1, Credit: 3})
	c.wantItems(t, 5, 3)
	p.WaitPulled(t, 9)
	// A credit for another id is ignored; an execute on the channel is
	// answered with no item beyond the credit before it.
	c.send(t, api.MuxRequest{ID: 99, Credit: 100})
	c.send(t, api.MuxRequest{ID: 2, Digest: digest, Payload: []byte{0x80}})
	if resp := c.recv(t); resp.ID != 2 || resp.Payload == nil {
		t.Fatalf("the execute behind the stream: %+v", resp)
	}
	if got := p.Pulled(); got != 9 {
		t.Fatalf("the producer yielded %d items for a credit of 8", got)
	}
	c.send(t, api.MuxRequest{ID: 1, Cancel: true})
	p.WaitStopped(t)
}

// TestMuxStreamError: a stream that fails after items ends with the error
// answer, after its items.
func TestMuxStreamError(t *testing.T) {
	p := daemontest.NewProducer(3, 0, &runtime.AppError{Type: "Boom", Message: "it broke"})
	d, digest := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	c.send(t, api.MuxRequest{ID: 4, Digest: digest, Payload: []byte{0x80}, Stream: 16})
	c.wantItems(t, 0, 3)
	e := wantMuxError(t, c.recv(t), 4, api.CodeAppError)
	if e.ErrorType != "Boom" || e.Message != "it broke" {
		t.Fatalf("error %+v", e)
	}
	if got := d.metricValue(t, `ociapp_daemon_http_requests_total{route="mux_stream",code="422"}`); got != 1 {
		t.Fatalf("mux_stream 422 counted %d times", got)
	}
}

// TestMuxStreamCancel: a cancel frame, and the channel closing, stop the
// producer; the channel goes on after a cancel.
func TestMuxStreamCancel(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	d, digest := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	c.send(t, api.MuxRequest{ID: 1, Digest: digest, Payload: []byte{0x80}, Stream: 2})
	c.recv(t)
	c.recv(t)
	c.send(t, api.MuxRequest{ID: 1, Cancel: true})
	p.WaitStopped(t)
	c.send(t, api.MuxRequest{ID: 2, Digest: digest, Payload: []byte{0x80}})
	if resp := c.recv(t); resp.ID != 2 || resp.Payload == nil {
		t.Fatalf("after the cancel: %+v", resp)
	}

	p2 := daemontest.NewProducer(-1, 0, nil)
	d2, digest2 := streamDaemon(t, p2)
	c2 := dialMux(t, d2.sock)
	c2.send(t, api.MuxRequest{ID: 1, Digest: digest2, Payload: []byte{0x80}, Stream: 1})
	c2.recv(t)
	c2.conn.Close()
	p2.WaitStopped(t)
}

// TestMuxStreamDrain: a stream in progress when the daemon drains ends
// with closed, and its producer stops.
func TestMuxStreamDrain(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	rt := newStreamRunner(p)
	d, stop := startServerStop(t, rt)
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)
	c := dialMux(t, d.sock)
	c.send(t, api.MuxRequest{ID: 3, Digest: digest, Payload: []byte{0x80}, Stream: 1})
	c.recv(t)
	done := make(chan error, 1)
	go func() { done <- stop() }()
	wantMuxError(t, c.recv(t), 3, api.CodeClosed)
	p.WaitStopped(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMuxStreamRefused: a stream of 0 is bad_request by its id, and a
// stream for an unknown artifact its error, counted as streams.
func TestMuxStreamRefused(t *testing.T) {
	p := daemontest.NewProducer(1, 0, nil)
	d, _ := streamDaemon(t, p)
	c := dialMux(t, d.sock)
	body := api.AppendMuxRequest(nil, api.MuxRequest{ID: 5, Digest: "sha256:x", Payload: []byte{0x80}})
	body[4]++ // one more key
	body = append(body, 0xa6, 's', 't', 'r', 'e', 'a', 'm', 0x00)
	body[3] += 8
	if _, err := c.conn.Write(body); err != nil {
		t.Fatal(err)
	}
	wantMuxError(t, c.recv(t), 5, api.CodeBadRequest)
	unknown := "sha256:" + strings.Repeat("0", 64)
	c.send(t, api.MuxRequest{ID: 6, Digest: unknown, Payload: []byte{0x80}, Stream: 4})
	wantMuxError(t, c.recv(t), 6, api.CodeArtifactNotFound)
	if got := d.metricValue(t, `ociapp_daemon_http_requests_total{route="mux_stream",code="404"}`); got != 1 {
		t.Fatalf("mux_stream 404 counted %d times", got)
	}
}

// newStreamRunner is a fake runner that streams with p.
func newStreamRunner(p *daemontest.Producer) *daemontest.Runner {
	return &daemontest.Runner{StreamFn: p.Stream}
}

// streamLines posts a stream request and returns the response and its
// lines.
func (d *testDaemon) streamLines(t *testing.T, path, body string, headers ...string) (*http.Response, []string) {
	t.Helper()
	resp, b := d.do(t, http.MethodPost, path, strings.NewReader(body), headers...)
	return resp, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// TestHTTPStream: items as NDJSON lines then the end, in JSON and from a
// msgpack body, by digest and by path; an error after items as its line;
// an error before the first as an ordinary error response.
func TestHTTPStream(t *testing.T) {
	p := daemontest.NewProducer(3, 0, nil)
	d, digest := streamDaemon(t, p)
	resp, lines := d.streamLines(t, api.StreamPath(digest), `{"n": 3}`, "Content-Type", api.MediaJSON)
	want := []string{`{"item": {"i":0,"pad":""}}`, `{"item": {"i":1,"pad":""}}`, `{"item": {"i":2,"pad":""}}`, `{"end": true}`}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaNDJSON || strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s %q:\n%s\nwant\n%s", resp.Status, resp.Header.Get("Content-Type"), strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got := d.metricValue(t, `ociapp_daemon_http_requests_total{route="stream",code="200"}`); got != 1 {
		t.Fatalf("stream 200 counted %d times", got)
	}

	failing := daemontest.NewProducer(2, 0, &runtime.AppError{Type: "Boom", Message: "it broke"})
	d2, digest2 := streamDaemon(t, failing)
	_, lines = d2.streamLines(t, api.StreamPath(digest2), "\x80", "Content-Type", api.MediaMsgpack)
	if len(lines) != 3 || !strings.HasPrefix(lines[2], `{"error": {`) || !strings.Contains(lines[2], `"code":"app_error"`) || !strings.Contains(lines[2], `"error_type":"Boom"`) {
		t.Fatalf("a failing stream: %q", lines)
	}

	before := daemontest.NewProducer(0, 0, &runtime.AppError{Type: "Early", Message: "no items"})
	d3, digest3 := streamDaemon(t, before)
	resp, body := d3.do(t, http.MethodPost, api.StreamPath(digest3), strings.NewReader("{}"))
	if e := wantError(t, resp, body, api.CodeAppError); e.ErrorType != "Early" {
		t.Fatalf("error %+v", e)
	}

	// Refusals are those of execute.
	resp, body = d.do(t, http.MethodPost, api.StreamPath("sha256:"+strings.Repeat("0", 64)), strings.NewReader("{}"))
	wantError(t, resp, body, api.CodeArtifactNotFound)
	resp, body = d.do(t, http.MethodPost, api.StreamPath(digest), strings.NewReader("[1]"))
	wantError(t, resp, body, api.CodeBadRequest)
	resp, body = d.do(t, http.MethodPost, api.StreamPath(digest), strings.NewReader("{}"), "Content-Type", "text/plain")
	wantError(t, resp, body, api.CodeUnsupportedMedia)
	resp, body = d.do(t, http.MethodGet, api.StreamPath(digest), nil)
	wantError(t, resp, body, api.CodeMethodNotAllowed)
	if allow := resp.Header.Get("Allow"); allow != "POST" {
		t.Fatalf("Allow: %q", allow)
	}
}

// TestHTTPStreamLocal: the local stream route runs the caller's file where
// it lies, with the local execute route's checks.
func TestHTTPStreamLocal(t *testing.T) {
	p := daemontest.NewProducer(1, 0, nil)
	rt := newStreamRunner(p)
	d := startServer(t, rt)
	path, _, _ := smallArtifact(t, t.TempDir())
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	url := api.LocalStreamPath + "?" + neturl.Values{"path": {path}, "file": {api.FileIdentity(fi)}}.Encode()
	resp, lines := d.streamLines(t, url, "{}")
	if resp.StatusCode != http.StatusOK || len(lines) != 2 || lines[1] != `{"end": true}` || rt.LastPath() != path {
		t.Fatalf("%s %q, ran %q", resp.Status, lines, rt.LastPath())
	}
	resp, body := d.do(t, http.MethodPost, api.LocalStreamPath+"?"+neturl.Values{"path": {path}, "file": {"1:2:3:4"}}.Encode(), strings.NewReader("{}"))
	wantError(t, resp, body, api.CodeArtifactNotFound)
}

// TestHTTPStreamStalledReader: a client that stops reading holds the
// producer within the connection's buffers, and one that disconnects
// cancels it.
func TestHTTPStreamStalledReader(t *testing.T) {
	const size = 1 << 20
	p := daemontest.NewProducer(-1, size, nil)
	d, digest := streamDaemon(t, p)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://d"+api.StreamPath(digest), strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for range 2 {
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, `{"item": {"i":`) {
			t.Fatalf("%.40q %v", line, err)
		}
	}
	// The producer settles once the buffers are full: poll until its
	// count stays put.
	last, still := p.Pulled(), 0
	for deadline := time.Now().Add(20 * time.Second); still < 100 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
		if n := p.Pulled(); n != last {
			last, still = n, 0
		} else {
			still++
		}
	}
	if held := last * size; still < 100 || held > 16<<20 {
		t.Fatalf("a stalled reader let the producer yield %d items of %d bytes", last, size)
	}
	t.Logf("a stalled reader held the producer at %d items of 1 MiB", last)
	cancel()
	p.WaitStopped(t)
}

// TestHTTPStreamDrain: an HTTP stream in progress when the daemon drains
// ends with a closed error line, and its producer stops.
func TestHTTPStreamDrain(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	d, stop := startServerStop(t, newStreamRunner(p))
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)
	resp, err := d.client.Post("http://d"+api.StreamPath(digest), api.MediaJSON, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, `{"item": `) {
		t.Fatalf("%q %v", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- stop() }()
	// The reader takes items until the last line, the error.
	var last string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		last = line
	}
	if !strings.HasPrefix(last, `{"error": {`) || !strings.Contains(last, `"code":"closed"`) {
		t.Fatalf("the last line %q", last)
	}
	p.WaitStopped(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
