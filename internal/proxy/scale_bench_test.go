package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

// scaleSnapshot is issue 15's shape: an edge network with n services, each
// a host name, a header-and-prefix rule and a catch-all rule, forwarding to
// a target group of its own with targets loopback targets (health checks
// off, so that no check runs under the benchmark). Every object has a
// revision of its own, as the control plane gives them.
func scaleSnapshot(n, targets int) *model.Snapshot {
	off := false
	snap := &model.Snapshot{Revision: int64(2*n + 1), Objects: model.Objects{
		Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "edge", Revision: 1}, Mode: model.ModeEdge}},
	}}
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		tg := model.TargetGroup{Meta: model.Meta{Name: name, Owner: cluster, Revision: int64(2 + i)}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, Port: 9000,
			HealthCheck: model.HealthCheck{Enabled: &off}}
		for j := range targets {
			tg.Targets = append(tg.Targets, model.Target{Address: fmt.Sprintf("127.%d.%d.%d", 1+i/250, i%250, 1+j), State: model.TargetActive, Cluster: cluster})
		}
		snap.TargetGroups = append(snap.TargetGroups, tg)
		snap.Services = append(snap.Services, scaleService(i, fmt.Sprintf("%s.example.com", name), int64(2+n+i)))
	}
	return snap
}

func scaleService(i int, host string, revision int64) model.Service {
	name := fmt.Sprintf("svc-%05d", i)
	fwd := model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: name, Weight: 1}}}}
	return model.Service{
		Meta:          model.Meta{Name: name, Owner: cluster, Revision: revision},
		Network:       "edge",
		CustomDomains: []string{host},
		Listeners:     []model.Listener{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}},
		Rules: []model.Rule{
			{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/api"},
				Headers: []model.ValueMatch{{Type: model.ValueExact, Name: "x-canary", Value: "1"}}}}, Action: fwd},
			{Action: fwd},
		},
	}
}

// BenchmarkUpdateOneService is one change at 10,000 services and 100,000
// targets: one service's host name changes (as bench/scale's change does)
// and the proxy takes the whole snapshot.
func BenchmarkUpdateOneService(b *testing.B) {
	const n = 10_000
	snap := scaleSnapshot(n, 10)
	p := newProxyWith(b, Config{})
	if err := p.Update(snap); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := testsync.CPUTime()
	for i := 0; b.Loop(); i++ {
		next := *snap
		next.Revision++
		next.Services = append([]model.Service(nil), snap.Services...)
		k := i * 7919 % n
		next.Services[k] = scaleService(k, fmt.Sprintf("moved-%d.example.com", next.Revision), next.Revision)
		if err := p.Update(&next); err != nil {
			b.Fatal(err)
		}
		snap = &next
	}
	// CPU time (garbage collection included) says more than wall time on
	// a loaded machine.
	b.ReportMetric(float64(testsync.CPUTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkLiveHeapAtScale measures what the proxy keeps live at issue
// 15's size: the heap in use after a collection, once the snapshot is
// built (snapshot-B/service: what the follow hands over) and once the
// proxy took it (proxy-B/service: the compiled table, the health state
// of every target and the rules' metrics data, the snapshot excluded).
// Checks are enabled, as the Lattice defaults have them, but the
// checker's second is an hour, so none runs under the benchmark.
func BenchmarkLiveHeapAtScale(b *testing.B) {
	const n = 10_000
	live := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var snapBytes, proxyBytes uint64
	for b.Loop() {
		before := live()
		snap := scaleSnapshot(n, 10)
		for i := range snap.TargetGroups {
			snap.TargetGroups[i].HealthCheck.Enabled = nil
		}
		withSnap := live()
		p := New(Config{Cluster: cluster, BindAddress: "127.0.0.1", test: testKnobs{healthSecond: time.Hour}})
		p.listen = func(router.Bind) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
		if err := p.Update(snap); err != nil {
			b.Fatal(err)
		}
		withProxy := live()
		snapBytes, proxyBytes = withSnap-before, withProxy-withSnap
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p.Shutdown(ctx)
		cancel()
		runtime.KeepAlive(snap)
	}
	b.ReportMetric(float64(snapBytes)/n, "snapshot-B/service")
	b.ReportMetric(float64(proxyBytes)/n, "proxy-B/service")
}

// BenchmarkScrapeAtScale is one scrape of /metrics at issue 15's size: a
// series of healthy and unhealthy counts and of ejections per target group
// (10,000 of each), with the Go and process collectors' and the few of the
// rules that had a request.
func BenchmarkScrapeAtScale(b *testing.B) {
	const n = 10_000
	snap := scaleSnapshot(n, 10)
	p := newProxyWith(b, Config{AdminAddress: "127.0.0.1:0", test: testKnobs{healthSecond: time.Hour}})
	if err := p.Update(snap); err != nil {
		b.Fatal(err)
	}
	c := &http.Client{}
	size := 0
	b.ReportAllocs()
	cpu := testsync.CPUTime()
	for b.Loop() {
		resp, err := c.Get(p.adminURL("/metrics"))
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("scrape: %d, %v", resp.StatusCode, err)
		}
		size = len(body)
	}
	b.ReportMetric(float64(testsync.CPUTime()-cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(size), "bytes/scrape")
}
