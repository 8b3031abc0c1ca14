package peer

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"strconv"
	"testing"

	"trellis.dev/trellis/test/testsync"
)

// BenchmarkH2ServerBody moves a 16 MiB body each way between net/http's
// HTTP/2 client and the peer listener's server (ours) or net/http's
// (nethttp), on loopback TLS, the two servers in turn within one run. It
// reports MB/s and the whole process's CPU time per MiB. Run with
//
//	go test -run XXX -bench H2ServerBody -benchtime 20x ./internal/peer/
func BenchmarkH2ServerBody(b *testing.B) {
	const size = 16 << 20
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			io.Copy(io.Discard, r.Body)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		io.Copy(w, io.LimitReader(zeros{}, size))
	})
	serverTLS, client := h2TLS(b)
	addrs := map[string]string{}
	for _, server := range []string{"ours", "nethttp"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addrs[server] = ln.Addr().String()
		if server == "ours" {
			srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
			go srv.Serve(tls.NewListener(ln, serverTLS))
			b.Cleanup(func() { srv.Close() })
			continue
		}
		srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP2(true)
		go srv.Serve(tls.NewListener(ln, serverTLS))
		b.Cleanup(func() { srv.Close() })
	}
	for _, dir := range []string{"up", "down"} {
		for _, server := range []string{"ours", "nethttp"} {
			b.Run(dir+"/"+server, func(b *testing.B) {
				url := "https://" + addrs[server] + "/"
				b.SetBytes(size)
				cpu := testsync.CPUTime()
				for b.Loop() {
					var resp *http.Response
					var err error
					if dir == "up" {
						resp, err = client.Post(url, "application/octet-stream", io.LimitReader(zeros{}, size))
					} else {
						resp, err = client.Get(url)
					}
					if err != nil {
						b.Fatal(err)
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if dir == "down" && n != size {
						b.Fatalf("%d bytes", n)
					}
				}
				b.ReportMetric(float64((testsync.CPUTime()-cpu).Microseconds())/float64(b.N)/16, "cpu-µs/MiB")
			})
		}
	}
}

// BenchmarkH2ServerRequest sends small GETs, one at a time on one
// connection, from net/http's HTTP/2 client to each server (ours, then
// nethttp, in one run): CPU time of the whole process (client included),
// goroutines started and allocations per request. Run with
//
//	go test -run XXX -bench H2ServerRequest -benchtime 5000x ./internal/peer/
func BenchmarkH2ServerRequest(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from the other cluster")
	})
	serverTLS, client := h2TLS(b)
	for _, server := range []string{"ours", "nethttp"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		if server == "ours" {
			srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
			go srv.Serve(tls.NewListener(ln, serverTLS))
			b.Cleanup(func() { srv.Close() })
		} else {
			srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
			srv.Protocols.SetHTTP2(true)
			go srv.Serve(tls.NewListener(ln, serverTLS))
			b.Cleanup(func() { srv.Close() })
		}
		url := "https://" + ln.Addr().String() + "/path?q=1"
		get := func() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		b.Run(server, func(b *testing.B) {
			get()
			samples := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
			rtmetrics.Read(samples)
			before := samples[0].Value.Uint64()
			b.ReportAllocs()
			cpu := testsync.CPUTime()
			for b.Loop() {
				get()
			}
			rtmetrics.Read(samples)
			b.ReportMetric(float64((testsync.CPUTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(samples[0].Value.Uint64()-before)/float64(b.N), "goroutines/op")
		})
	}
}
