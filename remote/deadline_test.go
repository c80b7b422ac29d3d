package remote_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/remote"
	"github.com/ociapp/ociapp/runtime"
)

// TestCallerDeadline: the deadline of the caller's context reaches the
// daemon's request context, on the execute channel and over HTTP, for
// executes and streams; a request that outlives it ends there too.
func TestCallerDeadline(t *testing.T) {
	ended := make(chan error, 1)
	sock, _ := muxDaemon(t, (&daemontest.Deadlines{Ended: ended}).Runner())
	path := smallArtifact(t, "a")
	for _, tt := range []struct {
		name string
		opts []remote.Option
	}{
		{"channel", nil},
		{"http", []remote.Option{remote.WithHTTPExecute()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ex, err := remote.New("unix://"+sock, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer ex.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			resp, err := ex.Execute(ctx, path, map[string]any{"op": "left"})
			if left, _ := resp["left_ms"].(int64); err != nil || left <= 1000 || left > 2000 {
				t.Fatalf("%v %v: want the caller's 2 s", resp, err)
			}
			for item, err := range ex.Stream(ctx, path, map[string]any{"op": "left"}) {
				if left, _ := item["left_ms"].(int64); err != nil || left <= 1000 || left > 2000 {
					t.Fatalf("stream: %v %v: want the caller's 2 s", item, err)
				}
			}
			if resp, err := ex.Execute(t.Context(), path, map[string]any{"op": "left"}); err != nil || resp["left_ms"] != int64(-1) {
				t.Fatalf("without a deadline: %v %v", resp, err)
			}

			short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			_, err = ex.Execute(short, path, map[string]any{"op": "wait"})
			if !errors.Is(err, context.DeadlineExceeded) || runtime.Classify(err) != runtime.KindDeadline {
				t.Fatalf("got %v, want the context's deadline", err)
			}
			select {
			case err := <-ended:
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					t.Fatalf("the daemon's request ended with %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the daemon's request outlived its caller's deadline")
			}
		})
	}
}

// TestCallerDeadlineFeature: the deadline goes on the channel only to a
// daemon that lists it (an older one is sent no key it may not know);
// one that answers the caller's deadline passed gets the error the
// runtime gives in process, the context's.
func TestCallerDeadlineFeature(t *testing.T) {
	var sent atomic.Int64
	answer := func(late bool) func(api.MuxRequest, io.Writer) {
		return func(req api.MuxRequest, w io.Writer) {
			if req.Cancel || req.Credit > 0 {
				return
			}
			sent.Store(int64(req.Deadline))
			resp := api.MuxResponse{ID: req.ID, Payload: req.Payload}
			if late {
				resp = api.MuxResponse{ID: req.ID, Error: (&api.Error{Code: api.CodeRequestTimeout, CallerDeadline: true, Timeout: req.Deadline, Message: "the caller's deadline passed"}).Encode(api.MediaMsgpack)}
			}
			w.Write(api.AppendMuxResponse(nil, resp))
		}
	}
	path := smallArtifact(t, "f")
	for _, tt := range []struct {
		features string
		late     bool
	}{{"cancel, stream", false}, {"cancel, stream, deadline", false}, {"cancel, stream, deadline", true}} {
		ex, err := remote.New("unix://" + fakeMuxDaemon(t, tt.features, answer(tt.late)))
		if err != nil {
			t.Fatal(err)
		}
		defer ex.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err = ex.Execute(ctx, path, map[string]any{"v": 1})
		left := time.Duration(sent.Load())
		offered := strings.Contains(tt.features, "deadline")
		if (left != 0) != offered || offered && (left < 59*time.Second || left > time.Minute) {
			t.Fatalf("features %q: the daemon was sent %v left", tt.features, left)
		}
		switch {
		case !tt.late && err != nil:
			t.Fatal(err)
		case tt.late && (!errors.Is(err, context.DeadlineExceeded) || errors.As(err, new(*runtime.RequestTimeoutError)) || !strings.Contains(err.Error(), "caller's deadline")):
			t.Fatalf("got %#v, want the context's deadline", err)
		}
	}
}
