package runtime

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
)

// streamerApps are the stream capability's test apps, one per SDK
// (internal/testapps/streamer, runtime/testdata/streamer-app).
func streamerApps(t *testing.T) []struct{ name, path string } {
	return []struct{ name, path string }{
		{"go", testArtifact(t, "streamer")},
		{"python", pythonArtifact(t, dockertest.Engine(t), "streamer-py")},
	}
}

// streamCount asks a streamer app for one of its counters ("produced",
// "cancelled"), which it answers as a one-item stream.
func streamCount(t *testing.T, rt *Runtime, path, op string) int64 {
	t.Helper()
	var n int64 = -1
	for item, err := range rt.Stream(t.Context(), path, map[string]any{"op": op}) {
		if err != nil {
			t.Fatal(err)
		}
		n = item["i"].(int64)
	}
	return n
}

// awaitStreamCount waits until the app's counter op reaches want: what the
// app does after the caller has its answer (a cancel) reaches it later.
func awaitStreamCount(t *testing.T, rt *Runtime, path, op string, want int64) {
	t.Helper()
	for start := time.Now(); streamCount(t, rt, path, op) != want; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s is %d, want %d", op, streamCount(t, rt, path, op), want)
		}
	}
}

// TestEngineStream: a handler's items arrive complete and in order; one
// that fails gives its items and then its typed error; a consumer that
// stops taking items holds the producer with bounded buffers; breaking out
// of the loop or cancelling the context cancels the handler, in the same
// container; a stream handler called by Execute says it streams.
func TestEngineStream(t *testing.T) {
	apps := streamerApps(t)
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		for _, app := range apps {
			t.Run(app.name, func(t *testing.T) {
				rt := newRuntime(t, eng, WithMaxContainers(1))

				t.Run("10000 items in order", func(t *testing.T) {
					const n = 10_000
					next := int64(0)
					for item, err := range rt.Stream(t.Context(), app.path, map[string]any{"count": n, "size": 8}) {
						if err != nil {
							t.Fatalf("after %d items: %v", next, err)
						}
						if item["i"] != next || item["pad"] != "xxxxxxxx" {
							t.Fatalf("item %d is %v", next, item)
						}
						next++
					}
					if next != n {
						t.Fatalf("%d items, want %d", next, n)
					}
				})

				t.Run("error after items", func(t *testing.T) {
					var got int64
					var last error
					for item, err := range rt.Stream(t.Context(), app.path, map[string]any{"count": 10, "fail_at": 3}) {
						if err != nil {
							last = err
							continue
						}
						if item["i"] != got {
							t.Fatalf("item %d is %v", got, item)
						}
						got++
					}
					var appErr *AppError
					if got != 3 || !errors.As(last, &appErr) || appErr.Type != "StreamFailed" || appErr.Message != "failed at 3" {
						t.Fatalf("%d items, then %v; want 3 items, then StreamFailed", got, last)
					}
				})

				t.Run("a consumer that stops holds the producer", func(t *testing.T) {
					const size = 64 << 10
					itemBytes := int64(size + 64) // the pad and the item's own encoding
					var produced int64
					taken := 0
					for item, err := range rt.Stream(t.Context(), app.path, map[string]any{"count": -1, "size": size}) {
						if err != nil {
							t.Fatal(err)
						}
						if item["i"] != int64(taken) {
							t.Fatalf("item %d is %v", taken, item["i"])
						}
						taken++
						// The consumer holds its first item: the runtime
						// fills the rest of its window, and no more.
						window := int64(protocol.DefaultStreamWindow)
						for {
							st := rt.Stats()
							if st.StreamBufferedBytes > (window-1)*itemBytes {
								t.Fatalf("%d bytes buffered, more than the window's %d items", st.StreamBufferedBytes, window-1)
							}
							if st.StreamBufferedBytes >= (window-1)*size {
								break
							}
							time.Sleep(5 * time.Millisecond)
						}
						// The producer made at most the window and the one
						// item waiting for credit, however long it waits.
						produced = streamCount(t, rt, app.path, "produced")
						for range 3 {
							if produced > window+1 {
								t.Fatalf("the handler produced %d items for a window of %d", produced, window)
							}
							time.Sleep(100 * time.Millisecond)
							produced = streamCount(t, rt, app.path, "produced")
						}
						if st := rt.Stats(); st.Streams != 1 || st.StreamBufferedBytes > (window-1)*itemBytes {
							t.Fatalf("stats %d streams, %d bytes buffered", st.Streams, st.StreamBufferedBytes)
						}
						break // cancels the handler
					}
					if produced < 2 {
						t.Fatalf("the handler produced %d items", produced)
					}
					awaitStreamCount(t, rt, app.path, "cancelled", 1)
					if st := rt.Stats(); st.Streams != 0 || st.StreamBufferedBytes != 0 {
						t.Fatalf("after the stream: %d streams, %d bytes buffered", st.Streams, st.StreamBufferedBytes)
					}
				})

				t.Run("context cancelled", func(t *testing.T) {
					ctx, cancel := context.WithCancel(t.Context())
					defer cancel()
					var last error
					taken := 0
					for _, err := range rt.Stream(ctx, app.path, map[string]any{"count": -1}) {
						if err != nil {
							last = err
							continue
						}
						if taken++; taken == 3 {
							cancel()
						}
					}
					if !errors.Is(last, context.Canceled) {
						t.Fatalf("the stream ended with %v, want context.Canceled", last)
					}
					awaitStreamCount(t, rt, app.path, "cancelled", 2)
				})

				t.Run("Execute of a stream handler", func(t *testing.T) {
					_, err := rt.Execute(t.Context(), app.path, map[string]any{"count": 1})
					var appErr *AppError
					if !errors.As(err, &appErr) || appErr.Type != "StreamRequired" {
						t.Fatalf("Execute returned %v, want StreamRequired", err)
					}
				})

				if st := rt.Stats(); st.ColdStarts != 1 || st.Failures.ContainerCrashes != 0 {
					t.Fatalf("stats %+v: want the one container throughout", st)
				}
			})
		}
	})
}

// TestEngineStreamOfAnAppThatDoesNotStream: Stream of a handler that
// answers once gives that answer as the only item, whether its artifact
// declares the stream capability or none at all.
func TestEngineStreamOfAnAppThatDoesNotStream(t *testing.T) {
	apps := capableApps(t)
	forEachEngine(t, func(t *testing.T, _ testEngine, eng engine.Engine) {
		rt := newRuntime(t, eng)
		for _, app := range apps {
			var items []map[string]any
			for item, err := range rt.Stream(t.Context(), app.path, map[string]any{"op": "cancelled"}) {
				if err != nil {
					t.Fatalf("%s: %v", app.name, err)
				}
				items = append(items, item)
			}
			if len(items) != 1 || items[0]["n"] != int64(0) {
				t.Fatalf("%s: items %v, want the one response", app.name, items)
			}
		}
	})
}
