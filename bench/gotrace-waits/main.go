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
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

type gstate struct {
	since trace.Time
	state trace.GoState
	cause string
	proc  trace.ProcID
}

// cycle is one request's time in the proxy as a goroutine serving a
// client connection sees it: from the poller making it ready with the
// client's bytes to its next wait for the client. Its parts: waiting to
// run after each wake (client's bytes, target's answer), running (system
// calls included), and waiting for the target.
type cycle struct {
	open bool
	// start is when the client's bytes made the goroutine ready, total
	// the time from then to its next wait for the client.
	start, total                     trace.Time
	clientRunq, targetRunq, run, tgt float64
	// pollGap is how long before the target's answer was seen the
	// poller had last been asked (a bound on how late the poller saw it).
	pollGap  float64
	onClient bool
}

// clientWait reports whether a goroutine blocked on the network with
// stack s waits for its client (the next request), not for a target:
// Trellis's fast path reads clients through idleConn; go-minimal
// (bench/ceiling/goroutine) reads the target's answer in answer, the
// client's head in serve.
func clientWait(s trace.Stack) bool {
	for f := range s.Frames() {
		switch {
		case strings.Contains(f.Func, "idleConn"):
			return true
		case f.Func == "main.answer":
			return false
		case f.Func == "main.serve":
			return true
		}
	}
	return false
}

// span is a goroutine's time running on a P, or waiting to run.
type span struct{ from, to trace.Time }

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
	// slices are how long goroutines ran at a time: a slice far longer
	// than a request's work is a thread the kernel took the CPU from (or
	// a goroutine that does not yield). ranges sum the runtime's ranges
	// (GC mark, stop-the-world, mark assists) by name.
	var slices []float64
	type rng struct {
		n        int
		sum, max float64
	}
	ranges := map[string]*rng{}
	open := map[string]trace.Time{}
	// late counts the waits of 1 ms or more per 10 ms window of the
	// trace: whether the tail comes in bursts or spread out.
	late := map[int64]int{}
	var first, last trace.Time
	// running holds each P's running spans in order; waits the runnable
	// -> running waits of 1 ms or more, for what the Ps did meanwhile.
	running := map[trace.ProcID][]span{}
	var waits []span
	cycles := map[trace.GoID]*cycle{}
	// polls: the times the poller made goroutines ready, one per batch
	// (wakes within 5 µs of each other are one batch).
	var prevPoll, curPoll trace.Time
	var done []cycle
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if first == 0 {
			first = ev.Time()
		}
		last = ev.Time()
		switch ev.Kind() {
		case trace.EventRangeBegin, trace.EventRangeActive:
			r := ev.Range()
			open[r.Name+"/"+r.Scope.String()] = ev.Time()
			continue
		case trace.EventRangeEnd:
			r := ev.Range()
			k := r.Name + "/" + r.Scope.String()
			if t0, ok := open[k]; ok {
				d := float64(ev.Time()-t0) / 1e6
				x := ranges[r.Name]
				if x == nil {
					x = &rng{}
					ranges[r.Name] = x
				}
				x.n++
				x.sum += d
				x.max = max(x.max, d)
				delete(open, k)
			}
			continue
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
			if d >= 1 {
				late[int64(ev.Time()-first)/1e7]++
				waits = append(waits, span{g.since, ev.Time()})
			}
		case g.state == trace.GoRunning && to != trace.GoRunning:
			slices = append(slices, d)
			fallthrough
		case g.state == trace.GoSyscall && to != trace.GoSyscall:
			// A goroutine in a system call holds its P (until sysmon
			// retakes it: not told apart here).
			if g.proc != trace.NoProc {
				running[g.proc] = append(running[g.proc], span{g.since, ev.Time()})
			}
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
		if g.state == trace.GoWaiting && to == trace.GoRunnable && g.cause == "woken:network" || strings.HasPrefix(g.cause, "woken:network ") {
			if ev.Time()-curPoll > 5000 {
				prevPoll, curPoll = curPoll, ev.Time()
			}
		}
		c := cycles[id]
		if c == nil {
			c = &cycle{}
			cycles[id] = c
		}
		switch {
		case g.state == trace.GoWaiting && to == trace.GoRunnable && c.onClient:
			*c = cycle{open: true, start: ev.Time()}
		case g.state == trace.GoWaiting && to == trace.GoRunnable:
			c.tgt += d
			c.pollGap = float64(ev.Time()-prevPoll) / 1e6
		case g.state == trace.GoRunnable && to == trace.GoRunning && c.tgt == 0:
			c.clientRunq += d
		case g.state == trace.GoRunnable && to == trace.GoRunning:
			c.targetRunq += d
		case g.state == trace.GoRunning || g.state == trace.GoSyscall:
			c.run += d
		}
		if from == trace.GoRunning && to == trace.GoWaiting && st.Reason == "network" {
			c.onClient = clientWait(st.Stack)
			if c.onClient && c.open {
				c.total = ev.Time() - c.start
				done = append(done, *c)
			}
		}
		g.state, g.since = to, ev.Time()
		if to == trace.GoRunning || to == trace.GoSyscall {
			g.proc = ev.Proc()
		}
	}
	show := func(title string, m map[string][]float64) {
		fmt.Println(title)
		for _, k := range sortedKeys(m) {
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
	show("running slices (running -> not running):", map[string][]float64{"all": slices})
	fmt.Println("runtime ranges:")
	for _, k := range sortedKeys(ranges) {
		x := ranges[k]
		fmt.Printf("  %-34s n=%d sum=%.1f max=%.2f ms\n", k, x.n, x.sum, x.max)
	}
	explain(waits, running)
	requests(done)
	var counts []int
	all := 0
	for _, c := range late {
		counts = append(counts, c)
		all += c
	}
	sort.Sort(sort.Reverse(sort.IntSlice(counts)))
	top := 0
	for i := 0; i < len(counts) && i < len(counts)/10+1; i++ {
		top += counts[i]
	}
	fmt.Printf("waits >= 1 ms: %d in %d of %d 10-ms windows; the busiest tenth of those windows holds %d\n",
		all, len(late), int64(last-first)/1e7+1, top)
}

// explain prints, for the long waits, what the Ps did meanwhile (pTime).
func explain(waits []span, running map[trace.ProcID][]span) {
	short, long, idle := pTime(waits, running)
	all := short + long + idle
	if all == 0 {
		return
	}
	fmt.Printf("during the %d waits >= 1 ms, P time: %.0f %% running slices < 0.5 ms, %.0f %% in slices >= 0.5 ms, %.0f %% running nothing (%d Ps)\n",
		len(waits), 100*short/all, 100*long/all, 100*idle/all, len(running))
}

// pTime sums, over the waits and the Ps, the time (ms) the Ps spent
// running other goroutines in short slices (the run queue: work ahead of
// the waiter), in slices of 0.5 ms or more (a thread the kernel
// descheduled while it held a P, or a goroutine that did not yield), and
// running nothing (no thread took the waiter: a wake-up the kernel was
// late with). Each P's spans are in order and do not overlap.
func pTime(waits []span, running map[trace.ProcID][]span) (short, long, idle float64) {
	for _, w := range waits {
		for _, ss := range running {
			i := sort.Search(len(ss), func(i int) bool { return ss[i].to > w.from })
			covered := trace.Time(0)
			for ; i < len(ss) && ss[i].from < w.to; i++ {
				o := min(ss[i].to, w.to) - max(ss[i].from, w.from)
				covered += o
				if ss[i].to-ss[i].from >= 500_000 {
					long += float64(o) / 1e6
				} else {
					short += float64(o) / 1e6
				}
			}
			idle += float64(w.to-w.from-covered) / 1e6
		}
	}
	return short, long, idle
}

// requests prints the distribution of the requests' time in the proxy
// and, for the slowest 1 %, where that time went on average (slowest).
func requests(done []cycle) {
	if len(done) == 0 {
		return
	}
	sort.Slice(done, func(i, j int) bool { return done[i].total < done[j].total })
	ms := func(t trace.Time) float64 { return float64(t) / 1e6 }
	n := len(done)
	fmt.Printf("requests in the proxy (client's bytes ready -> next wait for the client): n=%d p50=%.3f p99=%.3f p99.9=%.3f max=%.1f ms\n",
		n, ms(done[n/2].total), ms(done[n*99/100].total), ms(done[n*999/1000].total), ms(done[n-1].total))
	m := slowest(done)
	fmt.Printf("  the slowest 1 %% (%d), mean %.3f ms: ready to run after the client's bytes %.3f, after the target's answer %.3f, running %.3f, waiting for the target %.3f (of it at most %.3f for the poller to look)\n",
		n-n*99/100, ms(m.total), m.clientRunq, m.targetRunq, m.run, m.tgt, m.pollGap)
}

// slowest returns the mean of the slowest 1 % of done, which is sorted by
// total.
func slowest(done []cycle) cycle {
	slow := done[len(done)*99/100:]
	var m cycle
	for _, c := range slow {
		m.total += c.total
		m.clientRunq += c.clientRunq
		m.targetRunq += c.targetRunq
		m.run += c.run
		m.tgt += c.tgt
		m.pollGap += c.pollGap
	}
	k := float64(len(slow))
	m.total = trace.Time(float64(m.total) / k)
	m.clientRunq /= k
	m.targetRunq /= k
	m.run /= k
	m.tgt /= k
	m.pollGap /= k
	return m
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
