package main

import (
	"math"
	"testing"

	"golang.org/x/exp/trace"
)

const ms = trace.Time(1_000_000)

func TestPTime(t *testing.T) {
	// One wait of 2 ms. P0 runs a 0.6 ms slice that began before it (0.1
	// ms inside), then two short ones of 0.1 ms; P1 runs a long slice
	// over the wait's second half, after one that ended before it.
	waits := []span{{10 * ms, 12 * ms}}
	running := map[trace.ProcID][]span{
		0: {{9*ms + ms/2, 10*ms + ms/10}, {10*ms + ms/5, 10*ms + ms*3/10}, {11 * ms, 11*ms + ms/10}},
		1: {{8 * ms, 9 * ms}, {11 * ms, 13 * ms}},
	}
	short, long, idle := pTime(waits, running)
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"short", short, 0.2},
		{"long", long, 0.1 + 1},
		{"idle", idle, 2 - 0.3 + 1},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v ms, want %v", c.name, c.got, c.want)
		}
	}
}

func TestSlowest(t *testing.T) {
	// 200 requests of 1 ms and two slow ones: the slowest 1 % are the two.
	var done []cycle
	for range 198 {
		done = append(done, cycle{total: ms, run: 1})
	}
	done = append(done, cycle{total: 10 * ms, tgt: 8, run: 2}, cycle{total: 20 * ms, tgt: 16, targetRunq: 2, run: 2})
	m := slowest(done)
	if m.total != 15*ms || m.tgt != 12 || m.targetRunq != 1 || m.run != 2 {
		t.Errorf("slowest = %+v, want total 15 ms, target 12, target run queue 1, running 2", m)
	}
}
