package daemon_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
)

// TestExecuteLocal: a caller on the Unix socket names its file by path;
// the daemon runs it where it lies, stores nothing, and refuses paths it
// cannot match to the caller's file.
func TestExecuteLocal(t *testing.T) {
	rt := &daemontest.Runner{}
	d := startServer(t, rt, daemon.WithToken("tok"))
	dir := t.TempDir()
	path, _, _ := smallArtifact(t, dir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := protocol.EncodePayload(map[string]any{"value": []byte{0xff}})
	auth := []string{"Authorization", "Bearer tok", "Content-Type", api.MediaMsgpack}

	resp, body := d.do(t, http.MethodPost, api.LocalExecuteURL(path, api.FileIdentity(fi)), bytes.NewReader(payload), auth...)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, payload) || rt.LastPath() != path {
		t.Fatalf("%s % x; the runtime ran %q", resp.Status, body, rt.LastPath())
	}
	if entries, _ := os.ReadDir(filepath.Join(d.storeDir, "sha256")); len(entries) != 0 {
		t.Fatalf("the store holds %d files after an execute by path", len(entries))
	}

	other := filepath.Join(dir, "other.ociapp")
	if err := os.WriteFile(other, readFile(t, path), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		query string
		code  api.Code
		says  string
	}{
		{"relative path", "?" + url.Values{"path": {"x.ociapp"}, "file": {api.FileIdentity(fi)}}.Encode(), api.CodeBadRequest, "absolute"},
		{"unclean path", "?" + url.Values{"path": {dir + "/../x.ociapp"}, "file": {api.FileIdentity(fi)}}.Encode(), api.CodeBadRequest, "absolute clean"},
		{"no identity", "?" + url.Values{"path": {path}}.Encode(), api.CodeBadRequest, "and file, the file's identity"},
		{"missing file", "?" + url.Values{"path": {filepath.Join(dir, "gone.ociapp")}, "file": {api.FileIdentity(fi)}}.Encode(), api.CodeArtifactNotFound, "no file"},
		{"another file at the path", "?" + url.Values{"path": {other}, "file": {api.FileIdentity(fi)}}.Encode(), api.CodeArtifactNotFound, "another"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := d.do(t, http.MethodPost, api.LocalExecutePath+tt.query, bytes.NewReader(payload), auth...)
			if e := wantError(t, resp, body, tt.code); !strings.Contains(e.Message, tt.says) {
				t.Fatalf("message %q does not say %q", e.Message, tt.says)
			}
		})
	}
	t.Run("token required", func(t *testing.T) {
		resp, body := d.do(t, http.MethodPost, api.LocalExecuteURL(path, api.FileIdentity(fi)), bytes.NewReader(payload), "Content-Type", api.MediaMsgpack)
		wantError(t, resp, body, api.CodeUnauthorized)
	})
}

// TestExecuteLocalRefusedOnTCP: a caller on TCP (another host, perhaps)
// cannot make the daemon open a path.
func TestExecuteLocalRefusedOnTCP(t *testing.T) {
	rt := &daemontest.Runner{}
	srv, err := daemon.New(rt, nil, daemon.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := daemon.Listen("tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	path, _, _ := smallArtifact(t, t.TempDir())
	fi, _ := os.Stat(path)
	payload, _ := protocol.EncodePayload(map[string]any{"v": 1})
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+api.LocalExecuteURL(path, api.FileIdentity(fi)), bytes.NewReader(payload))
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Content-Type", api.MediaMsgpack)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	e := wantError(t, resp, body.Bytes(), api.CodeNotFound)
	if !strings.Contains(e.Message, "Unix socket") || rt.LastPath() != "" {
		t.Fatalf("message %q; the runtime ran %q", e.Message, rt.LastPath())
	}
}
