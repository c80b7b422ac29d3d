package daemon_test

import (
	"context"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv/daemontest"
	"github.com/ociapp/ociapp/protocol"
)

// workers counts the goroutines in the execute channel's worker loop.
func workers() int {
	buf := make([]byte, 1<<22)
	return strings.Count(string(buf[:goruntime.Stack(buf, true)]), "daemon.(*muxConn).work(")
}

// TestMuxWorkers: requests in flight together run on workers; once they
// are answered, at most 64 workers wait for the channel's next requests,
// and those end with the channel.
func TestMuxWorkers(t *testing.T) {
	const n = 100
	var running sync.WaitGroup
	running.Add(n)
	release := make(chan struct{})
	rt := &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		running.Done()
		<-release
		return p, nil
	}}
	d := startServer(t, rt)
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)
	c := dialMux(t, d.sock)
	for id := range uint64(n) {
		c.send(t, api.MuxRequest{ID: id + 1, Digest: digest, Payload: []byte{0x80}})
	}
	running.Wait() // all n at once: none waits for another to end
	close(release)
	seen := map[uint64]bool{}
	for range n {
		resp := c.recv(t)
		if resp.Error != nil {
			t.Fatalf("request %d: %s", resp.ID, resp.Error)
		}
		seen[resp.ID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct answers to %d requests", len(seen), n)
	}
	waitFor(t, "workers to settle", func() bool { return workers() <= 64 })
	if w := workers(); w == 0 {
		t.Fatal("no worker waits for the channel's next request")
	}
	c.conn.Close()
	waitFor(t, "workers to end with the channel", func() bool { return workers() == 0 })
}

// TestMuxCountsRequestsForPolling checks that the execute channel counts
// its requests in the runtime's poll group from the moment it reads them,
// before the runtime has them, and that each is uncounted once answered.
func TestMuxCountsRequestsForPolling(t *testing.T) {
	const n = 5
	var polls protocol.PollGroup
	reached, release := make(chan struct{}, n), make(chan struct{})
	rt := &daemontest.Runner{Fn: func(ctx context.Context, p []byte) ([]byte, error) {
		reached <- struct{}{}
		<-release
		return p, nil
	}}
	d := startServer(t, rt, daemon.WithPollGroup(&polls))
	path, _, _ := smallArtifact(t, t.TempDir())
	digest := d.upload(t, path)
	c := dialMux(t, d.sock)
	for id := range uint64(n) {
		c.send(t, api.MuxRequest{ID: id + 1, Digest: digest, Payload: []byte{0x80}})
	}
	for range n {
		<-reached
	}
	if got := polls.InFlight(); got != n {
		t.Errorf("with %d requests running, the poll group counts %d", n, got)
	}
	close(release)
	for range n {
		if resp := c.recv(t); resp.Error != nil {
			t.Fatalf("request %d: %s", resp.ID, resp.Error)
		}
	}
	waitFor(t, "the poll group to count none", func() bool { return polls.InFlight() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
