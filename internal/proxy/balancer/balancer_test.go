package balancer

import (
	"math"
	"slices"
	"sync"
	"testing"
)

func picks(w *Weighted, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = w.Pick()
	}
	return out
}

func TestWeightedSchedule(t *testing.T) {
	tests := []struct {
		name    string
		weights []int32
		// want is one full cycle of picks, repeated by the test.
		want []int
	}{
		{"single", []int32{7}, []int{0}},
		{"even split alternates", []int32{50, 50}, []int{0, 1}},
		{"reduced by gcd", []int32{200, 100}, []int{0, 1, 0}},
		{"smooth, not bunched", []int32{5, 1, 1}, []int{0, 0, 1, 0, 2, 0, 0}},
		{"zero weight skipped", []int32{0, 3, 0, 1}, []int{1, 1, 3, 1}},
		{"all zero", []int32{0, 0}, []int{-1}},
		{"negative is zero", []int32{-4, 2}, []int{1}},
		{"empty", nil, []int{-1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWeighted(tt.weights)
			var want []int
			for range 3 {
				want = append(want, tt.want...)
			}
			if got := picks(w, len(want)); !slices.Equal(got, want) {
				t.Errorf("picks = %v, want %v", got, want)
			}
		})
	}
}

// TestWeightedExactWindows checks that every full cycle of a schedule holds
// each index exactly in proportion to its weight.
func TestWeightedExactWindows(t *testing.T) {
	for _, weights := range [][]int32{{90, 10}, {1, 2, 3, 4}, {1000, 1}, {0, 4095, 1}} {
		w := NewWeighted(weights)
		var sum int
		for _, x := range weights {
			sum += int(x)
		}
		g := 0
		for _, x := range weights {
			g = int(gcd(uint64(g), uint64(x)))
		}
		cycle := sum / g
		got := picks(w, 3*cycle)
		for start := 0; start < len(got); start += cycle {
			counts := make([]int, len(weights))
			for _, i := range got[start : start+cycle] {
				counts[i]++
			}
			for i, x := range weights {
				if counts[i] != int(x)/g {
					t.Fatalf("weights %v: cycle at %d picked index %d %d times, want %d", weights, start, i, counts[i], int(x)/g)
				}
			}
		}
	}
}

// TestWeightedRandom covers sums too large to schedule: zero weights are
// never picked and the proportions hold within a wide statistical margin.
func TestWeightedRandom(t *testing.T) {
	weights := []int32{3001, 0, 2000}
	w := NewWeighted(weights)
	if w.schedule != nil {
		t.Fatal("expected the random fallback for a reduced sum above MaxScheduleLen")
	}
	const n = 20000
	counts := make([]int, len(weights))
	for range n {
		counts[w.Pick()]++
	}
	if counts[1] != 0 {
		t.Errorf("zero-weight index picked %d times", counts[1])
	}
	if share := float64(counts[0]) / n; math.Abs(share-3001.0/5001) > 0.03 {
		t.Errorf("index 0 share = %.3f, want about %.3f", share, 3001.0/5001)
	}
}

// TestWeightedConcurrent checks that concurrent pickers together still get
// exact proportions: the schedule position is one atomic counter.
func TestWeightedConcurrent(t *testing.T) {
	w := NewWeighted([]int32{90, 10})
	const workers, each = 4, 250
	counts := make([][2]int, workers)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() {
			for range each {
				counts[k][w.Pick()]++
			}
		})
	}
	wg.Wait()
	var total [2]int
	for _, c := range counts {
		total[0] += c[0]
		total[1] += c[1]
	}
	if total != [2]int{900, 100} {
		t.Errorf("counts = %v, want [900 100]", total)
	}
}

func TestRoundRobin(t *testing.T) {
	var r RoundRobin
	if got := r.Pick(0); got != -1 {
		t.Errorf("Pick(0) = %d, want -1", got)
	}
	if got := r.Pick(1); got != 0 {
		t.Errorf("Pick(1) = %d, want 0", got)
	}
	var got []int
	for range 6 {
		got = append(got, r.Pick(3))
	}
	if want := []int{0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("picks = %v, want %v", got, want)
	}
}

func BenchmarkWeightedPick(b *testing.B) {
	w := NewWeighted([]int32{90, 10})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Pick()
		}
	})
}
