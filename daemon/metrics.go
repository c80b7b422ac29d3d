package daemon

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/runtime"
)

// metrics are the daemon's own counters; the runtime's come from its Stats.
type metrics struct {
	inFlight    atomic.Int64
	uploads     atomic.Uint64
	uploadBytes atomic.Uint64
	bodyBytes   atomic.Int64 // execute body bytes held in the body memory

	mu       sync.Mutex
	requests map[requestKey]uint64

	executeDuration histogram
}

type requestKey struct {
	route  string
	status int
}

func (m *metrics) init() {
	m.requests = make(map[requestKey]uint64)
	m.executeDuration.bounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	m.executeDuration.counts = make([]uint64, len(m.executeDuration.bounds))
}

func (m *metrics) count(route string, status int) {
	m.mu.Lock()
	m.requests[requestKey{route, status}]++
	m.mu.Unlock()
}

// histogram is a Prometheus histogram with fixed bucket bounds in seconds.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // per bucket, not cumulative
	count  uint64
	sum    float64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(h.bounds, s)
	h.mu.Lock()
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.count++
	h.sum += s
	h.mu.Unlock()
}

// write writes every metric in the Prometheus text exposition format,
// families in a fixed order and series sorted, so equal state gives equal
// text.
// write writes every metric; storeBytes is what the artifact store holds.
func (m *metrics) write(b *bytes.Buffer, st runtime.Stats, storeBytes int64) {
	counter := func(name, help string, v uint64) {
		family(b, name, "counter", help)
		fmt.Fprintf(b, "%s %d\n", name, v)
	}
	counter("ociapp_runtime_cold_starts_total", "Containers that started and became ready.", st.ColdStarts)
	counter("ociapp_runtime_image_loads_total", "Images loaded into the container engine.", st.ImageLoads)
	counter("ociapp_runtime_warm_hits_total", "Requests sent at once to a ready container.", st.WarmHits)
	counter("ociapp_runtime_queue_waits_total", "Requests that waited for a container.", st.QueueWaits)
	family(b, "ociapp_runtime_queue_wait_seconds_total", "counter", "Total time requests waited for a container.")
	fmt.Fprintf(b, "ociapp_runtime_queue_wait_seconds_total %s\n", float(st.QueueWaitTime.Seconds()))

	f := st.Failures
	family(b, "ociapp_runtime_request_failures_total", "counter", "Failed requests by kind.")
	for _, kv := range []struct {
		kind string
		n    uint64
	}{
		{"app", f.App}, {"artifact", f.Artifact}, {"crash", f.Crash}, {"engine", f.Engine},
		{"other", f.Other}, {"overloaded", f.Overloaded}, {"startup", f.Startup}, {"timeout", f.Timeout},
	} {
		fmt.Fprintf(b, "ociapp_runtime_request_failures_total{kind=%s} %d\n", label(kv.kind), kv.n)
	}
	counter("ociapp_runtime_container_start_failures_total", "Containers that failed to start.", f.StartupFailures)
	counter("ociapp_runtime_container_crashes_total", "Containers that crashed while serving.", f.ContainerCrashes)

	pools := slices.Clone(st.Pools)
	slices.SortFunc(pools, func(a, b runtime.PoolStats) int {
		return cmp.Or(strings.Compare(a.Artifact, b.Artifact), strings.Compare(a.Digest, b.Digest))
	})
	for _, g := range []struct {
		name, help string
		get        func(runtime.PoolStats) int
	}{
		{"ociapp_runtime_pool_containers", "Ready containers per artifact.", func(p runtime.PoolStats) int { return p.Containers }},
		{"ociapp_runtime_pool_starting", "Containers being started per artifact.", func(p runtime.PoolStats) int { return p.Starting }},
		{"ociapp_runtime_pool_in_flight", "Requests in flight per artifact.", func(p runtime.PoolStats) int { return p.InFlight }},
		{"ociapp_runtime_pool_queued", "Requests waiting for a container per artifact.", func(p runtime.PoolStats) int { return p.Queued }},
	} {
		family(b, g.name, "gauge", g.help)
		for _, p := range pools {
			fmt.Fprintf(b, "%s{artifact=%s,artifact_digest=%s} %d\n", g.name, label(p.Artifact), label(p.Digest), g.get(p))
		}
	}

	family(b, "ociapp_daemon_http_requests_total", "counter", "HTTP requests by route and status (499: the client went away).")
	m.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(m.requests), func(a, b requestKey) int {
		return cmp.Or(strings.Compare(a.route, b.route), a.status-b.status)
	})
	for _, k := range keys {
		fmt.Fprintf(b, "ociapp_daemon_http_requests_total{route=%s,code=%s} %d\n", label(k.route), label(strconv.Itoa(k.status)), m.requests[k])
	}
	m.mu.Unlock()
	family(b, "ociapp_daemon_http_requests_in_flight", "gauge", "HTTP requests being served.")
	fmt.Fprintf(b, "ociapp_daemon_http_requests_in_flight %d\n", m.inFlight.Load())
	counter("ociapp_daemon_uploads_total", "Artifacts received and stored.", m.uploads.Load())
	counter("ociapp_daemon_upload_bytes_total", "Bytes of artifacts received and stored.", m.uploadBytes.Load())
	family(b, "ociapp_daemon_body_bytes_in_flight", "gauge", "Bytes of execute bodies held in the body memory (--max-body-memory).")
	fmt.Fprintf(b, "ociapp_daemon_body_bytes_in_flight %d\n", m.bodyBytes.Load())
	family(b, "ociapp_daemon_store_bytes", "gauge", "Bytes of stored artifacts and uploads in progress (--store-quota).")
	fmt.Fprintf(b, "ociapp_daemon_store_bytes %d\n", storeBytes)

	h := &m.executeDuration
	const name = "ociapp_daemon_execute_duration_seconds"
	family(b, name, "histogram", "Time the runtime took to execute a request, from the daemon's side.")
	h.mu.Lock()
	var cum uint64
	for i, bound := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(b, "%s_bucket{le=%s} %d\n", name, label(float(bound)), cum)
	}
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n", name, h.count)
	fmt.Fprintf(b, "%s_sum %s\n%s_count %d\n", name, float(h.sum), name, h.count)
	h.mu.Unlock()
}

func family(b *bytes.Buffer, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func float(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// label quotes a label value as the exposition format requires.
func label(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(v) + `"`
}
