package runtime

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ociapp/ociapp/engine"
)

func TestCleanOrphans(t *testing.T) {
	dir := t.TempDir()
	eng := newFakeEngine()
	eng.images["img"] = true
	// A live runtime, one that died (its lock file unlocked), and
	// containers whose runtime directory is gone.
	live, err := openInstance(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer live.close()
	deadDir := filepath.Join(dir, "deadbeef")
	if err := os.MkdirAll(filepath.Join(deadDir, "w1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deadDir, "lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	create := func(owner, stateDir string) string {
		id, err := eng.CreateContainer(context.Background(), engine.ContainerSpec{Image: "img", Labels: map[string]string{
			LabelManaged: "1", LabelInstance: owner, LabelStateDir: stateDir,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// The records every runtime shares, which have no lock file.
	record := filepath.Join(dir, verifiedDirName, "user-0123")
	if err := os.MkdirAll(filepath.Dir(record), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(record, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	liveC := create(live.id, dir)
	deadC := create("deadbeef", dir)
	goneC := create("0badf00d", dir)
	otherC := create("0badf00d", "/elsewhere") // another state directory: not ours to judge

	in, err := openInstance(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	if err := in.cleanOrphans(t.Context(), eng, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for id, wantRemoved := range map[string]bool{liveC: false, deadC: true, goneC: true, otherC: false} {
		if got := eng.byID[id].removed; got != wantRemoved {
			t.Errorf("container %s removed = %v, want %v", id, got, wantRemoved)
		}
	}
	if _, err := os.Stat(deadDir); !os.IsNotExist(err) {
		t.Errorf("dead runtime's directory remains: %v", err)
	}
	if _, err := os.Stat(live.dir); err != nil {
		t.Errorf("live runtime's directory was touched: %v", err)
	}
	if _, err := os.Stat(record); err != nil {
		t.Errorf("the shared records were removed: %v", err)
	}
}
