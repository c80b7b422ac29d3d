package daemon_test

import (
	"testing"

	"github.com/ociapp/ociapp/daemon"
)

func TestProcs(t *testing.T) {
	for _, tc := range []struct{ available, want int }{
		{0, 1}, {1, 1}, {2, 1}, {4, 1}, {7, 1}, {8, 2}, {16, 4}, {64, 16},
	} {
		if got := daemon.Procs(tc.available); got != tc.want {
			t.Errorf("Procs(%d) = %d, want %d", tc.available, got, tc.want)
		}
	}
}
