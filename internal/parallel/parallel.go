// Package parallel spreads a batch of independent calls over the
// processors: the large batches of a cold start (thousands of documents or
// objects, each decoded or encoded on its own) take their time divided by
// GOMAXPROCS instead of the sum.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Do calls f(i) for every i in [0, n) and returns when every call has.
// When n is at least least, the calls run on up to GOMAXPROCS goroutines,
// each taking the next index until none is left, so f must be safe to call
// concurrently for different i; below it they run one after another on
// the caller's goroutine, where a batch is too small to repay starting
// goroutines.
func Do(n, least int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if n < least || workers < 2 {
		for i := range n {
			f(i)
		}
		return
	}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
