package peer

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/test/framing"
	testpki "trellis.dev/trellis/test/pki"
)

// TestH2SpecPeerServer runs h2spec (the binary TRELLIS_H2SPEC names;
// hack/h2spec.sh builds it) against HTTPServer on a TLS listener, and
// against net/http's HTTP/2 server (the peer listener's before it) for
// comparison: HTTPServer must pass every case net/http's passes.
func TestH2SpecPeerServer(t *testing.T) {
	bin := os.Getenv("TRELLIS_H2SPEC")
	if bin == "" {
		t.Skip("TRELLIS_H2SPEC is not set (hack/h2spec.sh sets it)")
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	ca, _ := pki.NewCA(time.Now())
	cfg := TLSConfig(testpki.ClusterIdentity(t, ca, "west"), ca.Pool())
	// h2spec presents no certificate: the server's handshake asks for none.
	cfg.ClientAuth, cfg.VerifyConnection = tls.NoClientCert, nil
	serve := func(ours bool) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if ours {
			srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
			go srv.Serve(tls.NewListener(ln, cfg))
			t.Cleanup(func() { srv.Close() })
		} else {
			srv := &http.Server{Handler: h, Protocols: new(http.Protocols), ErrorLog: slog.NewLogLogger(slog.DiscardHandler, 0)}
			srv.Protocols.SetHTTP2(true)
			go srv.Serve(tls.NewListener(ln, cfg))
			t.Cleanup(func() { srv.Close() })
		}
		return ln.Addr().String()
	}
	ours, passedOurs := h2spec(t, bin, serve(true))
	stock, passedStock := h2spec(t, bin, serve(false))
	fmt.Printf("h2spec: HTTPServer %d passed, net/http %d passed\n", passedOurs, passedStock)
	for id, failed := range ours {
		if !failed {
			continue
		}
		why, known := framing.H2SpecKnownFailures[id]
		switch {
		case known:
			t.Logf("known failure: %s (%s)", id, why)
		case stock[id]:
			t.Logf("fails on net/http's server too: %s", id)
		default:
			t.Errorf("h2spec: %s fails on HTTPServer, passes on net/http's", id)
		}
	}
	for id, failed := range stock {
		if failed && !ours[id] {
			t.Logf("passes on HTTPServer, fails on net/http's: %s", id)
		}
	}
}

// h2spec runs h2spec against addr and returns every case (true: failed)
// and how many passed.
func h2spec(t *testing.T, bin, addr string) (map[string]bool, int) {
	all, out := framing.H2Spec(t, bin, addr, 2)
	cases, passed := map[string]bool{}, 0
	var failed []string
	for _, c := range all {
		if c.Skipped {
			continue
		}
		cases[c.ID] = c.Failed
		if c.Failed {
			failed = append(failed, c.ID+": "+c.Detail)
		} else {
			passed++
		}
	}
	slices.Sort(failed)
	for _, f := range failed {
		t.Logf("%s failed %s", addr, f)
	}
	if passed == 0 {
		t.Fatalf("no h2spec case passed:\n%s", out)
	}
	return cases, passed
}
