// Package daemontest provides a stand-in for the runtime behind a daemon,
// for tests of the daemon and its clients without containers.
package daemontest

import (
	"context"
	"sync"

	"github.com/ociapp/ociapp/runtime"
)

// Runner is a daemon.Runner that echoes payloads unless Fn says otherwise,
// reports Snapshot as its stats, and records the paths it was asked to run.
type Runner struct {
	Fn       func(ctx context.Context, payload []byte) ([]byte, error)
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

// Stats returns f.Snapshot.
func (f *Runner) Stats() runtime.Stats { return f.Snapshot }

// LastPath returns the path of the latest request, or "".
func (f *Runner) LastPath() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.paths) == 0 {
		return ""
	}
	return f.paths[len(f.paths)-1]
}
