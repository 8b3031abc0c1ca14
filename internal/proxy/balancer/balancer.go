// Package balancer holds the proxy's selection algorithms: a weighted pick
// among a rule's backends and a round robin among a target group's targets.
//
// It owns only the arithmetic. It must not know about the model, HTTP or
// health: callers build a Weighted or RoundRobin once per route table and
// then call Pick concurrently from the request path, which never locks.
package balancer

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
)

// MaxScheduleLen is the largest sum of gcd-reduced weights for which
// NewWeighted precomputes an exact schedule. Larger sums fall back to a
// random pick with the same proportions.
const MaxScheduleLen = 4096

// Weighted picks an index with probability proportional to its weight. When
// the reduced weights sum to at most MaxScheduleLen it follows a precomputed
// smooth weighted round robin schedule, so that over every full cycle each
// index is picked exactly in proportion (weights 90/10 give exactly 9:1 over
// every 10 picks) and picks of one index are spread out rather than bunched.
// Otherwise it picks at random from a cumulative weight array.
//
// A Weighted is safe for concurrent use. Its zero value picks nothing.
type Weighted struct {
	// schedule is the precomputed cycle of indices, or nil in random mode.
	schedule []uint16
	next     atomic.Uint64
	// cumulative[i] is the sum of the reduced weights of indices 0..i, used
	// in random mode only.
	cumulative []uint64
}

// NewWeighted returns a picker over len(weights) indices. Indices whose
// weight is zero or negative are never picked; if every weight is, Pick
// always returns -1.
func NewWeighted(weights []int32) *Weighted {
	var g, sum uint64
	for _, w := range weights {
		if w > 0 {
			g = gcd(g, uint64(w))
		}
	}
	if g == 0 {
		return &Weighted{}
	}
	reduced := make([]uint64, len(weights))
	for i, w := range weights {
		if w > 0 {
			reduced[i] = uint64(w) / g
			sum += reduced[i]
		}
	}
	if sum > MaxScheduleLen {
		cumulative := make([]uint64, len(reduced))
		var acc uint64
		for i, w := range reduced {
			acc += w
			cumulative[i] = acc
		}
		return &Weighted{cumulative: cumulative}
	}
	return &Weighted{schedule: smoothSchedule(reduced, sum)}
}

// smoothSchedule runs nginx's smooth weighted round robin for one full cycle
// of sum picks: every pick raises each index's credit by its weight, takes
// the index with the most credit (the lowest index on a tie) and charges it
// sum. Since sum <= MaxScheduleLen, every index with a non-zero weight fits
// in a uint16.
func smoothSchedule(weights []uint64, sum uint64) []uint16 {
	credit := make([]int64, len(weights))
	schedule := make([]uint16, sum)
	for n := range schedule {
		best := -1
		for i, w := range weights {
			if w == 0 {
				continue
			}
			credit[i] += int64(w)
			if best < 0 || credit[i] > credit[best] {
				best = i
			}
		}
		credit[best] -= int64(sum)
		schedule[n] = uint16(best)
	}
	return schedule
}

// Pick returns the next index, or -1 when no index has a positive weight.
func (w *Weighted) Pick() int {
	switch {
	case len(w.schedule) == 1:
		return int(w.schedule[0])
	case w.schedule != nil:
		n := w.next.Add(1) - 1
		return int(w.schedule[n%uint64(len(w.schedule))])
	case w.cumulative != nil:
		r := rand.Uint64N(w.cumulative[len(w.cumulative)-1])
		// The first index whose cumulative weight exceeds r; indices with a
		// zero weight share their predecessor's sum and are never found first.
		i, _ := slices.BinarySearch(w.cumulative, r+1)
		return i
	}
	return -1
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// RoundRobin cycles through n items. It is safe for concurrent use and its
// zero value is ready.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick returns the next index in [0, n), or -1 when n is zero.
func (r *RoundRobin) Pick(n int) int {
	switch n {
	case 0:
		return -1
	case 1:
		return 0
	}
	return int((r.next.Add(1) - 1) % uint64(n))
}
