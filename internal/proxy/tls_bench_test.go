package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// httpsSnapshot is one HTTPS listener on port 8443 (a P-256 certificate
// for shop.example.com) forwarding everything to target group "echo".
func httpsSnapshot(leaf pki.Leaf, echo model.Target) *model.Snapshot {
	return &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		Certificates: []model.Certificate{{Meta: model.Meta{Name: "shop", Owner: cluster, Revision: 1}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}},
		Services: []model.Service{{
			Meta: model.Meta{Name: "svc", Owner: cluster}, Network: "edge",
			Listeners: []model.Listener{{Name: "https", Port: 8443, Protocol: model.ProtocolHTTPS, Certificates: []string{"shop"}}},
			Rules:     []model.Rule{{Action: forward(to("echo", 1))}},
		}},
		TargetGroups: []model.TargetGroup{group("echo", echo)},
	}, Revision: 1}
}

// BenchmarkTLSHandshake is a new connection to an HTTPS listener per
// operation: the TLS 1.3 handshake (new, or resuming the previous
// session's ticket) and one request with Connection: close, forwarded by
// the fast path to a target on loopback. The client offers Go's default
// key exchange groups ("default": the proxy picks the hybrid
// X25519MLKEM768) or X25519 alone. Client and proxy share the process, so
// cpu-µs/op and allocs/op count both ends; compare them between runs.
//
//	go test -run '^$' -bench TLSHandshake -benchmem ./internal/proxy/
func BenchmarkTLSHandshake(b *testing.B) {
	p, ca := shopHTTPSProxy(b)
	addr := addrOf(p, 8443)
	const req = "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"
	for _, kx := range []struct {
		name   string
		curves []tls.CurveID
		want   tls.CurveID
	}{{"default", nil, tls.X25519MLKEM768}, {"X25519", []tls.CurveID{tls.X25519}, tls.X25519}} {
		for _, resume := range []bool{false, true} {
			name := "new/" + kx.name
			if resume {
				name = "resumed/" + kx.name
			}
			b.Run(name, func(b *testing.B) {
				cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}, CurvePreferences: kx.curves}
				if resume {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				}
				var resumed int
				b.ReportAllocs()
				cpu0 := testsync.CPUTime()
				for b.Loop() {
					st := tlsRequest(b, addr, cfg, req)
					if st.CurveID != kx.want {
						b.Fatalf("negotiated %v, want %v", st.CurveID, kx.want)
					}
					if st.DidResume {
						resumed++
					}
				}
				b.ReportMetric(float64(testsync.CPUTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
				if resume && resumed < b.N-1 {
					b.Fatalf("%d of %d handshakes resumed", resumed, b.N)
				}
			})
		}
	}
}

// tlsRequest makes one connection to addr, sends req and reads the
// response, which must be 200.
func tlsRequest(b testing.TB, addr string, cfg *tls.Config, req string) tls.ConnectionState {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("response %d, body %v", resp.StatusCode, err)
	}
	return c.ConnectionState()
}
