package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blockingArtifact is an artifact whose reading never finishes on its own:
// a FIFO nobody writes to, on which opening blocks as reading a hostile
// archive takes forever. The cleanup lets the reader go.
func blockingArtifact(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blocks.ociapp")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A writer that opens and closes the FIFO ends the reader's open;
		// without a reader, opening fails at once instead of blocking.
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	return path
}

// blockingReader is standard input that never ends until the test does.
type blockingReader struct{ done <-chan struct{} }

func (r blockingReader) Read([]byte) (int, error) {
	<-r.done
	return 0, io.EOF
}

// TestInterruptWhileReading checks that run and inspect end soon after
// SIGINT or SIGTERM (ctx canceled) while what they read does not finish:
// inspect an artifact whose reading blocks, run a request on standard
// input that never ends. They exit with the status for "interrupted".
func TestInterruptWhileReading(t *testing.T) {
	tests := []struct {
		name string
		args func(path string) []string
	}{
		{"inspect", func(path string) []string { return []string{"inspect", path} }},
		{"run", func(path string) []string { return []string{"run", "--timeout", "1h", path, "-"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := blockingArtifact(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr bytes.Buffer
			stdinDone := make(chan struct{})
			defer close(stdinDone)
			args := tt.args(path)
			done := make(chan int, 1)
			go func() { done <- run(ctx, args, blockingReader{stdinDone}, &stdout, &stderr) }()
			// Let the command reach the artifact, then interrupt it.
			select {
			case code := <-done:
				t.Fatalf("%s ended before the interrupt: %d\n%s", tt.name, code, stderr.String())
			case <-time.After(500 * time.Millisecond):
			}
			cancel()
			select {
			case code := <-done:
				if code != exitOther {
					t.Fatalf("exit status %d, want %d (interrupted)\n%s", code, exitOther, stderr.String())
				}
			case <-time.After(runCleanupGrace + 10*time.Second):
				t.Fatalf("%s ignored the interrupt", tt.name)
			}
		})
	}
}

// TestInterruptible checks the command boundary's rule: a command that
// returns once interrupted gives its own status; one that does not is
// given up on after the grace.
func TestInterruptible(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	if code := interruptible(ctx, io.Discard, &stderr, time.Minute, func(io.Writer, io.Writer) int { return 42 }); code != 42 {
		t.Fatalf("a command that returned: %d", code)
	}
	release := make(chan struct{})
	defer close(release)
	abandoned := func(_, stderr io.Writer) int {
		<-release
		stderr.Write([]byte("written after being given up on"))
		return 42
	}
	if code := interruptible(ctx, io.Discard, &stderr, 0, abandoned); code != exitOther || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("a command that did not return: %d %q", code, stderr.String())
	}
}
