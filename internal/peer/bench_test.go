package peer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"trellis.dev/trellis/internal/pki"
)

// The cost of the hop on pooled connections: BenchmarkDirect sends to a
// backend over a pooled HTTP/1.1 connection; BenchmarkHop sends the same
// request through a peer listener (HTTP/2 over mutual TLS, delivered over a
// pooled HTTP/1.1 connection). The difference per operation is the hop's
// added latency on a reused connection. Run with -cpu 1 for latencies
// without parallel load.
func BenchmarkDirect(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", backend.URL+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func BenchmarkHop(b *testing.B) {
	ca, _ := pki.NewCA(time.Now())
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	west, c := eastToWest(b, ca, backend, "west")
	p := Request{Cluster: "west", Addr: west.addr, TargetGroup: "g", Target: "t:1", Identity: "spiffe://east/ns/a/sa/b"}
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), p)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
