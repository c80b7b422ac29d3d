package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/ociapp/ociapp/engine/docker"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
)

// TestEngineFlagsCgroupParent: --cgroup-parent auto leaves the choice to
// the engine, daemon keeps the daemon's parent, anything else is the
// parent.
func TestEngineFlagsCgroupParent(t *testing.T) {
	auto := dockertest.Engine(t).CgroupParent(t.Context())
	for _, c := range []struct{ flag, want string }{
		{cgroupParentAuto, auto},
		{cgroupParentDaemon, docker.DaemonCgroupParent},
		{"/ociapp-test", "/ociapp-test"},
	} {
		f := engineFlags{kind: engineDocker, cgroup: c.flag}
		eng, err := f.open(context.Background(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if got := eng.(*docker.Engine).CgroupParent(t.Context()); got != c.want {
			t.Errorf("--cgroup-parent %q: the engine uses %q, want %q", c.flag, got, c.want)
		}
		eng.Close()
	}
}
