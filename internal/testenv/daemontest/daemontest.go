// Package daemontest serves daemons for tests of the daemon and its
// clients, with a stand-in for the runtime when containers are not needed.
package daemontest

import (
	"context"
	"iter"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/runtime"
)

// Runner is a daemon.Runner that echoes payloads unless Fn says otherwise,
// streams with StreamFn (else one item from ExecutePayload), reports
// Snapshot as its stats, and records the paths it was asked to run.
type Runner struct {
	Fn       func(ctx context.Context, payload []byte) ([]byte, error)
	StreamFn func(ctx context.Context, payload []byte) iter.Seq2[[]byte, error]
	Snapshot runtime.Stats // what Stats returns

	mu    sync.Mutex
	paths []string
}

// ExecutePayload records path and answers with Fn, or echoes payload.
func (f *Runner) ExecutePayload(ctx context.Context, path string, payload []byte) ([]byte, error) {
	f.mu.Lock()
	f.paths = append(f.paths, path)
	f.mu.Unlock()
	if f.Fn != nil {
		return f.Fn(ctx, payload)
	}
	return payload, nil
}

// StreamPayload records path and yields StreamFn's items, or
// ExecutePayload's answer as the only item, as the runtime does for a
// handler that does not stream.
func (f *Runner) StreamPayload(ctx context.Context, path string, payload []byte) iter.Seq2[[]byte, error] {
	if f.StreamFn == nil {
		return func(yield func([]byte, error) bool) {
			yield(f.ExecutePayload(ctx, path, payload))
		}
	}
	f.mu.Lock()
	f.paths = append(f.paths, path)
	f.mu.Unlock()
	return f.StreamFn(ctx, payload)
}

// Stats returns f.Snapshot.
func (f *Runner) Stats() runtime.Stats { return f.Snapshot }

// Paths returns the paths of the requests so far, in order.
func (f *Runner) Paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.paths)
}

// LastPath returns the path of the latest request, or "".
func (f *Runner) LastPath() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.paths) == 0 {
		return ""
	}
	return f.paths[len(f.paths)-1]
}

// Serve serves srv on a Unix socket at dir/d.sock until the test ends and
// returns the socket's path and stop, which drains the server and returns
// what its Serve returned (later calls return the same). An error Serve
// returns at the end of the test fails it.
func Serve(tb testing.TB, srv *daemon.Server, dir string) (sock string, stop func() error) {
	tb.Helper()
	sock = filepath.Join(dir, "d.sock")
	ln, err := daemon.Listen("unix://"+sock, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-served
		})
		return serveErr
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return sock, stop
}
