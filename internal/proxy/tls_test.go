package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// forgedTickets is a client session cache that offers every handshake a
// session with a ticket of random bytes, built on the state of the one
// real session it was given (or, with real set, that session itself).
type forgedTickets struct {
	mu     sync.Mutex
	real   bool
	ticket []byte
	state  *tls.SessionState
}

func (f *forgedTickets) Get(string) (*tls.ClientSessionState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return nil, false
	}
	if f.real {
		cs, err := tls.NewResumptionState(f.ticket, f.state)
		return cs, err == nil
	}
	ticket := make([]byte, len(f.ticket))
	rand.Read(ticket)
	cs, err := tls.NewResumptionState(ticket, f.state)
	return cs, err == nil
}

func (f *forgedTickets) Put(_ string, cs *tls.ClientSessionState) {
	if cs == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		f.ticket, f.state, _ = cs.ResumptionState()
	}
}

// A client sending endless random server names and session tickets it
// made up costs the proxy nothing that stays: every name gets the
// fallback certificate, every ticket a full handshake, and the proxy's
// heap after a collection has not grown by a kilobyte per connection.
// Tickets are stateless (crypto/tls encrypts the session into them) and
// the certificate index is made from the configuration alone.
func TestTLSRandomNamesAndTicketsKeepNothing(t *testing.T) {
	p, ca := shopHTTPSProxy(t)
	addr := addrOf(p, 8443)

	// One real session, to build the forged ones on.
	cache := &forgedTickets{}
	cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}, ClientSessionCache: cache}
	tlsRequest(t, addr, cfg, "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
	if cache.state == nil {
		t.Fatal("the proxy sent no session ticket")
	}

	const n = 1000
	handshake := func(i int, resume bool) {
		name := fmt.Sprintf("%x.random.example", i)
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, ClientSessionCache: cache})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer c.Close()
		st := c.ConnectionState()
		if st.DidResume != resume {
			t.Fatalf("%s: resumed %v, want %v", name, st.DidResume, resume)
		}
		if cn := st.PeerCertificates[0].Subject.CommonName; cn != "shop.example.com" {
			t.Fatalf("%s: certificate of %q, want the fallback's", name, cn)
		}
	}
	// The first connections warm up what any traffic keeps (goroutines,
	// pools); the heap is measured over the rest.
	// The real ticket resumes under any name: a forged one is offered
	// the same way.
	cache.real = true
	handshake(0, true)
	cache.real = false
	for i := range 50 {
		handshake(i, false)
	}
	before := liveHeap()
	for i := 50; i < n; i++ {
		handshake(i, false)
	}
	// Connections the proxy has not closed yet are not what is measured.
	time.Sleep(50 * time.Millisecond)
	if grew := int64(liveHeap()) - int64(before); grew > n*1024 {
		t.Errorf("the live heap grew by %d bytes over %d connections", grew, n-50)
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// fastOf returns the fast path of p's listener on port.
func fastOf(p *Proxy, port int32) *fastServer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listeners[router.Bind{Port: port}].(*listener).fast
}

// A fast-path connection's goroutine stays, once its connection ended, to
// serve the next one (on the stack it has grown), and leaves when the
// listener closes: a few goroutines serve a run of connections one after
// the other, and none is left after Shutdown.
func TestFastPathConnectionGoroutines(t *testing.T) {
	p, ca := shopHTTPSProxy(t)
	fs := fastOf(p, 8443)
	cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}
	for range 20 {
		tlsRequest(t, addrOf(p, 8443), cfg, "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
	}
	// The goroutines of the last connections wait for the next: one, or
	// two when a connection came before the last one's goroutine was done.
	testsync.WaitFor(t, 5*time.Second, "a connection goroutine waiting", func() bool { return fs.waiting.Load() > 0 })
	if n := fs.waiting.Load(); n > 3 {
		t.Errorf("%d connection goroutines left for 20 connections one after the other, want at most 3", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Shutdown(ctx)
	testsync.WaitFor(t, 5*time.Second, "no connection goroutine after Shutdown", func() bool { return fs.waiting.Load() == 0 })
}

// However many connections end at once, at most maxIdleWorkers goroutines
// (lowered to 2 here) stay to wait for the next.
func TestFastPathIdleGoroutinesBounded(t *testing.T) {
	p, ca := shopHTTPSProxy(t)
	fs := fastOf(p, 8443)
	fs.maxWaiting.Store(2)
	cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}
	var conns []*tls.Conn
	for range 10 {
		c, err := tls.Dial("tcp", addrOf(p, 8443), cfg)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	testsync.WaitFor(t, 5*time.Second, "2 connection goroutines waiting", func() bool { return fs.waiting.Load() == 2 })
	testsync.WaitFor(t, 5*time.Second, "every connection ended", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.conns) == 0
	})
	time.Sleep(50 * time.Millisecond)
	if n := fs.waiting.Load(); n != 2 {
		t.Errorf("%d connection goroutines wait after 10 connections ended, want 2", n)
	}
}

// shopHTTPSProxy is a proxy serving shop.example.com on an HTTPS listener
// (port 8443, a certificate of a new CA, which it returns) from a target
// answering "ok".
func shopHTTPSProxy(tb testing.TB) (*Proxy, *pki.CA) {
	tb.Helper()
	ca := pki.NewCA(tb)
	leaf := ca.Issue(tb, "shop.example.com")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	tb.Cleanup(srv.Close)
	p := newProxyWith(tb, Config{})
	if err := p.Update(httpsSnapshot(leaf, target(tb, srv, model.TargetActive))); err != nil {
		tb.Fatal(err)
	}
	return p, ca
}

// A TLS client that sends its request head a byte to a record, slowly
// (slowloris in the smallest records), is cut off once the header timeout
// passes, as on a plain connection: each record is read and decrypted as
// it comes, and none moves the head's deadline. Another client is served
// meanwhile.
func TestTLSTinyRecordsSlowHeadCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "shop.example.com")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	p := newProxyWith(t, Config{test: testKnobs{readHeaderTimeout: timeout}})
	if err := p.Update(httpsSnapshot(leaf, target(t, srv, model.TargetActive))); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(p, 8443)
	cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 100 records of one byte at 50 ms each would take 5 s.
	slow := "GET / HTTP/1.1\r\nHost: shop.example.com\r\nX-Slow: " + strings.Repeat("a", 55) + "\r\n"
	cutAfter, sent := sendSlowly(t, conn, slow, "slow TLS client", func() {
		// Answered 200, or the test fails.
		tlsRequest(t, addr, cfg, "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
	})
	// The head's clock starts at its first byte, a little after ours.
	if cutAfter < timeout/2 || cutAfter > timeout+2*time.Second {
		t.Errorf("slow TLS client cut off after %v, want about %v", cutAfter, timeout)
	}
	if sent >= len(slow) {
		t.Error("the slow TLS client sent its whole head")
	}
}
