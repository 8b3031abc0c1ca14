package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkForwardHTTP2 is an h2c client's requests through the proxy,
// 16 in flight on one connection, to an HTTP/1.1 target and to an h2c one
// (what a gRPC route's target speaks), served by the proxy's own HTTP/2
// server behind the fast path ("frame-server") and by net/http's
// (DisableFastPath): an A/B in one run. The CPU per request is the whole
// process's (client, proxy and target), so only the difference between
// the two is the server's.
//
//	go test -run '^$' -bench ForwardHTTP2 -benchmem ./internal/proxy/
func BenchmarkForwardHTTP2(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h1 := httptest.NewServer(ok)
	defer h1.Close()
	h2c := httptest.NewUnstartedServer(ok)
	h2c.Config.Protocols = new(http.Protocols)
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	defer h2c.Close()
	for _, tgt := range []struct {
		name  string
		srv   *httptest.Server
		proto model.ProtocolVersion
	}{{"target=h1", h1, model.HTTP1}, {"target=h2c", h2c, model.HTTP2}} {
		for _, server := range []struct {
			name    string
			disable bool
		}{{"frame-server", false}, {"net-http", true}} {
			b.Run(tgt.name+"/"+server.name, func(b *testing.B) {
				p := newProxyWith(b, Config{AccessLog: io.Discard, DisableFastPath: server.disable})
				g := versioned(group("a", target(b, tgt.srv, model.TargetActive)), model.ProtocolHTTP, tgt.proto)
				if err := p.Update(oneRoute(1, []model.TargetGroup{g}, to("a", 1))); err != nil {
					b.Fatal(err)
				}
				url := "http://" + addrOf(p, webPort) + "/"
				c := h2cClient()
				defer c.CloseIdleConnections()
				b.ReportAllocs()
				b.SetParallelism(16)
				cpu0, t0 := testsync.CPUTime(), time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := c.Get(url)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
				cpu, wall := testsync.CPUTime()-cpu0, time.Since(t0)
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
				b.ReportMetric(float64(b.N)/wall.Seconds(), "req/s")
			})
		}
	}
}
