package kubernetes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAwaitEntry(t *testing.T) {
	t.Run("created later", func(t *testing.T) {
		dir := t.TempDir()
		done := make(chan error, 1)
		go func() { done <- awaitEntry(t.Context(), dir) }()
		select {
		case err := <-done:
			t.Fatalf("returned %v for an empty directory", err)
		case <-time.After(50 * time.Millisecond):
		}
		if err := os.WriteFile(filepath.Join(dir, "app.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("already there", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := awaitEntry(t.Context(), dir); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if err := awaitEntry(ctx, t.TempDir()); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the context's error", err)
		}
	})
	t.Run("no directory", func(t *testing.T) {
		if err := awaitEntry(t.Context(), filepath.Join(t.TempDir(), "gone")); err == nil {
			t.Fatal("watching a missing directory succeeded")
		}
	})
}
