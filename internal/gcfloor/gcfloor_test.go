package gcfloor

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

func TestPercentFor(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		live, roots, floor uint64
		want               int
	}{
		{5 * mb, 1 * mb, 64 * mb, 983},    // 5 + 6*9.83 = 64
		{10 * mb, 2 * mb, 64 * mb, 450},   // 10 + 12*4.5 = 64
		{1 * mb, 0, 64 * mb, 1600},        // 1 + 1*63 would do, but the runtime's 4 MiB minimum goal, scaled by 16, is 64 already
		{0, 0, 64 * mb, 1600},             // nothing live yet
		{30 * mb, 2 * mb, 64 * mb, 106},   // 30 + 32*1.06 = 64
		{32 * mb, 0, 64 * mb, 100},        // GOGC=100 reaches the floor itself
		{500 * mb, 10 * mb, 64 * mb, 100}, // far above
		{1 * mb, 0, 2 * mb, 100},          // a floor below the runtime's minimum goal changes nothing
	}
	for _, tc := range tests {
		if got := percentFor(tc.live, tc.roots, tc.floor); got != tc.want {
			t.Errorf("percentFor(%d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.floor, got, tc.want)
		}
	}
}

var keep [][]byte

var sink []byte

// churn allocates n bytes of garbage in 32 KiB pieces, like a proxy's
// handshakes.
func churn(n int) {
	for i := 0; i < n; i += 32 << 10 {
		sink = make([]byte, 32<<10)
	}
	sink = nil
}

func metric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gogcBecomes collects until GOGC is want (a collection's cleanup runs
// after it, on a goroutine of its own), for up to a second.
func gogcBecomes(want uint64) bool {
	return testsync.Poll(time.Second, func() bool { runtime.GC(); return metric("/gc/gogc:percent") == want })
}

// With a small live heap, 256 MB of garbage costs a handful of
// collections under Keep(64 MiB) where GOGC=100 spends dozens (on an idle
// machine; fewer when the allocation outruns the collector), and the heap
// goal is about the floor rather than the runtime's 4 MiB; with a live heap above half the floor,
// Keep collects as GOGC=100 does; after stop, GOGC is 100 again.
func TestKeep(t *testing.T) {
	// A GOGC set, even empty, would make Keep step aside.
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	cgroupMemoryMax = filepath.Join(t.TempDir(), "memory.max")
	os.WriteFile(cgroupMemoryMax, []byte("max\n"), 0o644)
	const floor = 64 << 20
	var ms runtime.MemStats
	cycles := func(f func()) uint32 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		n := ms.NumGC
		f()
		runtime.ReadMemStats(&ms)
		return ms.NumGC - n
	}

	plain := cycles(func() { churn(256 << 20) })
	stop := Keep(floor)
	kept := cycles(func() { churn(256 << 20) })
	t.Logf("256 MB of garbage: %d collections at GOGC=100, %d with a 64 MiB floor", plain, kept)
	if kept > 8 {
		t.Errorf("%d collections with the floor (%d without), want at most 8", kept, plain)
	}
	// A collection's cleanup retunes GOGC just after it: until then the
	// goal is the last GOGC's over the new live heap.
	if !testsync.Poll(time.Second, func() bool {
		runtime.GC()
		g := metric("/gc/heap/goal:bytes")
		return g >= floor/2 && g <= floor+floor/8
	}) {
		t.Errorf("heap goal %d with a small live heap, want about the floor %d", metric("/gc/heap/goal:bytes"), floor)
	}

	// A live heap of 40 MB: GOGC=100's goal (80 MB) is above the floor.
	keep = make([][]byte, 40)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	if !gogcBecomes(100) {
		t.Errorf("GOGC %d with 40 MB live, want 100", metric("/gc/gogc:percent"))
	}
	keep = nil
	if !testsync.Poll(time.Second, func() bool { runtime.GC(); return metric("/gc/gogc:percent") > 100 }) {
		t.Errorf("GOGC stays 100 with the live heap small again")
	}

	stop()
	if !gogcBecomes(100) {
		t.Errorf("GOGC %d after stop, want 100", metric("/gc/gogc:percent"))
	}
}

// When GOGC is set, the operator's choice stands.
func TestKeepStepsAsideForGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	stop := Keep(64 << 20)
	defer stop()
	churn(64 << 20)
	if !gogcBecomes(150) {
		t.Errorf("GOGC %d, want the 150 set", metric("/gc/gogc:percent"))
	}
}

// In a cgroup with a memory limit, the floor is at most a quarter of it:
// 128 MiB of limit make a 32 MiB floor of a 64 MiB one, and a limit
// under 16 MiB no floor at all.
func TestKeepWithinCgroupLimit(t *testing.T) {
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	cgroupMemoryMax = filepath.Join(t.TempDir(), "memory.max")
	for _, tc := range []struct {
		limit    string
		min, max uint64
	}{
		{"134217728\n", 24 << 20, 36 << 20},
		{"8388608\n", 0, 8 << 20},
	} {
		if err := os.WriteFile(cgroupMemoryMax, []byte(tc.limit), 0o644); err != nil {
			t.Fatal(err)
		}
		stop := Keep(64 << 20)
		churn(64 << 20)
		if !testsync.Poll(time.Second, func() bool {
			runtime.GC()
			g := metric("/gc/heap/goal:bytes")
			return g >= tc.min && g <= tc.max
		}) {
			t.Errorf("memory.max %q: heap goal %d, want %d to %d", tc.limit, metric("/gc/heap/goal:bytes"), tc.min, tc.max)
		}
		stop()
	}
	if n, ok := cgroupLimit(filepath.Join(t.TempDir(), "missing")); ok {
		t.Errorf("a missing memory.max reads as a limit of %d", n)
	}
}
