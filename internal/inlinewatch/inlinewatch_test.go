package inlinewatch

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// watchOne starts a watcher with one connection slot that counts the times
// its reader role is passed on; the watcher stops when the test ends.
func watchOne(t *testing.T) (*Watch, *Slot, *atomic.Int32) {
	w := New()
	passed := new(atomic.Int32)
	s := &Slot{PassRole: func() { passed.Add(1) }}
	w.Add(s)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(stop)
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return w, s, passed
}

func TestInlineWatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		// idleFirst lets the watcher fall asleep before the request.
		idleFirst  time.Duration
		runFor     time.Duration
		wantPassed int32
	}{
		{"short request keeps the role", 0, CheckInterval / 2, 0},
		{"long request passes the role on", 0, 3 * CheckInterval, 1},
		{"long request after the watcher slept", (idleChecks + 5) * CheckInterval, 3 * CheckInterval, 1},
		{"short request after the watcher slept", (idleChecks + 5) * CheckInterval, CheckInterval / 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w, s, passed := watchOne(t)
				time.Sleep(tc.idleFirst)
				synctest.Wait()
				if tc.idleFirst > 0 && !w.sleeping.Load() {
					t.Fatalf("the watcher still ticks after %v without requests", tc.idleFirst)
				}
				run := w.Begin(s)
				time.Sleep(tc.runFor)
				kept := s.End(run)
				synctest.Wait()
				if got := passed.Load(); got != tc.wantPassed {
					t.Fatalf("reader role passed on %d times, want %d", got, tc.wantPassed)
				}
				if kept != (tc.wantPassed == 0) {
					t.Fatalf("end() = %v after the role was passed on %d times", kept, passed.Load())
				}
			})
		})
	}
}

func TestInlineWatchSleepsWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, _, _ := watchOne(t)
		time.Sleep(idleChecks * CheckInterval * 2)
		synctest.Wait()
		if !w.sleeping.Load() {
			t.Fatal("an idle watcher keeps ticking")
		}
	})
}

func TestInlineWatchPassedReaderDoesNotTakeTheNextRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New()
		passed := 0
		s := &Slot{PassRole: func() { passed++ }}
		w.Add(s)
		first := w.Begin(s)
		// The watcher's check one interval later passes the role on, and
		// the next reader begins a request before the first one ends, at
		// the same reading of the clock (synctest's clock stands still).
		w.check(time.Now().Add(CheckInterval))
		if passed != 1 {
			t.Fatalf("reader role passed on %d times, want 1", passed)
		}
		second := w.Begin(s)
		if s.End(first) {
			t.Fatal("the reader whose role was passed on ended the next reader's request and kept the role")
		}
		if !s.End(second) {
			t.Fatal("the next reader lost its role")
		}
	})
}
