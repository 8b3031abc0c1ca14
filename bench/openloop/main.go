// Command openloop is the load generator of the proxy benchmarks for what
// wrk does not measure (docs/benchmarks.md, bench/openloop.sh and
// bench/protocols.sh run it):
//
//	openloop http -url URL -rate R ...       HTTP/1.1 at a constant arrival rate (open loop)
//	openloop tls -addr HOST:PORT ...         TLS handshakes per second, new or resumed
//	openloop grpc -addr HOST:PORT ...        gRPC unary calls or streamed messages
//	openloop grpc-server -listen HOST:PORT   the gRPC backend (grpc.testing.BenchmarkService)
//
// The http mode sends request i at start + i/rate whatever happened to the
// ones before, and measures each request's latency from that scheduled time,
// not from when a connection became free to send it: a stalled proxy makes
// every request scheduled during the stall late, as users would see it, and
// the generator does not slow down with it (no coordinated omission).
//
// Every mode ends with one line of key=value pairs (rate, p50, p99, p99.9
// in ms, errors, ...) that the scripts read.
package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: openloop http|tls|grpc|grpc-server [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "http":
		err = httpCmd(os.Args[2:])
	case "tls":
		err = tlsCmd(os.Args[2:])
	case "grpc":
		err = grpcCmd(os.Args[2:])
	case "grpc-server":
		err = grpcServerCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openloop:", err)
		os.Exit(1)
	}
}

// maxSamples bounds the latencies kept (8 bytes each); a run asking for
// more is refused rather than growing without limit.
const maxSamples = 50_000_000

// recorder collects one worker's latencies; workers merge theirs at the end.
type recorder struct {
	lat []time.Duration
	// index is each latency's place in the timetable, kept for -dump.
	index []int
	// port is each request's connection's local port, kept for -dump.
	port []uint16
	// late is how long after its scheduled time each request was
	// written, kept for -dump.
	late   []time.Duration
	errors int
	// firstErr is kept to say what went wrong.
	firstErr error
}

func (r *recorder) fail(err error) {
	r.errors++
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// result is what a run reports.
type result struct {
	mode    string
	elapsed time.Duration
	lat     []time.Duration
	errors  int
	extra   []string // more key=value pairs
	err     error
	// sent is every request the run sent, warm-up included, when more
	// than those measured: the generator's CPU is over all of them.
	sent int
}

func merge(rs []*recorder) (lat []time.Duration, errors int, first error) {
	for _, r := range rs {
		lat = append(lat, r.lat...)
		errors += r.errors
		if first == nil {
			first = r.firstErr
		}
	}
	return lat, errors, first
}

// closedLoop runs n workers, each with its own recorder, until d has
// passed (each sending its next request only once the last is answered),
// and returns what they measured together; the caller names the mode.
func closedLoop(n int, d time.Duration, work func(w int, deadline time.Time, r *recorder)) result {
	recs := make([]*recorder, n)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range recs {
		r := &recorder{}
		recs[w] = r
		wg.Go(func() { work(w, deadline, r) })
	}
	wg.Wait()
	lat, nerr, first := merge(recs)
	return result{elapsed: time.Since(start), lat: lat, errors: nerr, err: first}
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

// print writes a human line to stderr and the key=value line to stdout.
func (r result) print() {
	slices.Sort(r.lat)
	rate := 0.0
	if r.elapsed > 0 {
		rate = float64(len(r.lat)) / r.elapsed.Seconds()
	}
	if r.err != nil {
		fmt.Fprintf(os.Stderr, "openloop %s: %d errors, the first: %v\n", r.mode, r.errors, r.err)
	}
	kv := []string{
		"mode=" + r.mode,
		"n=" + fmt.Sprint(len(r.lat)),
		fmt.Sprintf("rate=%.1f", rate),
		"p50=" + ms(quantile(r.lat, 0.50)),
		"p99=" + ms(quantile(r.lat, 0.99)),
		"p999=" + ms(quantile(r.lat, 0.999)),
		"max=" + ms(quantile(r.lat, 1)),
		"errors=" + fmt.Sprint(r.errors),
	}
	// The generator's own CPU per answer, to tell whether it kept up.
	var ru syscall.Rusage
	if n := max(r.sent, len(r.lat)); syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil && n > 0 {
		t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		kv = append(kv, fmt.Sprintf("self_cpu_us=%.1f", float64(t)/1e3/float64(n)))
		// How long the generator's threads waited for a CPU while
		// runnable (Linux schedstat): where it nears the latencies, they
		// are the generator's.
		if wait, ok := runQueueWait(); ok {
			kv = append(kv, fmt.Sprintf("self_runq_us=%.2f", float64(wait)/1e3/float64(n)))
		}
	}
	kv = append(kv, r.extra...)
	fmt.Println(strings.Join(kv, " "))
}

// runQueueWait sums the time this process's threads spent runnable but
// waiting for a CPU (the second field of /proc/self/task/*/schedstat).
func runQueueWait() (time.Duration, bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, false
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(f[1], &ns); err == nil {
			sum += time.Duration(ns)
		}
	}
	return sum, true
}
