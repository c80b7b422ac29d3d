package remote_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

func indexOf(t *testing.T, item map[string]any) int64 {
	t.Helper()
	return daemontest.Int(t, item["i"])
}

func streamExecutor(t *testing.T, p *daemontest.Producer, opts ...remote.Option) (*remote.Executor, *daemontest.Runner) {
	t.Helper()
	rt := &daemontest.Runner{StreamFn: p.Stream}
	sock, _ := muxDaemon(t, rt)
	ex, err := remote.New("unix://"+sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex, rt
}

// TestStream: items arrive in order, by path and by upload, many windows
// long; an error after items comes after them, typed.
func TestStream(t *testing.T) {
	for name, opts := range map[string][]remote.Option{"by path": nil, "uploaded": {remote.WithUploads()}} {
		t.Run(name, func(t *testing.T) {
			p := daemontest.NewProducer(10_000, 0, nil)
			ex, rt := streamExecutor(t, p, opts...)
			path := smallArtifact(t, "s")
			var n int64
			for item, err := range ex.Stream(t.Context(), path, map[string]any{"go": true}) {
				if err != nil {
					t.Fatal(err)
				}
				if got := indexOf(t, item); got != n {
					t.Fatalf("item %d has index %d", n, got)
				}
				n++
			}
			if n != 10_000 {
				t.Fatalf("%d items", n)
			}
			abs, _ := filepath.Abs(path)
			if ran := rt.LastPath(); (name == "by path") != (ran == abs) {
				t.Fatalf("the daemon ran %q for %q", ran, abs)
			}
		})
	}

	p := daemontest.NewProducer(3, 0, &runtime.AppError{Type: "Boom", Message: "broke"})
	ex, _ := streamExecutor(t, p)
	var n int
	for item, err := range ex.Stream(t.Context(), smallArtifact(t, "e"), map[string]any{}) {
		if n < 3 && (err != nil || indexOf(t, item) != int64(n)) {
			t.Fatalf("item %d: %v %v", n, item, err)
		}
		var appErr *runtime.AppError
		if n == 3 && (!errors.As(err, &appErr) || appErr.Type != "Boom") {
			t.Fatalf("after the items: %v", err)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("%d results", n)
	}
}

// TestStreamFlowControl: a consumer that stops taking items holds the
// producer at its window and the daemon's one item; breaking out cancels
// it.
func TestStreamFlowControl(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	ex, _ := streamExecutor(t, p)
	for range ex.StreamPayload(t.Context(), smallArtifact(t, "f"), []byte{0x80}) {
		want := int64(protocol.DefaultStreamWindow + 1)
		p.WaitPulled(t, want)
		// A health check's round trip later, no more.
		if err := ex.Health(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := p.Pulled(); got != want {
			t.Fatalf("a stalled consumer let the producer yield %d items, want %d", got, want)
		}
		break
	}
	p.WaitStopped(t)
}

// TestStreamContextEnds: a context that ends mid-stream ends it with an
// error wrapping the context's, and cancels the producer.
func TestStreamContextEnds(t *testing.T) {
	p := daemontest.NewProducer(-1, 0, nil)
	ex, _ := streamExecutor(t, p)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	var last error
	for _, err := range ex.StreamPayload(ctx, smallArtifact(t, "c"), []byte{0x80}) {
		if n++; n == 5 {
			cancel()
		}
		last = err
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("the stream ended with %v", last)
	}
	p.WaitStopped(t)
}

// TestStreamWithoutChannelStreams: without streams on the channel (HTTP
// executes), the execute's response is the only item.
func TestStreamWithoutChannelStreams(t *testing.T) {
	p := daemontest.NewProducer(5, 0, nil)
	ex, _ := streamExecutor(t, p, remote.WithHTTPExecute())
	var items []map[string]any
	for item, err := range ex.Stream(t.Context(), smallArtifact(t, "h"), map[string]any{"v": "x"}) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	if len(items) != 1 || items[0]["v"] != "x" {
		t.Fatalf("items %v, want the echo", items)
	}

	// A channel without the stream feature: the request goes as an
	// execute on it.
	var sawStream atomic.Bool
	sock := fakeMuxDaemon(t, "cancel", func(req api.MuxRequest, w io.Writer) {
		if req.Cancel || req.Credit > 0 {
			return
		}
		sawStream.Store(sawStream.Load() || req.Stream > 0)
		w.Write(api.AppendMuxResponse(nil, api.MuxResponse{ID: req.ID, Payload: req.Payload}))
	})
	ex2, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex2.Close()
	items = nil
	for item, err := range ex2.Stream(t.Context(), smallArtifact(t, "g"), map[string]any{"v": "y"}) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	if len(items) != 1 || items[0]["v"] != "y" || sawStream.Load() {
		t.Fatalf("items %v (a stream request sent: %v)", items, sawStream.Load())
	}
}

// TestStreamBeyondCredit: a daemon that sends an item beyond the credit
// breaks the protocol: the stream ends with *remote.UnavailableError
// after the items within the credit.
func TestStreamBeyondCredit(t *testing.T) {
	// One item more than the credit granted, whenever credit comes.
	sock := fakeMuxDaemon(t, "cancel, stream", func(req api.MuxRequest, w io.Writer) {
		n := req.Credit
		if req.Stream > 0 {
			n = req.Stream + 1
		}
		var frames []byte
		for range n {
			frames = api.AppendMuxResponse(frames, api.MuxResponse{ID: req.ID, Item: []byte{0x80}})
		}
		w.Write(frames)
	})
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	n := 0
	var last error
	for _, err := range ex.StreamPayload(t.Context(), smallArtifact(t, "b"), []byte{0x80}) {
		n++
		last = err
	}
	var unavailable *remote.UnavailableError
	if !errors.As(last, &unavailable) || !strings.Contains(last.Error(), "beyond the credit") {
		t.Fatalf("%d results, the last %v", n, last)
	}
}

// fakeMuxDaemon serves execute channels on a Unix socket, answering the
// upgrade with features and each frame with answer; other routes are
// 404.
func fakeMuxDaemon(t *testing.T, features string, answer func(api.MuxRequest, io.Writer)) string {
	t.Helper()
	sock := filepath.Join(testenv.ShortTempDir(t), "f.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			serveFakeMux(conn, features, answer)
		}
	}()
	return sock
}

// serveFakeMux serves one connection, until it closes.
func serveFakeMux(conn net.Conn, features string, answer func(api.MuxRequest, io.Writer)) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if req.URL.Path != api.MuxPath {
			io.WriteString(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			continue
		}
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+api.MuxProtocol+"\r\n"+api.MuxFeaturesHeader+": "+features+"\r\n\r\n")
		for {
			body, err := protocol.ReadFrame(br, 1<<20)
			if err != nil {
				return
			}
			if req, err := api.DecodeMuxRequest(body); err == nil {
				answer(req, conn)
			}
		}
	}
}
