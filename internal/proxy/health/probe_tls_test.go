package health

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// targetCert is a self-signed certificate for TLS targets, made once.
var targetCert = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "check target"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
})

// targetTLS is the TLS of a test target, offering alpn.
func targetTLS(t testing.TB, alpn ...string) *tls.Config {
	t.Helper()
	cert, err := targetCert()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn}
}

// tlsIf serves a rawTarget's connections over TLS when on is set.
func tlsIf(t testing.TB, on bool, serve func(int, net.Conn, *bufio.Reader)) func(int, net.Conn, *bufio.Reader) {
	if !on {
		return serve
	}
	cfg := targetTLS(t)
	return func(n int, conn net.Conn, _ *bufio.Reader) {
		tc := tls.Server(conn, cfg)
		defer tc.Close()
		serve(n, tc, bufio.NewReader(tc))
	}
}

// heldConn is a target's side of a connection whose writes it holds back
// (hold), to send them later with part of the next write in one segment;
// the rest of that write goes rest later.
type heldConn struct {
	net.Conn
	hold bool
	held []byte
	rest time.Duration
}

func (h *heldConn) Write(p []byte) (int, error) {
	if h.hold {
		h.held = append(h.held, p...)
		return len(p), nil
	}
	if h.held == nil {
		return h.Conn.Write(p)
	}
	half := len(p) / 2
	if _, err := h.Conn.Write(append(h.held, p[:half]...)); err != nil {
		return 0, err
	}
	h.held = nil
	time.Sleep(h.rest)
	if _, err := h.Conn.Write(p[half:]); err != nil {
		return half, err
	}
	return len(p), nil
}

// A kept TLS connection that holds part of a record (a stale answer the
// target sent with its last, whose rest is still on its way) is not used:
// neither the socket nor the TLS connection has anything to read yet, but
// the record's rest would pass for the next check's answer.
func TestPartialRecordIsNotTaken(t *testing.T) {
	cfg := targetTLS(t)
	rt := newRawTarget(t, func(n int, conn net.Conn, _ *bufio.Reader) {
		hc := &heldConn{Conn: conn, rest: 500 * time.Millisecond}
		tc := tls.Server(hc, cfg)
		defer tc.Close()
		br := bufio.NewReader(tc)
		for i := 0; readRequest(br); i++ {
			resp := "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
			if n == 0 && i == 0 {
				// The answer, held; then a stale 200 written with half
				// of its record sent along, the rest later.
				hc.hold = true
				io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				hc.hold = false
				resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
			}
			if _, err := io.WriteString(tc, resp); err != nil {
				return
			}
		}
	})
	c, ch := checking(t, rt.addr(), true, false)
	if err := c.probeH1(ch); err != nil {
		t.Fatalf("first check: %v", err)
	}
	if kc := ch.conn.Load(); kc == nil || kc.wire.atRecordBoundary() {
		t.Fatalf("after the first check: kept %v, want kept with part of a record read (the test's premise)", kc != nil)
	}
	var se *statusError
	if err := c.probeH1(ch); !errors.As(err, &se) || se.code != 503 {
		t.Fatalf("second check: %v, want status 503 (the stale 200 taken?)", err)
	}
	if n := rt.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// The record boundary follows records however the bytes come.
func TestRecordBoundary(t *testing.T) {
	rec := func(n int) []byte { return append([]byte{23, 3, 3, byte(n >> 8), byte(n)}, make([]byte, n)...) }
	stream := slices.Concat(rec(3), rec(0), rec(300), rec(1))
	ends := map[int]bool{0: true, 8: true, 13: true, 318: true, 324: true}
	for step := 1; step <= 7; step++ {
		var w wireConn
		for i := 0; i < len(stream); i += step {
			w.follow(stream[i:min(i+step, len(stream))])
			at := min(i+step, len(stream))
			if got := w.atRecordBoundary(); got != ends[at] {
				t.Fatalf("step %d, after %d bytes: at a boundary %v, want %v", step, at, got, ends[at])
			}
		}
	}
}

// A new TLS connection to a target checked before resumes its session.
func TestTLSSessionResumed(t *testing.T) {
	cfg := targetTLS(t)
	var resumed []bool
	var mu sync.Mutex
	rt := newRawTarget(t, func(_ int, conn net.Conn, _ *bufio.Reader) {
		tc := tls.Server(conn, cfg)
		defer tc.Close()
		if tc.Handshake() != nil {
			return
		}
		mu.Lock()
		resumed = append(resumed, tc.ConnectionState().DidResume)
		mu.Unlock()
		answer(ok200)(0, tc, bufio.NewReader(tc))
	})
	c := New(Config{MaxKeptConns: -1}) // a connection per check
	defer c.Close()
	ch := checkOf(t, rt.addr(), true, false, 5*time.Second)
	defer c.done(ch)
	for i := range 3 {
		if err := c.probeH1(ch); err != nil {
			t.Fatalf("check %d: %v", i+1, err)
		}
	}
	testsync.WaitFor(t, 5*time.Second, "three connections", func() bool { return rt.conns.Load() == 3 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(resumed, []bool{false, true, true}) {
		t.Errorf("sessions resumed: %v, want [false true true]", resumed)
	}
}

// FuzzRecordBoundary feeds the record follower whatever a target may
// send, in pieces of any size: it never panics, and says a boundary
// exactly where a walk of the records whole finds one.
func FuzzRecordBoundary(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 2, 'o', 'k', 21, 3, 3, 0, 0}, uint8(1))
	f.Add([]byte{22, 3, 1, 0xff, 0xff}, uint8(3))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		want := 0
		for want+5 <= len(stream) {
			want += 5 + (int(stream[want+3])<<8 | int(stream[want+4]))
		}
		var w wireConn
		n := max(int(step), 1)
		for i := 0; i < len(stream); i += n {
			w.follow(stream[i:min(i+n, len(stream))])
		}
		if got := w.atRecordBoundary(); got != (want == len(stream)) {
			t.Errorf("at a boundary after %d bytes: %v, want %v", len(stream), got, want == len(stream))
		}
	})
}
