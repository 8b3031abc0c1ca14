package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	rtmetrics "runtime/metrics"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/pki"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// The cost of the hop on pooled connections: BenchmarkDirect sends to a
// backend over a pooled HTTP/1.1 connection; BenchmarkHop sends the same
// request through a peer listener (HTTP/2 over mutual TLS, delivered over a
// pooled HTTP/1.1 connection). The difference per operation is the hop's
// added latency on a reused connection. Run with -cpu 1 for latencies
// without parallel load.
func BenchmarkDirect(b *testing.B) {
	backend := okBackend(b)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", backend.URL+"/", nil)
		if err := discard(tr.RoundTrip(req)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHop(b *testing.B) {
	ca, _ := pki.NewCA(time.Now())
	backend := okBackend(b)
	west, c := eastToWest(b, ca, backend, "west")
	p := Request{Cluster: "west", Addr: west.addr, TargetGroup: "g", Target: "t:1", Identity: "spiffe://east/ns/a/sa/b"}
	b.ResetTimer()
	for b.Loop() {
		if err := discard(c.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), p)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewConnection measures the first request on new connections:
// direct opens a TCP connection to the backend; the hop opens a TLS
// connection to the peer, resuming the session of the one before (resumed)
// or with a full handshake (full: a client without sessions), and the peer
// opens a TCP connection to the backend. The three take turns, so that
// they see the same moment's load; the hop's cost on a new connection is
// the difference of its p50 (p99) and direct's. Run with
//
//	go test -run XXX -bench NewConnection -benchtime 2000x ./internal/peer/
func BenchmarkNewConnection(b *testing.B) {
	ca, _ := pki.NewCA(time.Now())
	backend := okBackend(b)
	west := startPeer(b, ca, "west", backend)
	east := testpki.ClusterIdentity(b, ca, "east")
	newClient := func() *Client {
		c := NewClient(east, ca.Pool())
		c.SetPeers(map[string]string{west.addr: "west"})
		return c
	}
	p := Request{Cluster: "west", Addr: west.addr, TargetGroup: "g", Target: "t:1", Identity: "spiffe://east/ns/a/sa/b"}
	hop := func(c *Client) error {
		return discard(c.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), p))
	}
	resumed := newClient()
	defer resumed.Close()
	if err := hop(resumed); err != nil {
		b.Fatal(err)
	}
	direct := &http.Transport{DisableKeepAlives: true}
	var lat [3][]time.Duration
	for i := 0; b.Loop(); i++ {
		for k := range 3 {
			kind := (i + k) % 3
			west.fwd.CloseIdleConnections()
			var c *Client
			switch kind {
			case 1:
				c = resumed
				c.CloseIdleConnections()
			case 2:
				c = newClient()
			}
			start := time.Now()
			var err error
			if kind == 0 {
				err = discard(direct.RoundTrip(httptest.NewRequest("GET", backend.URL+"/", nil)))
			} else {
				err = hop(c)
			}
			lat[kind] = append(lat[kind], time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
			if kind == 2 {
				c.Close()
			}
		}
	}
	// Every resumed connection did resume, every full one did not.
	if full, res := west.handshakes.Load(), west.resumed.Load(); int(full) != 1+len(lat[2]) || int(res) != len(lat[1]) {
		b.Fatalf("%d full handshakes and %d resumed, want %d and %d", full, res, 1+len(lat[2]), len(lat[1]))
	}
	for kind, name := range []string{"direct", "resumed", "full"} {
		slices.Sort(lat[kind])
		b.ReportMetric(quantile(lat[kind], 50), name+"-p50-µs")
		b.ReportMetric(quantile(lat[kind], 99), name+"-p99-µs")
		if kind > 0 {
			b.ReportMetric(quantile(lat[kind], 50)-quantile(lat[0], 50), name+"-cost-p50-µs")
			b.ReportMetric(quantile(lat[kind], 99)-quantile(lat[0], 99), name+"-cost-p99-µs")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// okBackend is a backend answering "ok", closed when b ends.
func okBackend(b *testing.B) *httptest.Server {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	b.Cleanup(backend.Close)
	return backend
}

// discard reads a round trip's response to its end and closes it; the
// round trip's error passes through.
func discard(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// quantile is the p-th percentile of sorted latencies, in µs.
func quantile(lat []time.Duration, p int) float64 {
	return float64(lat[len(lat)*p/100].Microseconds())
}

// BenchmarkHopClient compares the hop's client with net/http's HTTP/2
// transport (as the client used it before: connsPerPeer transports, picked
// by the requests in flight), against the same stock HTTP/2 server over
// mutual TLS answering at once: the server's share is the same for both,
// so the difference is the client's. seq sends one request at a time,
// par16 sixteen at once, post1k one POST of 1 KiB at a time. cpu-µs/op is the process's CPU time (user and
// system) per request, goroutines/op the goroutines started. Run with
//
//	go test -run XXX -bench HopClient -benchtime 20000x -count 3 ./internal/peer/
func BenchmarkHopClient(b *testing.B) {
	ca, _ := pki.NewCA(time.Now())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := stockHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	go srv.Serve(tls.NewListener(ln, TLSConfig(testpki.ClusterIdentity(b, ca, "west"), ca.Pool())))
	b.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	c := NewClient(testpki.ClusterIdentity(b, ca, "east"), ca.Pool())
	b.Cleanup(c.Close)
	c.SetPeers(map[string]string{addr: "west"})
	p := Request{Cluster: "west", Addr: addr, TargetGroup: "g", Target: "t:1", Identity: "spiffe://east/ns/a/sa/b"}

	// net/http's transports, dialing as the client does.
	var trs []*http.Transport
	var inflight atomic.Int32
	for range connsPerPeer {
		tr := &http.Transport{
			Protocols: new(http.Protocols),
			DialTLSContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				return c.dialWith(ctx, network, a, c.id.Certificate())
			},
			MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: true,
		}
		tr.Protocols.SetHTTP2(true)
		b.Cleanup(tr.CloseIdleConnections)
		trs = append(trs, tr)
	}
	body := bytes.Repeat([]byte("b"), 1024)
	request := func(mode, url string) *http.Request {
		if mode == "post1k" {
			return httptest.NewRequest("POST", url, bytes.NewReader(body))
		}
		return httptest.NewRequest("GET", url, nil)
	}
	nethttp := func(mode string) error {
		r := request(mode, "https://"+addr+"/")
		r.RequestURI = ""
		for k, v := range map[string]string{HeaderTargetGroup: p.TargetGroup, HeaderTarget: p.Target, HeaderIdentity: p.Identity,
			HeaderService: "", HeaderNetwork: "", HeaderPort: "0"} {
			r.Header[k] = []string{v}
		}
		i := inflight.Add(1) - 1
		resp, err := trs[int(i)%len(trs)].RoundTrip(r)
		inflight.Add(-1)
		return discard(resp, err)
	}
	h2 := func(mode string) error {
		return discard(c.RoundTrip(request(mode, "http://shop.example/"), p))
	}
	samples := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	for _, mode := range []string{"seq", "par16", "post1k"} {
		for _, kind := range []string{"nethttp", "h2"} {
			send := func() error { return map[string]func(string) error{"nethttp": nethttp, "h2": h2}[kind](mode) }
			b.Run(mode+"/"+kind, func(b *testing.B) {
				if err := send(); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				rtmetrics.Read(samples)
				goroutines := samples[0].Value.Uint64()
				cpu := testsync.CPUTime()
				b.ResetTimer()
				if mode != "par16" {
					for b.Loop() {
						if err := send(); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(8) // 16 goroutines on 2 cores
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := send(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.StopTimer()
				rtmetrics.Read(samples)
				b.ReportMetric(float64((testsync.CPUTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
				b.ReportMetric(float64(samples[0].Value.Uint64()-goroutines)/float64(b.N), "goroutines/op")
			})
		}
	}
}
