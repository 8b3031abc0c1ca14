package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

func TestDoCallsEachIndexOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, c := range []struct{ n, least int }{{0, 1}, {1, 1}, {3, 10}, {1000, 1}, {1000, 2000}} {
		calls := make([]atomic.Int32, c.n)
		Do(c.n, c.least, func(i int) { calls[i].Add(1) })
		for i := range calls {
			if got := calls[i].Load(); got != 1 {
				t.Fatalf("n=%d least=%d: index %d called %d times", c.n, c.least, i, got)
			}
		}
	}
}

func TestDoSmallBatchStaysOnTheCaller(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	order := []int{}
	Do(5, 6, func(i int) { order = append(order, i) }) // no lock: one goroutine
	for i, got := range order {
		if got != i {
			t.Fatalf("calls in order %v, want 0 to 4 in order", order)
		}
	}
	if len(order) != 5 {
		t.Fatalf("%d calls, want 5", len(order))
	}
}
