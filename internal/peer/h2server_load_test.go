package peer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/test/testsync"
)

// BenchmarkH2ServerLoad is h2load's shape in bench/protocols.sh (16 TLS
// connections, 10 streams in flight on each, small GETs) against the
// server, whose handler does what the proxy's does for an HTTP/1.1
// target: a round trip on a pooled loopback connection to a minimal
// HTTP/1.1 backend, then a small response. The client is a frame-level
// one (a goroutine per connection), so that most of the process's CPU is
// the server's. Sub-benchmarks turn off reusing worker goroutines
// (noreuse) and yielding before a response's flush (noyield), for an A/B
// within one run. Run with
//
//	go test -run XXX -bench H2ServerLoad -benchtime 40000x -count 3 ./internal/peer/
func BenchmarkH2ServerLoad(b *testing.B) {
	backend := h1Backend(b)
	pool := make(chan *bufio.ReadWriter, 256)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rw *bufio.ReadWriter
		select {
		case rw = <-pool:
		default:
			c, err := net.Dial("tcp", backend)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			rw = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		}
		rw.WriteString("GET " + r.URL.Path + " HTTP/1.1\r\nHost: " + r.Host + "\r\nX-Env: " + r.Header.Get("X-Env") + "\r\n\r\n")
		if err := rw.Flush(); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		n := -1
		for {
			line, err := rw.ReadSlice('\n')
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
			if len(line) == 2 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(rw, body); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		pool <- rw
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	serverTLS, client := h2TLS(b)
	clientTLS := client.Transport.(*http.Transport).TLSClientConfig
	for _, v := range []struct {
		name             string
		noReuse, noYield bool
	}{{"all", false, false}, {"noyield", false, true}, {"noreuse", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
			srv.noReuse, srv.noYield = v.noReuse, v.noYield
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(tls.NewListener(ln, serverTLS))
			defer srv.Close()
			loadH2(b, ln.Addr().String(), clientTLS, 16, 10)
		})
	}
}

// loadH2 runs b.N GETs over conns TLS connections to addr, inflight
// streams at a time on each, and reports the process's CPU time,
// goroutines started per request and the requests' latency percentiles
// (from the client's HEADERS to its response's end).
func loadH2(b *testing.B, addr string, cfg *tls.Config, conns, inflight int) {
	// Connections first, out of the measurement.
	ccs := make([]*tls.Conn, conns)
	for i := range ccs {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ccs[i] = c
	}
	var mu sync.Mutex
	left := b.N
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if left == 0 {
			return false
		}
		left--
		return true
	}
	samples := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	rtmetrics.Read(samples)
	g0 := samples[0].Value.Uint64()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := testsync.CPUTime(), time.Now()
	var wg sync.WaitGroup
	lat := make([][]time.Duration, len(ccs))
	for i, c := range ccs {
		wg.Go(func() {
			sent := map[uint32]time.Time{}
			var hbuf bytes.Buffer
			enc := hpack.NewEncoder(&hbuf)
			bw := bufio.NewWriter(c)
			fr := http2.NewFramer(bw, c)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			io.WriteString(bw, http2.ClientPreface)
			fr.WriteSettings()
			next := uint32(1)
			send := func() bool {
				if !take() {
					return false
				}
				hbuf.Reset()
				for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/api/items"},
					{":authority", "bench.example.com"}, {"user-agent", "h2load"}, {"x-env", "prod"}} {
					enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: next, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
				sent[next] = time.Now()
				next += 2
				return true
			}
			open := 0
			for range inflight {
				if send() {
					open++
				}
			}
			bw.Flush()
			for open > 0 {
				f, err := fr.ReadFrame()
				if err != nil {
					b.Error(err)
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						fr.WriteSettingsAck()
					}
				case *http2.MetaHeadersFrame:
					if s := f.PseudoValue("status"); s != "" && s != "200" {
						b.Errorf("status %s", s)
						return
					}
				case *http2.DataFrame:
					if !f.StreamEnded() {
						continue
					}
					lat[i] = append(lat[i], time.Since(sent[f.StreamID]))
					delete(sent, f.StreamID)
					open--
					if send() {
						open++
					}
				}
				if bw.Buffered() > 0 {
					bw.Flush()
				}
			}
			bw.Flush()
		})
	}
	wg.Wait()
	cpu, wall := testsync.CPUTime()-cpu0, time.Since(t0)
	b.StopTimer()
	rtmetrics.Read(samples)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(b.N)/wall.Seconds(), "req/s")
	b.ReportMetric(float64(samples[0].Value.Uint64()-g0)/float64(b.N), "goroutines/op")
	all := slices.Concat(lat...)
	if len(all) > 0 {
		slices.Sort(all)
		at := func(q float64) float64 { return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds()) }
		b.ReportMetric(at(0.99), "p99-µs")
		b.ReportMetric(at(0.999), "p99.9-µs")
		b.ReportMetric(at(1), "max-µs")
	}
}

// h1Backend serves a fixed small HTTP/1.1 response on loopback, a
// goroutine per connection.
func h1Backend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nbackend-1 ok\r\n")
	return testsync.ServeConns(b, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}
