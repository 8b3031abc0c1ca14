// Command gotrace-waits reads a Go runtime trace (the admin listener's
// /debug/pprof/trace) and prints how long goroutines waited to run once
// ready (runnable -> running), grouped by what they blocked or yielded on
// before: the HTTP/2 server's hand-off of a stream to a worker
// (nextStream), the target's answer (rawSocket), the yield before a flush
// (unlockWriteYield), the target pool's and a connection's write lock
// (connPool, lockWrite), and the runtime's other wait reasons; and how long
// goroutines were blocked on those two locks. docs/benchmarks.md, "HTTP/2's
// p99". A module of its own, so that golang.org/x/exp stays out of
// Trellis's go.mod.
//
//	go run . TRACE
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

type gstate struct {
	since trace.Time
	state trace.GoState
	cause string
}

func hasFunc(s trace.Stack, subs ...string) string {
	for f := range s.Frames() {
		for _, sub := range subs {
			if strings.Contains(f.Func, sub) {
				return sub
			}
		}
	}
	return ""
}

func pct(ds []float64, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	return ds[int(float64(len(ds)-1)*p)]
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gotrace-waits TRACE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r, err := trace.NewReader(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gs := map[trace.GoID]*gstate{}
	// A goroutine first seen running has no cause ("").
	runnable := map[string][]float64{}
	blocked := map[string][]float64{}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		g := gs[id]
		if g == nil {
			g = &gstate{since: ev.Time(), state: from}
			gs[id] = g
		}
		d := float64(ev.Time()-g.since) / 1e6
		switch {
		case g.state == trace.GoRunnable && to == trace.GoRunning:
			runnable[g.cause] = append(runnable[g.cause], d)
		case g.state == trace.GoWaiting && to == trace.GoRunnable:
			if strings.HasPrefix(g.cause, "woken:mutex ") {
				blocked[g.cause] = append(blocked[g.cause], d)
			}
		}
		switch {
		case from == trace.GoRunning && to == trace.GoRunnable:
			if hasFunc(st.Stack, "unlockWriteYield") != "" {
				g.cause = "yield (unlockWriteYield)"
			} else {
				g.cause = "preempted or other yield"
			}
		case from == trace.GoRunning && to == trace.GoWaiting:
			if w := hasFunc(st.Stack, "connPool", "lockWrite"); w != "" {
				g.cause = "woken:mutex " + w
			} else {
				g.cause = "woken:" + st.Reason
				if st.Reason == "chan receive" || st.Reason == "network" {
					for f := range st.Stack.Frames() {
						if !strings.HasPrefix(f.Func, "runtime.") && !strings.HasPrefix(f.Func, "internal/") && !strings.HasPrefix(f.Func, "net.") && !strings.HasPrefix(f.Func, "syscall") {
							fn := f.Func
							if i := strings.LastIndex(fn, "/"); i >= 0 {
								fn = fn[i+1:]
							}
							g.cause += " " + fn
							break
						}
					}
				}
			}
		case from == trace.GoNotExist || from == trace.GoUndetermined:
			if to == trace.GoRunnable {
				g.cause = "new or undetermined"
			}
		}
		g.state, g.since = to, ev.Time()
	}
	show := func(title string, m map[string][]float64) {
		fmt.Println(title)
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			ds := m[k]
			sort.Float64s(ds)
			over, sum := 0, 0.0
			for _, x := range ds {
				if x >= 1 {
					over++
					sum += x
				}
			}
			fmt.Printf("  %-34s n=%7d p50=%.3f p99=%.3f p99.9=%.3f max=%.1f ms; >=1ms: %d (%.0f ms in all)\n",
				k, len(ds), pct(ds, .5), pct(ds, .99), pct(ds, .999), ds[len(ds)-1], over, sum)
		}
	}
	show("runnable -> running wait, by what made the goroutine runnable:", runnable)
	show("blocked on the suspect mutexes (waiting -> runnable):", blocked)
}
