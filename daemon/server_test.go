package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestUpload(t *testing.T) {
	d := startServer(t, &daemontest.Runner{})
	path, digest, artDigest := smallArtifact(t, t.TempDir())
	data := readFile(t, path)

	resp, body := d.do(t, http.MethodHead, api.ArtifactPath(digest), nil)
	wantError(t, resp, body, api.CodeArtifactNotFound)

	resp, body = d.do(t, http.MethodPut, api.ArtifactPath(digest), bytes.NewReader(data))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %s %s", resp.Status, body)
	}
	var a api.Artifact
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	want := api.Artifact{Digest: digest, ArtifactDigest: artDigest, Name: "small", Version: "0.1.0", Size: int64(len(data))}
	if a != want {
		t.Fatalf("stored %+v, want %+v", a, want)
	}
	if h := resp.Header.Get(api.HeaderArtifactDigest); h != artDigest {
		t.Fatalf("%s: %q", api.HeaderArtifactDigest, h)
	}

	resp, _ = d.do(t, http.MethodHead, api.ArtifactPath(digest), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(api.HeaderArtifactDigest) != artDigest {
		t.Fatalf("HEAD after upload: %s %v", resp.Status, resp.Header)
	}
	// Present already: answered without reading the body, so not even a
	// wrong one matters.
	resp, body = d.do(t, http.MethodPut, api.ArtifactPath(digest), strings.NewReader("not read"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT again: %s %s", resp.Status, body)
	}
	resp, body = d.do(t, http.MethodGet, api.ArtifactsPath, nil)
	var list api.ArtifactList
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %s %s", resp.Status, body)
	}
	if !reflect.DeepEqual(list.Artifacts, []api.Artifact{want}) {
		t.Fatalf("list: %+v", list.Artifacts)
	}
}

func TestUploadRefused(t *testing.T) {
	d := startServer(t, &daemontest.Runner{})
	path, _, _ := smallArtifact(t, t.TempDir())
	data := readFile(t, path)
	garbage := []byte("this is not an artifact at all")
	truncated := data[:len(data)/2]

	tests := []struct {
		name   string
		digest string
		body   []byte
		code   api.Code
		fault  string
	}{
		{"digest mismatch", bytesDigest(garbage), data, api.CodeArtifactInvalid, "digest_mismatch"},
		{"not an artifact", bytesDigest(garbage), garbage, api.CodeArtifactInvalid, ""},
		{"truncated", bytesDigest(truncated), truncated, api.CodeArtifactInvalid, "truncated"},
		{"bad digest", "sha256:XYZ", data, api.CodeBadRequest, ""},
		{"other algorithm", "sha512:" + strings.Repeat("0", 64), data, api.CodeBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := d.do(t, http.MethodPut, api.ArtifactPath(tt.digest), bytes.NewReader(tt.body))
			e := wantError(t, resp, body, tt.code)
			if tt.code == api.CodeArtifactInvalid && e.Fault == "" {
				t.Fatalf("no fault in %s", body)
			}
			if tt.fault != "" && e.Fault != tt.fault {
				t.Fatalf("fault %q, want %q", e.Fault, tt.fault)
			}
		})
	}
	resp, body := d.do(t, http.MethodGet, api.ArtifactsPath, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"artifacts":[]`) {
		t.Fatalf("a refused upload was stored: %s", body)
	}
	entries, err := os.ReadDir(filepath.Join(d.storeDir, "sha256"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("store holds %v (%v)", entries, err)
	}
}

func TestStoreReopens(t *testing.T) {
	dir := t.TempDir()
	store, err := daemon.OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	path, digest, artDigest := smallArtifact(t, t.TempDir())
	if _, _, err := store.Put(context.Background(), digest, -1, bytes.NewReader(readFile(t, path))); err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "sha256")
	// What crashes leave: a partial upload, a file without a description,
	// a description without a file.
	for name, content := range map[string]string{
		"upload-123.tmp":                    "partial",
		strings.Repeat("a", 64) + ".ociapp": "unverified",
		strings.Repeat("b", 64) + ".json":   `{"digest":"sha256:` + strings.Repeat("b", 64) + `"}`,
	} {
		if err := os.WriteFile(filepath.Join(blobs, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store, err = daemon.OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{digest, artDigest} {
		a, file, ok := store.Lookup(d)
		if !ok || a.Digest != digest || a.ArtifactDigest != artDigest {
			t.Fatalf("Lookup(%s) after reopening: %+v %v", d, a, ok)
		}
		if _, err := artifact.Open(t.Context(), file); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	hexd := strings.TrimPrefix(digest, "sha256:")
	if want := []string{hexd + ".json", hexd + ".ociapp"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("store holds %v, want %v", names, want)
	}
}

func TestExecute(t *testing.T) {
	rt := &daemontest.Runner{}
	d := startServer(t, rt)
	path, _, artDigest := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)

	t.Run("json", func(t *testing.T) {
		var got map[string]any
		rt.Fn = func(_ context.Context, payload []byte) ([]byte, error) {
			var err error
			got, err = protocol.DecodePayload(payload)
			return payload, err
		}
		defer func() { rt.Fn = nil }()
		in := `{"i": 3, "f": 1.5, "s": "x", "big": 18446744073709551615, "l": [1, null]}`
		resp, body := d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(in), "Content-Type", "application/json; charset=utf-8")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaJSON {
			t.Fatalf("%s %s", resp.Status, body)
		}
		want := map[string]any{"i": int64(3), "f": 1.5, "s": "x", "big": uint64(18446744073709551615), "l": []any{int64(1), nil}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("the app got %#v", got)
		}
		// Converted as it streams: keys keep their order.
		if string(body) != `{"i":3,"f":1.5,"s":"x","big":18446744073709551615,"l":[1,null]}` {
			t.Fatalf("response %s", body)
		}
	})
	t.Run("msgpack passes through", func(t *testing.T) {
		payload, err := protocol.EncodePayload(map[string]any{"b": []byte{0, 1, 2}, "v": "x"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range []string{api.MediaMsgpack, "application/x-msgpack", "application/vnd.msgpack"} {
			resp, body := d.do(t, http.MethodPost, api.ExecutePath(digest), bytes.NewReader(payload), "Content-Type", ct)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaMsgpack || !bytes.Equal(body, payload) {
				t.Fatalf("%s: %s %q", ct, resp.Status, body)
			}
		}
	})
	t.Run("by artifact digest", func(t *testing.T) {
		resp, body := d.do(t, http.MethodPost, api.ExecutePath(artDigest), strings.NewReader(`{}`), "Content-Type", api.MediaJSON)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s", resp.Status, body)
		}
		if got := rt.LastPath(); filepath.Base(got) != strings.TrimPrefix(digest, "sha256:")+".ociapp" {
			t.Fatalf("the runtime ran %s", got)
		}
		if _, err := artifact.Open(t.Context(), rt.LastPath()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("response as JSON", func(t *testing.T) {
		rt.Fn = func(context.Context, []byte) ([]byte, error) {
			return protocol.Marshal(map[string]any{"bin": []byte("hi"), "m": map[any]any{int64(1): "x"}})
		}
		defer func() { rt.Fn = nil }()
		resp, body := d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{}`), "Content-Type", api.MediaJSON)
		if resp.StatusCode != http.StatusOK || string(body) != `{"bin":"aGk=","m":{"1":"x"}}` {
			t.Fatalf("%s %s", resp.Status, body)
		}
		rt.Fn = func(context.Context, []byte) ([]byte, error) { return []byte{0xc1}, nil }
		resp, body = d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{}`), "Content-Type", api.MediaJSON)
		wantError(t, resp, body, api.CodeInternal)
	})

	unknown := "sha256:" + strings.Repeat("0", 64)
	for _, tt := range []struct {
		name, digest, ct, body string
		code                   api.Code
	}{
		{"unknown digest json", unknown, api.MediaJSON, `{}`, api.CodeArtifactNotFound},
		{"unknown digest msgpack", unknown, api.MediaMsgpack, "\x80", api.CodeArtifactNotFound},
		{"bad digest", "latest", api.MediaJSON, `{}`, api.CodeBadRequest},
		{"text", digest, "text/plain", `{}`, api.CodeUnsupportedMedia},
		{"bad content type", digest, "application/", `{}`, api.CodeUnsupportedMedia},
		{"invalid json", digest, api.MediaJSON, `{"a": }`, api.CodeBadRequest},
		{"json array", digest, api.MediaJSON, `[1]`, api.CodeBadRequest},
		{"two values", digest, api.MediaJSON, `{} {}`, api.CodeBadRequest},
		{"trailing brace", digest, api.MediaJSON, `{}}`, api.CodeBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := d.do(t, http.MethodPost, api.ExecutePath(tt.digest), strings.NewReader(tt.body), "Content-Type", tt.ct)
			wantError(t, resp, body, tt.code)
			wantMedia := api.MediaJSON
			if tt.ct == api.MediaMsgpack {
				wantMedia = api.MediaMsgpack
			}
			if got := resp.Header.Get("Content-Type"); got != wantMedia {
				t.Fatalf("error body in %s, want %s", got, wantMedia)
			}
		})
	}
}

// TestExecuteErrors checks that every runtime error reaches the client with
// its code, status and fields, in the request's media type.
func TestExecuteErrors(t *testing.T) {
	rt := &daemontest.Runner{}
	d := startServer(t, rt)
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)

	tests := []struct {
		err   error
		code  api.Code
		check func(*api.Error) bool
	}{
		{&runtime.AppError{Type: "Boom", Message: "m", Details: map[string]any{"k": "v"}}, api.CodeAppError,
			func(e *api.Error) bool { return e.ErrorType == "Boom" && e.Message == "m" }},
		{&runtime.RequestTimeoutError{Artifact: "a", Timeout: 2 * time.Second}, api.CodeRequestTimeout,
			func(e *api.Error) bool { return e.Timeout == 2*time.Second }},
		{&runtime.StartupError{Artifact: "a", Reason: "r", Exited: true, ExitCode: 3, Logs: "l", RetryIn: 1500 * time.Millisecond}, api.CodeStartupFailed,
			func(e *api.Error) bool {
				return e.Exited && e.ExitCode == 3 && e.Logs == "l" && e.RetryIn == 1500*time.Millisecond
			}},
		{&runtime.WorkerCrashError{Artifact: "a", Reason: "r", Exited: true, ExitCode: 137, OOMKilled: true}, api.CodeWorkerCrashed,
			func(e *api.Error) bool { return e.OOMKilled && e.ExitCode == 137 }},
		{&runtime.OverloadedError{Artifact: "a", Queued: 9}, api.CodeOverloaded, func(e *api.Error) bool { return e.Queued == 9 }},
		{&runtime.ArtifactError{Path: "p", Err: &artifact.Error{Path: "p", Fault: artifact.FaultTruncated}}, api.CodeArtifactInvalid,
			func(e *api.Error) bool { return e.Fault == "truncated" }},
		{&engine.UnavailableError{Host: "unix:///x.sock", Err: errors.New("refused")}, api.CodeEngineUnavailable,
			func(e *api.Error) bool { return e.Host == "unix:///x.sock" && e.Cause == "refused" }},
		{runtime.ErrClosed, api.CodeClosed, nil},
		{errors.New("unexpected"), api.CodeInternal, nil},
	}
	for _, tt := range tests {
		for _, media := range []string{api.MediaJSON, api.MediaMsgpack} {
			t.Run(string(tt.code)+"/"+media, func(t *testing.T) {
				rt.Fn = func(context.Context, []byte) ([]byte, error) { return nil, tt.err }
				defer func() { rt.Fn = nil }()
				body := []byte(`{}`)
				if media == api.MediaMsgpack {
					body = []byte{0x80}
				}
				resp, b := d.do(t, http.MethodPost, api.ExecutePath(digest), bytes.NewReader(body), "Content-Type", media)
				if got := resp.Header.Get("Content-Type"); got != media {
					t.Fatalf("error body in %s", got)
				}
				e := wantError(t, resp, b, tt.code)
				if tt.check != nil && !tt.check(e) {
					t.Fatalf("fields lost: %#v", e)
				}
				switch tt.code {
				case api.CodeOverloaded:
					if resp.Header.Get("Retry-After") != "1" {
						t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
					}
				case api.CodeStartupFailed:
					if resp.Header.Get("Retry-After") != "2" {
						t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
					}
				}
			})
		}
	}
}

func TestAuth(t *testing.T) {
	const token = "s3cret-token"
	d := startServer(t, &daemontest.Runner{}, daemon.WithToken(token))
	path, _, _ := smallArtifact(t, t.TempDir())
	data := readFile(t, path)
	digest := bytesDigest(data)

	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
		for _, r := range []struct{ method, path string }{
			{http.MethodPut, api.ArtifactPath(digest)},
			{http.MethodHead, api.ArtifactPath(digest)},
			{http.MethodPost, api.ExecutePath(digest)},
			{http.MethodGet, api.PoolsPath},
			{http.MethodGet, api.ArtifactsPath},
			{http.MethodGet, api.MetricsPath},
		} {
			resp, body := d.do(t, r.method, r.path, bytes.NewReader(data), "Authorization", auth, "Content-Type", api.MediaJSON)
			wantError(t, resp, body, api.CodeUnauthorized)
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(d.storeDir, "sha256")); len(entries) != 0 {
		t.Fatalf("an unauthorized upload was stored: %v", entries)
	}
	// The health check needs no token: probes rarely carry one.
	if resp, body := d.do(t, http.MethodGet, api.HealthPath, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %s %s", resp.Status, body)
	}
	for _, auth := range []string{"Bearer " + token, "bearer  " + token + " "} {
		resp, body := d.do(t, http.MethodPut, api.ArtifactPath(digest), bytes.NewReader(data), "Authorization", auth)
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: %s %s", auth, resp.Status, body)
		}
		resp, body = d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{"a":1}`), "Authorization", auth, "Content-Type", api.MediaJSON)
		if resp.StatusCode != http.StatusOK || string(body) != `{"a":1}` {
			t.Fatalf("%q: %s %s", auth, resp.Status, body)
		}
	}
}

func TestBodyLimits(t *testing.T) {
	path, _, _ := smallArtifact(t, t.TempDir())
	data := readFile(t, path)
	digest := bytesDigest(data)
	rt := &daemontest.Runner{}
	d := startServer(t, rt, daemon.WithMaxArtifactSize(int64(len(data)-1)), daemon.WithMaxRequestSize(64))

	for name, body := range map[string]func() io.Reader{
		"declared": func() io.Reader { return bytes.NewReader(data) },
		"chunked":  func() io.Reader { return chunked{bytes.NewReader(data)} },
	} {
		t.Run("artifact "+name, func(t *testing.T) {
			resp, b := d.do(t, http.MethodPut, api.ArtifactPath(digest), body())
			e := wantError(t, resp, b, api.CodeBodyTooLarge)
			if e.Limit != int64(len(data)-1) {
				t.Fatalf("limit %d", e.Limit)
			}
		})
	}
	if resp, _ := d.do(t, http.MethodHead, api.ArtifactPath(digest), nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an oversized upload was stored: %s", resp.Status)
	}

	d2 := startServer(t, rt, daemon.WithMaxRequestSize(64))
	digest = d2.upload(t, path)
	big := `{"v": "` + strings.Repeat("x", 64) + `"}`
	for _, media := range []string{api.MediaJSON, api.MediaMsgpack} {
		resp, b := d2.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(big), "Content-Type", media)
		if e := wantError(t, resp, b, api.CodeBodyTooLarge); e.Limit != 64 {
			t.Fatalf("limit %d", e.Limit)
		}
		resp, b = d2.do(t, http.MethodPost, api.ExecutePath(digest), chunked{strings.NewReader(big)}, "Content-Type", media)
		wantError(t, resp, b, api.CodeBodyTooLarge)
	}
	// 60 bytes of JSON, but 9 bytes per float in msgpack.
	floats := `{"f":[` + strings.Repeat("1.5,", 13) + `1.5]}`
	resp, b := d2.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(floats), "Content-Type", api.MediaJSON)
	wantError(t, resp, b, api.CodeBodyTooLarge)
	resp, b = d2.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{"v": 1}`), "Content-Type", api.MediaJSON)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a small request was refused: %s %s", resp.Status, b)
	}
}

func TestRoutes(t *testing.T) {
	d := startServer(t, &daemontest.Runner{})
	digest := "sha256:" + strings.Repeat("1", 64)
	for _, tt := range []struct {
		method, path string
		code         api.Code
		allow        string
	}{
		{http.MethodGet, "/nope", api.CodeNotFound, ""},
		{http.MethodGet, "/v2/pools", api.CodeNotFound, ""},
		{http.MethodDelete, api.PoolsPath, api.CodeMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, api.ExecutePath(digest), api.CodeMethodNotAllowed, "POST"},
		{http.MethodPost, api.ArtifactPath(digest), api.CodeMethodNotAllowed, "GET, PUT, HEAD"},
		{http.MethodGet, api.ContainersPath, api.CodeNotFound, ""},
	} {
		resp, body := d.do(t, tt.method, tt.path, nil)
		wantError(t, resp, body, tt.code)
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
}

type fakeLister struct {
	labels map[string]string
}

func (f *fakeLister) ListContainers(_ context.Context, labels map[string]string) ([]engine.ContainerSummary, error) {
	f.labels = labels
	return []engine.ContainerSummary{
		{ID: "b2", Names: []string{"ociapp-echo-2"}, State: "running", Labels: map[string]string{runtime.LabelArtifactName: "echo", runtime.LabelArtifactDigest: "sha256:e"}},
		{ID: "a1", Names: []string{"ociapp-echo-1"}, State: "exited", Labels: map[string]string{runtime.LabelArtifactName: "echo", runtime.LabelArtifactDigest: "sha256:e"}},
	}, nil
}

func TestPoolsAndContainers(t *testing.T) {
	rt := &daemontest.Runner{Snapshot: runtime.Stats{Pools: []runtime.PoolStats{{Artifact: "echo 1.0", Digest: "sha256:e", Containers: 2, Starting: 1, InFlight: 3, Queued: 4}}}}
	lister := &fakeLister{}
	labels := map[string]string{runtime.LabelStateDir: "/state/rt"}
	d := startServer(t, rt, daemon.WithContainers(lister, labels))

	_, body := d.do(t, http.MethodGet, api.PoolsPath, nil)
	var pools api.PoolList
	if err := json.Unmarshal(body, &pools); err != nil {
		t.Fatal(err)
	}
	if want := []api.Pool{{Artifact: "echo 1.0", ArtifactDigest: "sha256:e", Containers: 2, Starting: 1, InFlight: 3, Queued: 4}}; !reflect.DeepEqual(pools.Pools, want) {
		t.Fatalf("pools %+v", pools.Pools)
	}
	_, body = d.do(t, http.MethodGet, api.ContainersPath, nil)
	var cs api.ContainerList
	if err := json.Unmarshal(body, &cs); err != nil {
		t.Fatal(err)
	}
	want := []api.Container{
		{ID: "a1", Name: "ociapp-echo-1", Artifact: "echo", ArtifactDigest: "sha256:e", State: "exited"},
		{ID: "b2", Name: "ociapp-echo-2", Artifact: "echo", ArtifactDigest: "sha256:e", State: "running"},
	}
	if !reflect.DeepEqual(cs.Containers, want) || !reflect.DeepEqual(lister.labels, labels) {
		t.Fatalf("containers %+v with labels %v", cs.Containers, lister.labels)
	}
}

func TestMetrics(t *testing.T) {
	rt := &daemontest.Runner{Snapshot: runtime.Stats{
		ColdStarts: 3, ImageLoads: 1, WarmHits: 120, QueueWaits: 4, QueueWaitTime: 1500 * time.Millisecond,
		Failures: runtime.FailureStats{App: 2, Timeout: 1, Startup: 5, StartupFailures: 1, ContainerCrashes: 1},
		Pools: []runtime.PoolStats{
			{Artifact: "zeta 1.0", Digest: "sha256:z", Containers: 1},
			{Artifact: `echo "1.0"`, Digest: "sha256:e", Containers: 2, InFlight: 1, Queued: 0},
		},
	}}
	d := startServer(t, rt)
	d.do(t, http.MethodGet, api.HealthPath, nil)
	d.do(t, http.MethodGet, api.PoolsPath, nil)
	d.do(t, http.MethodGet, "/nope", nil)
	resp, body := d.do(t, http.MethodGet, api.MetricsPath, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("%s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		t.Fatalf("metrics differ from %s (run with -update to accept):\n%s", golden, body)
	}
}

func TestMetricsExecuteHistogram(t *testing.T) {
	rt := &daemontest.Runner{Fn: func(context.Context, []byte) ([]byte, error) {
		time.Sleep(3 * time.Millisecond)
		return []byte{0x80}, nil
	}}
	d := startServer(t, rt)
	digest := d.upload(t, mustSmall(t))
	for range 3 {
		d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader("\x80"), "Content-Type", api.MediaMsgpack)
	}
	_, body := d.do(t, http.MethodGet, api.MetricsPath, nil)
	for _, line := range []string{
		`ociapp_daemon_execute_duration_seconds_bucket{le="0.0025"} 0`,
		`ociapp_daemon_execute_duration_seconds_bucket{le="0.005"} 3`,
		`ociapp_daemon_execute_duration_seconds_bucket{le="+Inf"} 3`,
		`ociapp_daemon_execute_duration_seconds_count 3`,
		`ociapp_daemon_http_requests_total{route="execute",code="200"} 3`,
		`ociapp_daemon_uploads_total 1`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("no %q in\n%s", line, body)
		}
	}
}

func mustSmall(t *testing.T) string {
	path, _, _ := smallArtifact(t, t.TempDir())
	return path
}

// TestDrain checks shutdown: no new connections, the request in flight
// finishes and gets its answer.
func TestDrain(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	rt := &daemontest.Runner{Fn: func(_ context.Context, p []byte) ([]byte, error) {
		close(entered)
		<-release
		return p, nil
	}}
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "d.sock")
	ln, err := daemon.Listen("unix://"+sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	d := &testDaemon{sock: sock, client: unixClient(sock)}
	defer d.client.CloseIdleConnections()
	digest := d.upload(t, mustSmall(t))

	var wg sync.WaitGroup
	wg.Add(1)
	var status int
	var body []byte
	go func() {
		defer wg.Done()
		resp, b := d.do(t, http.MethodPost, api.ExecutePath(digest), strings.NewReader(`{"x":1}`), "Content-Type", api.MediaJSON)
		status, body = resp.StatusCode, b
	}()
	<-entered
	cancel()
	// The listener closes at once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the daemon still accepts connections while draining")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned before the request finished: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if status != http.StatusOK || string(body) != `{"x":1}` {
		t.Fatalf("the request in flight got %d %s", status, body)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestDrainTimeout checks that a request outliving the drain timeout is cut
// off (its context canceled) and Serve returns.
func TestDrainTimeout(t *testing.T) {
	entered := make(chan struct{})
	rt := &daemontest.Runner{Fn: func(ctx context.Context, _ []byte) ([]byte, error) {
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store, daemon.WithDrainTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sock, stop := daemontest.Serve(t, srv, dir)
	client := unixClient(sock)
	defer client.CloseIdleConnections()
	d := &testDaemon{sock: sock, client: client}
	digest := d.upload(t, mustSmall(t))
	failed := make(chan error, 1)
	go func() {
		resp, err := client.Post("http://daemon"+api.ExecutePath(digest), api.MediaJSON, strings.NewReader(`{}`))
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got %s", resp.Status)
		}
		failed <- err
	}()
	<-entered
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Serve took %v to give up", took)
	}
	if err := <-failed; err == nil {
		t.Fatal("the cut-off request succeeded")
	}
}

func TestServeRefusesTCPWithoutToken(t *testing.T) {
	srv, err := daemon.New(&daemontest.Runner{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Serve(ctx, ln); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Serve: %v", err)
	}
	if err := daemon.Run(ctx, nil, daemon.WithListen("tcp://127.0.0.1:0"), daemon.WithStateDir(t.TempDir())); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Run: %v", err)
	}
}

func TestServeTCPWithToken(t *testing.T) {
	srv, err := daemon.New(&daemontest.Runner{}, nil, daemon.WithToken("t"))
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
	client := &http.Client{}
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+api.PoolsPath, nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	cancel()
	if err := <-served; err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%v %s", err, resp.Status)
	}
}

func TestNewRejectsOptions(t *testing.T) {
	for _, o := range []daemon.Option{
		daemon.WithToken(""), daemon.WithMaxArtifactSize(0), daemon.WithMaxRequestSize(-1),
		daemon.WithDrainTimeout(0), daemon.WithLogger(nil), daemon.WithMaxRequestSize(api.DefaultMaxRequestSize + 1),
	} {
		if _, err := daemon.New(&daemontest.Runner{}, nil, o); err == nil {
			t.Error("an invalid option was accepted")
		}
	}
}
