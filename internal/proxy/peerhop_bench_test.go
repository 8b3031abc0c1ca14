package proxy

import (
	"io"
	"net/http"
	"os"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkPeerHop measures the latency the hop adds on reused connections:
// the same GET through east's proxy to a target in east (direct) and to a
// target in west (east's proxy → west's proxy → target). Each client has a
// connection of its own for each kind and sends them in turn (direct then
// hop, hop then direct), so that both see the same moment's load; the
// difference of their p50s (and p99s) is the hop's cost. sequential is one
// client, parallel16 sixteen at once. load1 is the machine's one-minute
// load average when the run started. Run with
//
//	go test -run XXX -bench PeerHop -benchtime 5000x ./internal/proxy/
func BenchmarkPeerHop(b *testing.B) {
	addr := hopBenchWorld(b)
	for _, clients := range []int{1, 16} {
		name := "sequential"
		if clients > 1 {
			name = "parallel" + strconv.Itoa(clients)
		}
		b.Run(name, func(b *testing.B) {
			load := loadAverage()
			direct, hop := pairs(b, addr, clients)
			reportPairs(b, direct, hop)
			b.ReportMetric(load, "load1")
		})
	}
	b.Run("work", func(b *testing.B) { hopWork(b, addr) })
}

// hopWork reports what one request of each kind costs the whole process
// (client, both proxies, targets): CPU time (user and system, which the
// machine's load does not inflate as it does latency), goroutines started
// and heap allocations, sequentially on reused connections. Run under strace -f -c
// (-test.bench PeerHop/work/hop) it counts the system calls too.
func hopWork(b *testing.B, addr string) {
	samples := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}, {Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	for _, kind := range []string{"direct", "nethttp", "hop"} {
		b.Run(kind, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			b.Cleanup(c.CloseIdleConnections)
			get(b, c, addr, kind+".example")
			rtmetrics.Read(samples)
			before := [3]uint64{samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()}
			cpu := testsync.CPUTime()
			for b.Loop() {
				get(b, c, addr, kind+".example")
			}
			cpu = testsync.CPUTime() - cpu
			rtmetrics.Read(samples)
			n := float64(b.N)
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/op")
			b.ReportMetric(float64(samples[0].Value.Uint64()-before[0])/n, "goroutines/op")
			b.ReportMetric(float64(samples[1].Value.Uint64()-before[1])/n, "heap-allocs/op")
			b.ReportMetric(float64(samples[2].Value.Uint64()-before[2])/n, "heap-B/op")
		})
	}
}

// hopBenchWorld is east and west with a target each and two services at
// east: direct.example (east's target), hop.example (west's) and
// nethttp.example (east's, on the net/http path). It returns
// east's web listener's URL.
func hopBenchWorld(b *testing.B) string {
	w := newHopWorld(b)
	local, remote := identityBackend(b, "east-api"), identityBackend(b, "west-api")
	eastTG, westTG := group("east-api", clusterTarget(b, local, "east")), group("west-api", clusterTarget(b, remote, "west"))
	eastTG.Owner, westTG.Owner = "east", "west"
	snap := &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		TargetGroups: []model.TargetGroup{eastTG, westTG},
		Services: []model.Service{
			edgeService("direct", []string{"direct.example"}, model.Rule{Action: forward(to("east-api", 1))}),
			edgeService("hop", []string{"hop.example"}, model.Rule{Action: forward(to("west-api", 1))}),
			// A retry policy keeps a rule off the fast path: nethttp is
			// direct on the net/http path, which the hop takes at east.
			edgeService("nethttp", []string{"nethttp.example"}, model.Rule{Action: forward(to("east-api", 1)), Retry: &model.Retry{Attempts: 1}}),
		},
	}, Revision: 1}
	w.update(b, snap)
	return "http://" + addrOf(w.east, webPort) + "/"
}

// pairs sends b.N pairs of requests (direct, hop), spread over clients
// concurrent clients, and returns the latencies of each kind.
func pairs(b *testing.B, addr string, clients int) (direct, hop []time.Duration) {
	type client struct {
		direct, hop *http.Client
		lat         [2][]time.Duration
	}
	cs := make([]*client, clients)
	for i := range cs {
		c := &client{
			direct: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
			hop:    &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
		}
		b.Cleanup(c.direct.CloseIdleConnections)
		b.Cleanup(c.hop.CloseIdleConnections)
		// Open each connection before the clock runs.
		get(b, c.direct, addr, "direct.example")
		get(b, c.hop, addr, "hop.example")
		cs[i] = c
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for _, c := range cs {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				first := int(n % 2)
				for k := range 2 {
					kind := (first + k) % 2
					hc, host := c.direct, "direct.example"
					if kind == 1 {
						hc, host = c.hop, "hop.example"
					}
					start := time.Now()
					if !get(b, hc, addr, host) {
						return
					}
					c.lat[kind] = append(c.lat[kind], time.Since(start))
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	for _, c := range cs {
		direct = append(direct, c.lat[0]...)
		hop = append(hop, c.lat[1]...)
	}
	return direct, hop
}

// get sends a GET for host to addr and reads the response; it reports
// false, the benchmark failed, when that did not give a 200.
func get(b *testing.B, c *http.Client, addr, host string) bool {
	req, _ := http.NewRequest(http.MethodGet, addr, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Errorf("%s: status %d", host, resp.StatusCode)
		return false
	}
	return true
}

// reportPairs reports the p50 and p99 of direct and hop and the hop's cost
// (their differences).
func reportPairs(b *testing.B, direct, hop []time.Duration) {
	if len(direct) == 0 || len(hop) == 0 {
		return
	}
	slices.Sort(direct)
	slices.Sort(hop)
	q := func(lat []time.Duration, p int) float64 { return float64(lat[len(lat)*p/100].Microseconds()) }
	b.ReportMetric(q(direct, 50), "direct-p50-µs")
	b.ReportMetric(q(direct, 99), "direct-p99-µs")
	b.ReportMetric(q(hop, 50), "hop-p50-µs")
	b.ReportMetric(q(hop, 99), "hop-p99-µs")
	b.ReportMetric(q(hop, 50)-q(direct, 50), "cost-p50-µs")
	b.ReportMetric(q(hop, 99)-q(direct, 99), "cost-p99-µs")
	b.ReportMetric(0, "ns/op")
}

// loadAverage is the one-minute load average (Linux), or -1.
func loadAverage() float64 {
	s, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _, _ := strings.Cut(string(s), " ")
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return -1
	}
	return v
}
