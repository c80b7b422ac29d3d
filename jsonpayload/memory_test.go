package jsonpayload

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestConversionMemory bounds what converting a large JSON request to
// msgpack allocates (a few times the body) and a large response back
// (chunks only), where a value tree took 13 to 100 times the body (a dozen
// 15 MB requests held gigabytes).
func TestConversionMemory(t *testing.T) {
	const n = 4 << 20 // bytes of JSON, about
	for _, tt := range []struct {
		name, elem string
	}{
		{"integers", `1,`},
		{"strings", `"ab",`},
		{"objects", `{"k":1},`},
		{"floats", `1.5,`},
		{"nested", `[[[{"a":[1]}]]],`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(`{"a":[` + strings.Repeat(tt.elem, n/len(tt.elem)) + `0]}`)
			var payload []byte
			var err error
			req := allocated(func() { payload, err = FromJSON(body, 1<<30) })
			if err != nil {
				t.Fatal(err)
			}
			// As the server does: once to learn the length, once to the
			// client.
			resp := allocated(func() {
				if _, err = Write(io.Discard, payload); err == nil {
					_, err = Write(io.Discard, payload)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			ratio := func(b uint64) float64 { return float64(b) / float64(len(body)) }
			t.Logf("%d bytes of JSON: request conversion allocates %.1fx, response %d bytes", len(body), ratio(req), resp)
			if ratio(req) > 4 || resp > 1<<20 {
				t.Fatalf("allocated %.1fx the body for the request, and %d bytes for the response; want at most 4x and 1 MiB", ratio(req), resp)
			}
		})
	}
}
