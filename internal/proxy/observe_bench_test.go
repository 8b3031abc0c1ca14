package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
)

// nullWriter is a ResponseWriter that keeps nothing.
type nullWriter struct{ h http.Header }

func (w nullWriter) Header() http.Header         { return w.h }
func (w nullWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w nullWriter) WriteHeader(int)             {}

// BenchmarkRequestOverhead measures what observing a request costs: the
// request path of a fixed-response rule (no forwarding, so only the proxy's
// own work counts) bare, then with the exchange record, request ID, metrics
// and identity bookkeeping, then with an access log entry as well.
//
//	go test -run '^$' -bench RequestOverhead -benchmem ./internal/proxy/
func BenchmarkRequestOverhead(b *testing.B) {
	snap := &model.Snapshot{Objects: model.Objects{Networks: testNetworks, Services: []model.Service{
		edgeService("svc", []string{"shop.example.com"}, model.Rule{Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 204}}}),
	}}, Revision: 1}
	for _, bb := range []struct {
		name      string
		observed  bool
		accessLog io.Writer
	}{
		{"bare", false, nil},
		{"metrics", true, nil},
		{"metrics+accesslog", true, io.Discard},
	} {
		b.Run(bb.name, func(b *testing.B) {
			p := newProxyWith(b, Config{AccessLog: bb.accessLog})
			if err := p.Update(snap); err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "http://shop.example.com/", nil)
			req.Header.Set("User-Agent", "bench")
			w := nullWriter{h: http.Header{}}
			// The bare path has one exchange for all its requests, made
			// here: the request path needs one to record in.
			sv := p.served.Load()
			bare := req.WithContext(context.WithValue(req.Context(), exchangeKey{}, &exchange{served: sv}))
			b.ReportAllocs()
			for b.Loop() {
				if bb.observed {
					p.serveHTTP(router.Bind{Port: webPort}, w, req)
				} else {
					p.serveRoute(webPort, w, bare, sv.table.Match(router.Bind{Port: webPort}, req))
				}
			}
			if p.accessLog != nil {
				b.ReportMetric(float64(p.accessLog.Dropped()), "dropped")
			}
		})
	}
}

// BenchmarkForward is a whole request through the proxy to a target on
// loopback, access log on: the scale the overhead above compares with.
func BenchmarkForward(b *testing.B) {
	for _, path := range []struct {
		name    string
		disable bool
	}{{"fast-path", false}, {"net-http", true}} {
		b.Run(path.name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			defer srv.Close()
			p := newProxyWith(b, Config{AccessLog: io.Discard, DisableFastPath: path.disable})
			port := srv.Listener.Addr().(*net.TCPAddr).Port
			g := group("a", model.Target{Address: "127.0.0.1", Port: int32(port), Cluster: cluster, State: model.TargetActive})
			if err := p.Update(oneRoute(1, []model.TargetGroup{g}, to("a", 1))); err != nil {
				b.Fatal(err)
			}
			url := "http://" + addrOf(p, webPort) + "/"
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkUpdate10k applies a snapshot of 10,000 services (3 rules each,
// a target group of 2 targets each) to a proxy: the whole Update, with
// health state, annotations and metrics bookkeeping. "cold" is a proxy's
// first snapshot, "warm" every later one; "compile-only" is the route table
// alone, for comparison.
//
//	go test -run '^$' -bench Update10k -benchmem ./internal/proxy/
func BenchmarkUpdate10k(b *testing.B) {
	const n = 10_000
	off := false
	snap := &model.Snapshot{Objects: model.Objects{Networks: testNetworks}, Revision: 1}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		snap.TargetGroups = append(snap.TargetGroups, model.TargetGroup{
			Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
			HealthCheck: model.HealthCheck{Enabled: &off},
			Targets: []model.Target{
				{Address: fmt.Sprintf("10.%d.%d.1", i/256, i%256), Port: 80, Cluster: cluster, State: model.TargetActive},
				{Address: fmt.Sprintf("10.%d.%d.2", i/256, i%256), Port: 80, Cluster: cluster, State: model.TargetActive},
			},
		})
		snap.Services = append(snap.Services, model.Service{
			Meta: model.Meta{Name: name}, Network: "mesh", DNSName: name + ".mesh.trellis.internal",
			Listeners: listeners(webPort),
			Rules: []model.Rule{
				{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/healthz"}}}, Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 200}}},
				{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/api"}}}, Action: forward(to(name, 1))},
				{Action: forward(to(name, 1))},
			},
		})
	}
	b.Run("compile-only", func(b *testing.B) {
		// The baseline: the route table alone, no health, no annotations.
		var c router.Compiler
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Compile(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			p := New(Config{Cluster: cluster})
			p.listen = func(router.Bind) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
			b.StartTimer()
			if err := p.Update(snap); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			p.Shutdown(context.Background())
			b.StartTimer()
		}
	})
	b.Run("warm", func(b *testing.B) {
		p := newProxyWith(b, Config{})
		if err := p.Update(snap); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Update(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
