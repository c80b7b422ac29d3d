package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	val int
	err error
}

// TestDo starts a first caller (the leader, whose call blocks until
// released), then waiters, then releases the leader and checks what each
// got and how often the function ran.
func TestDo(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		// The leader's call ends with leaderVal and leaderErr, or when
		// its context is canceled (cancelLeader) or times out (leaderCtx).
		leaderVal    int
		leaderErr    error
		cancelLeader func(cancel context.CancelFunc)
		leaderCtx    func(context.Context) (context.Context, context.CancelFunc)
		cancelWaiter bool
		// Later calls (the waiters' retries) return laterVal.
		laterVal   int
		wantLeader result
		wantWaiter result
		wantCalls  int32
	}{
		{
			name: "waiters share the leader's result", leaderVal: 7,
			wantLeader: result{val: 7}, wantWaiter: result{val: 7}, wantCalls: 1,
		},
		{
			name: "waiters share the leader's error", leaderErr: errBoom,
			wantLeader: result{err: errBoom}, wantWaiter: result{err: errBoom}, wantCalls: 1,
		},
		{
			name:         "a canceled leader does not fail live waiters",
			cancelLeader: func(cancel context.CancelFunc) { cancel() },
			laterVal:     9,
			wantLeader:   result{err: context.Canceled}, wantWaiter: result{val: 9}, wantCalls: 2,
		},
		{
			name: "a leader past its deadline does not fail live waiters",
			leaderCtx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, time.Second)
			},
			laterVal:   9,
			wantLeader: result{err: context.DeadlineExceeded}, wantWaiter: result{val: 9}, wantCalls: 2,
		},
		{
			name: "a waiter whose context ends stops waiting", leaderVal: 7, cancelWaiter: true,
			wantLeader: result{val: 7}, wantWaiter: result{err: context.Canceled}, wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var g Group[string, int]
				var calls atomic.Int32
				release := make(chan struct{})
				releaseRetry := make(chan struct{})
				leaderCtx, cancelLeader := context.WithCancel(t.Context())
				if tt.leaderCtx != nil {
					leaderCtx, cancelLeader = tt.leaderCtx(t.Context())
				}
				defer cancelLeader()
				leader := make(chan result, 1)
				go func() {
					v, err := g.Do(leaderCtx, "k", func() (int, error) {
						calls.Add(1)
						select {
						case <-release:
							return tt.leaderVal, tt.leaderErr
						case <-leaderCtx.Done():
							return 0, leaderCtx.Err()
						}
					})
					leader <- result{v, err}
				}()
				synctest.Wait()

				waiterCtx, cancelWaiter := context.WithCancel(t.Context())
				defer cancelWaiter()
				const waiters = 4
				got := make(chan result, waiters)
				for range waiters {
					go func() {
						v, err := g.Do(waiterCtx, "k", func() (int, error) {
							calls.Add(1)
							<-releaseRetry // so that every retrying waiter finds this call
							return tt.laterVal, nil
						})
						got <- result{v, err}
					}()
				}
				synctest.Wait()
				if n := calls.Load(); n != 1 {
					t.Fatalf("%d calls while the first is under way, want 1", n)
				}
				switch {
				case tt.cancelWaiter:
					cancelWaiter()
					synctest.Wait()
					close(release)
				case tt.cancelLeader != nil:
					tt.cancelLeader(cancelLeader)
				case tt.leaderCtx != nil:
					time.Sleep(2 * time.Second)
				default:
					close(release)
				}
				synctest.Wait()
				close(releaseRetry)
				check := func(who string, r, want result) {
					t.Helper()
					if r.val != want.val || !errors.Is(r.err, want.err) || (want.err == nil) != (r.err == nil) {
						t.Errorf("%s got (%d, %v), want (%d, %v)", who, r.val, r.err, want.val, want.err)
					}
				}
				check("leader", <-leader, tt.wantLeader)
				for range waiters {
					check("waiter", <-got, tt.wantWaiter)
				}
				if n := calls.Load(); n != tt.wantCalls {
					t.Errorf("%d calls, want %d", n, tt.wantCalls)
				}
			})
		})
	}
}

func TestDoRunsAgainOnceDone(t *testing.T) {
	var g Group[int, int]
	for i := range 3 {
		v, err := g.Do(t.Context(), 1, func() (int, error) { return i, nil })
		if err != nil || v != i {
			t.Fatalf("call %d: (%d, %v): a finished call's result was reused", i, v, err)
		}
	}
}

func TestDoKeysAreIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group[string, string]
		release := make(chan struct{})
		var wg sync.WaitGroup
		for _, k := range []string{"a", "b"} {
			wg.Go(func() {
				v, err := g.Do(t.Context(), k, func() (string, error) {
					<-release
					return k, nil
				})
				if err != nil || v != k {
					t.Errorf("key %s: (%s, %v)", k, v, err)
				}
			})
		}
		synctest.Wait()
		// Both calls are under way at once: b did not wait for a.
		if len(g.calls) != 2 {
			t.Fatalf("%d calls under way, want 2", len(g.calls))
		}
		close(release)
		wg.Wait()
	})
}

func TestDoPanicFailsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group[string, int]
		release := make(chan struct{})
		panicked := make(chan any, 1)
		go func() {
			defer func() { panicked <- recover() }()
			_, _ = g.Do(t.Context(), "k", func() (int, error) {
				<-release
				panic("bad")
			})
		}()
		synctest.Wait()
		waiter := make(chan error, 1)
		go func() {
			_, err := g.Do(t.Context(), "k", func() (int, error) { return 1, nil })
			waiter <- err
		}()
		synctest.Wait()
		close(release)
		if p := <-panicked; p != "bad" {
			t.Fatalf("the panic did not reach the caller that ran the call: %v", p)
		}
		if err := <-waiter; !errors.Is(err, ErrPanicked) {
			t.Fatalf("waiter got %v, want ErrPanicked", err)
		}
		// The key is free again.
		if v, err := g.Do(t.Context(), "k", func() (int, error) { return 2, nil }); v != 2 || err != nil {
			t.Fatalf("after the panic: (%d, %v)", v, err)
		}
	})
}
