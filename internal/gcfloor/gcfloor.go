// Package gcfloor keeps a process with a small live heap from collecting
// garbage every few megabytes of allocation. With the default GOGC of
// 100 the runtime collects whenever the heap doubles: a proxy whose live
// heap is 5 MB, allocating about 45 KB per TLS handshake (most of it
// crypto/tls's), collects a dozen times a second at a couple of thousand
// handshakes a second, and each collection's fixed work (stacks, globals,
// the background workers taking a quarter of the CPUs) is then a fifth of
// its CPU. Keep sets GOGC after every collection so that the next one
// waits for the heap to reach a floor, and goes back to 100 once the
// goal GOGC=100 gives is above the floor: a small process trades some megabytes
// for CPU, a large one is collected as before. It touches nothing
// else of the process.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultFloor is the heap size the trellis commands let a process reach
// before collecting: 64 MiB.
const DefaultFloor = 64 << 20

// heapMinimum is the runtime's smallest heap goal at GOGC=100, which it
// scales with GOGC: a GOGC above floor/heapMinimum*100 would put the goal
// above the floor whatever the live heap.
const heapMinimum = 4 << 20

// keeper re-tunes GOGC at the end of every collection: a sentinel object
// is made unreachable and its cleanup runs after the collection that
// finds it, then a new sentinel is made for the next.
type keeper struct {
	floor   uint64
	sample  []metrics.Sample
	stopped atomic.Bool
	// mu serializes tune with stop; percent is the GOGC last set.
	mu      sync.Mutex
	percent int
}

type sentinel struct{ _ *int }

// Keep makes the garbage collector wait for the heap to reach floor bytes
// while the heap goal of GOGC=100 is below it, for the rest of the process or
// until stop, which sets GOGC back to 100. When the GOGC variable is set
// the operator's choice stands and Keep does nothing.
//
// In a cgroup with a memory limit (cgroup v2's memory.max) the floor is at
// most a quarter of it, so that the floor cannot be what runs a small
// container out of memory.
func Keep(floor uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	if limit, ok := cgroupLimit(cgroupMemoryMax); ok {
		floor = min(floor, limit/4)
	}
	if floor == 0 {
		return func() {}
	}
	k := &keeper{floor: floor, percent: 100, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
	}}
	k.tune()
	k.arm()
	return sync.OnceFunc(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.stopped.Store(true)
		debug.SetGCPercent(100)
		k.percent = 100
	})
}

// cgroupMemoryMax is where cgroup v2 shows the process's memory limit.
var cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// cgroupLimit reads a memory.max file: a number of bytes, or "max" (no
// limit, reported as none).
func cgroupLimit(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

func (k *keeper) arm() {
	runtime.AddCleanup(&sentinel{}, func(k *keeper) {
		if k.stopped.Load() {
			return
		}
		k.tune()
		k.arm()
	}, k)
}

// tune sets GOGC so that the next collection comes when the heap reaches
// the floor. The runtime's goal is live + (live + stacks + globals) *
// GOGC/100, with the stacks and globals the last collection scanned.
func (k *keeper) tune() {
	metrics.Read(k.sample)
	var n [3]uint64
	for i, s := range k.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			n[i] = s.Value.Uint64()
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped.Load() {
		return
	}
	if p := percentFor(n[0], n[1]+n[2], k.floor); p != k.percent {
		debug.SetGCPercent(p)
		k.percent = p
	}
}

// percentFor is the GOGC that puts the next collection at floor bytes of
// heap for a live heap of live bytes and roots (stacks and globals) of
// roots bytes: at least 100, and no more than keeps the runtime's minimum
// goal at the floor.
func percentFor(live, roots, floor uint64) int {
	most := max(floor*100/heapMinimum, 100)
	if live+roots == 0 {
		return int(most)
	}
	if live+(live+roots) >= floor {
		return 100
	}
	return int(max(min((floor-live)*100/(live+roots), most), 100))
}
