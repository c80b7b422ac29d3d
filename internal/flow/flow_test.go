package flow

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"testing/synctest"
)

func TestCredit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCredit(2)
		for range 2 {
			if err := c.Take(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
		}
		// Out of credit, Take waits until some comes.
		took := make(chan error, 1)
		go func() { took <- c.Take(t.Context(), nil) }()
		synctest.Wait()
		select {
		case err := <-took:
			t.Fatalf("Take without credit returned %v", err)
		default:
		}
		c.Add(1)
		if err := <-took; err != nil {
			t.Fatal(err)
		}

		// It stops waiting when its context ends, or its stop channel closes.
		ctx, cancel := context.WithCancel(t.Context())
		go func() { took <- c.Take(ctx, nil) }()
		synctest.Wait()
		cancel()
		if err := <-took; !errors.Is(err, context.Canceled) {
			t.Fatalf("Take returned %v, want context.Canceled", err)
		}
		stop := make(chan struct{})
		go func() { took <- c.Take(t.Context(), stop) }()
		synctest.Wait()
		close(stop)
		if err := <-took; !errors.Is(err, ErrStopped) {
			t.Fatalf("Take returned %v, want ErrStopped", err)
		}
	})
}

func TestCreditDoesNotWrap(t *testing.T) {
	c := NewCredit(math.MaxUint64 - 1)
	c.Add(5)
	if c.n != math.MaxUint64 {
		t.Fatalf("credit %d after adding past the maximum", c.n)
	}
}

func TestWindow(t *testing.T) {
	w := NewWindow(4)
	for i := range 4 {
		if err := w.Receive([]byte{byte(i), 0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Receive([]byte{9}); err == nil {
		t.Fatal("an item beyond the credit was received")
	}
	if items, bytes := w.Buffered(); items != 4 || bytes != 8 {
		t.Fatalf("buffered %d items, %d bytes; want 4, 8", items, bytes)
	}
	// Taking half the window grants it back.
	var grants []int
	for i := range 4 {
		item, grant, err := w.Next(t.Context())
		if err != nil || item[0] != byte(i) {
			t.Fatalf("item %d: %v %v", i, item, err)
		}
		grants = append(grants, grant)
	}
	if want := []int{0, 2, 0, 2}; !slices.Equal(grants, want) {
		t.Fatalf("grants %v, want %v", grants, want)
	}
	// The last item comes without credit, and then the end.
	w.Last([]byte{7})
	if item, grant, err := w.Next(t.Context()); err != nil || item[0] != 7 || grant != 0 {
		t.Fatalf("last item %v, grant %d, %v", item, grant, err)
	}
	if _, _, err := w.Next(t.Context()); err != io.EOF {
		t.Fatalf("after the end: %v, want io.EOF", err)
	}
	if err := w.Wait(t.Context()); err != nil {
		t.Fatalf("Wait after the end: %v", err)
	}
}

func TestWindowEnds(t *testing.T) {
	failed := errors.New("failed")
	tests := []struct {
		name  string
		end   func(*Window) bool
		items int // items Next still returns
		err   error
	}{
		{"finish keeps the items", func(w *Window) bool { return w.Finish(failed) }, 2, failed},
		{"abort drops them", func(w *Window) bool { return w.Abort(failed) }, 0, failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(4)
			_ = w.Receive([]byte{1})
			_ = w.Receive([]byte{2})
			if !tt.end(w) || w.Finish(io.EOF) {
				t.Fatal("the first end did not win")
			}
			for range tt.items {
				if _, grant, err := w.Next(t.Context()); err != nil || grant != 0 {
					t.Fatalf("grant %d, %v after the end", grant, err)
				}
			}
			if _, _, err := w.Next(t.Context()); !errors.Is(err, tt.err) {
				t.Fatalf("Next returned %v, want %v", err, tt.err)
			}
			if tt.items == 0 {
				if err := w.Wait(t.Context()); !errors.Is(err, tt.err) {
					t.Fatalf("Wait returned %v, want %v", err, tt.err)
				}
			}
		})
	}
}

func TestWindowWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWindow(2)
		got := make(chan []byte, 1)
		go func() {
			item, _, _ := w.Next(t.Context())
			got <- item
		}()
		synctest.Wait()
		if err := w.Receive([]byte{5}); err != nil {
			t.Fatal(err)
		}
		if item := <-got; item[0] != 5 {
			t.Fatalf("got %v", item)
		}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- w.Wait(ctx) }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait returned %v, want context.Canceled", err)
		}
	})
}
