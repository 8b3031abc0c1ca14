package testsync

import (
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// CPUTime is the CPU time, user and system, the process has used (0 if
// the kernel does not say). Benchmarks report it per operation: load
// inflates it less than wall time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// HeapPeak samples the heap in use (every 20 ms, after a collection at
// the start) until stop is called, and stop returns the most it saw above
// what was in use at the start. Calling stop again returns the same.
func HeapPeak() (stop func() uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
		}
	})
	return sync.OnceValue(func() uint64 { close(done); wg.Wait(); return peak.Load() })
}
