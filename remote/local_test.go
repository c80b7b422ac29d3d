package remote_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

// TestExecuteByPath: a daemon on this host's Unix socket runs the caller's
// file where it lies: nothing is uploaded, and the runtime gets the
// caller's path.
func TestExecuteByPath(t *testing.T) {
	rt := &daemontest.Runner{}
	dir := testenv.ShortTempDir(t)
	store, err := daemon.OpenStore(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(rt, store)
	if err != nil {
		t.Fatal(err)
	}
	sock, _ := daemontest.Serve(t, srv, dir)
	ctx := t.Context()
	ex, err := remote.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()

	path := smallArtifact(t, "a")
	// A relative path is made absolute.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, rel} {
		resp, err := ex.Execute(ctx, p, map[string]any{"v": "x"})
		if err != nil || resp["v"] != "x" {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if paths := rt.Paths(); len(paths) != 2 || paths[0] != path || paths[1] != path {
		t.Fatalf("the runtime ran %q, want the caller's file twice", paths)
	}
	if list, err := ex.Artifacts(ctx); err != nil || len(list) != 0 {
		t.Fatalf("the daemon holds %v (%v) after executes by path", list, err)
	}
	// A missing file is the runtime's artifact error, as locally.
	if _, err := ex.Execute(ctx, filepath.Join(dir, "gone.ociapp"), map[string]any{}); !isArtifactError(err) {
		t.Fatalf("got %v", err)
	}
}

func isArtifactError(err error) bool {
	var ae *runtime.ArtifactError
	return errors.As(err, &ae)
}

// TestExecuteByPathFallsBack: a daemon that does not offer it, or cannot
// see the caller's file, gets the artifact uploaded, and is not asked again.
func TestExecuteByPathFallsBack(t *testing.T) {
	tests := []struct {
		name string
		code api.Code
	}{
		{"not offered", api.CodeNotFound},
		{"another file at the path", api.CodeArtifactNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDaemon(t, &daemontest.Runner{})
			s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == api.LocalExecutePath {
					w.Header().Set("Content-Type", api.MediaMsgpack)
					w.WriteHeader(tt.code.Status())
					w.Write((&api.Error{Code: tt.code, Message: "no"}).Encode(api.MediaMsgpack))
					return
				}
				d.ServeHTTP(w, r)
			}))
			ex, err := remote.New("unix://"+s.sock, remote.WithHTTPExecute())
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
			// One attempt by path, one by digest after the upload, one
			// by digest.
			if s.count(http.MethodPost) != 3 || s.count(http.MethodPut) != 1 {
				t.Fatalf("requests by method: %v", s.counts)
			}
		})
	}
}
