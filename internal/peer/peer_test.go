package peer

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/pki"
	testpki "trellis.dev/trellis/test/pki"
)

// eastToWest starts west's peer listener, delivering to backend, and
// returns it with east's client, which has west's address as the peer of
// cluster westAs (a name other than west makes the client expect another
// cluster there). The client is closed when the test ends.
func eastToWest(t testing.TB, ca *pki.CA, backend *httptest.Server, westAs string) (*peerSide, *Client) {
	t.Helper()
	west := startPeer(t, ca, "west", backend)
	c := NewClient(testpki.ClusterIdentity(t, ca, "east"), ca.Pool())
	t.Cleanup(c.Close)
	c.SetPeers(map[string]string{west.addr: westAs})
	return west, c
}

// peerSide is one cluster's peer listener, delivering to a real backend on
// loopback by plain HTTP.
type peerSide struct {
	addr       string
	srv        *HTTPServer
	handler    http.Handler
	tls        *tls.Config
	fwd        *http.Transport
	handshakes atomic.Int32
	// resumed counts the connections that resumed a session, and
	// resumedFrom the cluster of each one's client certificate.
	resumed     atomic.Int32
	resumedFrom []string
	mu          sync.Mutex
	refused     []string
	deliveries  []Delivery
}

func startPeer(t testing.TB, ca *pki.CA, cluster string, backend *httptest.Server) *peerSide {
	t.Helper()
	ps := &peerSide{}
	fwd := &http.Transport{}
	t.Cleanup(fwd.CloseIdleConnections)
	srv := &Server{
		Deliver: func(w http.ResponseWriter, r *http.Request, d Delivery) {
			ps.mu.Lock()
			ps.deliveries = append(ps.deliveries, d)
			ps.mu.Unlock()
			out := r.Clone(r.Context())
			out.URL.Scheme, out.URL.Host, out.RequestURI = "http", backend.Listener.Addr().String(), ""
			out.Header.Set("X-Delivered-Identity", d.Identity)
			out.Header.Set("X-Delivered-From", d.PeerCluster)
			resp, err := fwd.RoundTrip(out)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			for k, vs := range resp.Header {
				w.Header()[k] = vs
			}
			for k := range resp.Trailer {
				w.Header().Add("Trailer", k)
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			for k, vs := range resp.Trailer {
				w.Header()[k] = vs
			}
		},
		Refused: func(c, reason string) {
			ps.mu.Lock()
			ps.refused = append(ps.refused, c+":"+reason)
			ps.mu.Unlock()
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := TLSConfig(testpki.ClusterIdentity(t, ca, cluster), ca.Pool())
	inner := cfg.GetCertificate
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		ps.handshakes.Add(1)
		return inner(h)
	}
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			ps.resumed.Add(1)
			c, _ := pki.ClusterOf(cs.PeerCertificates[0])
			ps.mu.Lock()
			ps.resumedFrom = append(ps.resumedFrom, c)
			ps.mu.Unlock()
		}
		return verify(cs)
	}
	hs := NewHTTPServer(srv, slog.New(slog.DiscardHandler))
	go hs.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { hs.Close() })
	ps.addr, ps.srv, ps.handler, ps.tls, ps.fwd = ln.Addr().String(), hs, srv, cfg, fwd
	return ps
}

// echo answers with what it received: method, host, path, the identity and
// origin the peer delivered, every Trellis-Peer- header it saw, the body's
// length and hash; and a trailer.
func echo() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		var leaked []string
		for k := range r.Header {
			if strings.HasPrefix(k, HeaderPrefix) {
				leaked = append(leaked, k)
			}
		}
		w.Header().Set("Trailer", "X-Checksum")
		fmt.Fprintf(w, "%s %s %s id=%s from=%s leaked=%v len=%d", r.Method, r.Host, r.URL.RequestURI(),
			r.Header.Get("X-Delivered-Identity"), r.Header.Get("X-Delivered-From"), leaked, len(b))
		w.Header().Set("X-Checksum", hex.EncodeToString(sum[:]))
	}))
}

func TestHopCarriesRequestsAndChecksIdentity(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	backend := echo()
	defer backend.Close()
	west, c := eastToWest(t, ca, backend, "west")
	to := Request{Cluster: "west", Addr: west.addr, TargetGroup: "cart", Target: "10.0.0.7:8080", Identity: "spiffe://east/ns/shop/sa/frontend"}

	send := func(method, target string, body []byte, p Request) (*http.Response, string) {
		t.Helper()
		req := httptestRequest(method, target, body)
		// A client's forged peer headers never pass.
		req.Header.Set(HeaderIdentity, "spiffe://west/ns/shop/sa/admin")
		resp, err := c.RoundTrip(req, p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	resp, got := send("GET", "http://shop.example/a%2Fb?q=1", nil, to)
	want := "GET shop.example /a%2Fb?q=1 id=spiffe://east/ns/shop/sa/frontend from=east leaked=[] len=0"
	if resp.StatusCode != 200 || got != want {
		t.Fatalf("got %d %q\nwant %q", resp.StatusCode, got, want)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("hop spoke %s, want HTTP/2", resp.Proto)
	}

	// A large body streams across, and the target's trailer comes back.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	sum := sha256.Sum256(big)
	resp, got = send("POST", "http://shop.example/upload", big, to)
	if !strings.HasSuffix(got, fmt.Sprintf("len=%d", len(big))) || resp.Trailer.Get("X-Checksum") != hex.EncodeToString(sum[:]) {
		t.Errorf("large body: %q, trailer %q", got, resp.Trailer.Get("X-Checksum"))
	}

	// Anonymous callers carry no identity.
	anon := to
	anon.Identity = ""
	if _, got = send("GET", "http://shop.example/", nil, anon); !strings.Contains(got, "id= ") {
		t.Errorf("anonymous: %q", got)
	}

	// A proxy of east asserting an identity of west is refused and counted.
	forged := to
	forged.Identity = "spiffe://west/ns/shop/sa/frontend"
	resp, got = send("GET", "http://shop.example/", nil, forged)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(got, `cluster "east" may not assert identity`) {
		t.Errorf("forged identity: %d %q", resp.StatusCode, got)
	}
	for _, bad := range []string{"spiffe://east/ns/shop", "https://east/ns/a/sa/b", "spiffe://east:1/ns/a/sa/b", "east"} {
		p := to
		p.Identity = bad
		if resp, _ := send("GET", "http://shop.example/", nil, p); resp.StatusCode != http.StatusForbidden {
			t.Errorf("identity %q: %d", bad, resp.StatusCode)
		}
	}
	west.mu.Lock()
	refused := strings.Join(west.refused, ",")
	west.mu.Unlock()
	if !strings.HasPrefix(refused, "east:ForeignIdentity") {
		t.Errorf("refusals recorded: %q", refused)
	}

	// Every request so far, one after the other, shared one connection.
	if n, r := west.handshakes.Load(), west.resumed.Load(); n != 1 || r != 0 {
		t.Errorf("%d full TLS handshakes and %d resumed for sequential requests, want 1 and 0 (pooled)", n, r)
	}

	// Concurrent requests spread over more connections, up to
	// connsPerPeer, which resume the first one's session.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			resp, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), to)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n, r := west.handshakes.Load(), west.resumed.Load(); n != 1 || r > connsPerPeer-1 {
		t.Errorf("%d full TLS handshakes and %d resumed after concurrent requests, want 1 and at most %d", n, r, connsPerPeer-1)
	}
}

func TestHopRefusesTheWrongPeer(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	backend := echo()
	defer backend.Close()
	// The client expects north at west's address: the dial fails on the
	// certificate before any request byte is sent.
	west, c := eastToWest(t, ca, backend, "north")
	_, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "north", Addr: west.addr, TargetGroup: "g", Target: "t:1"})
	if err == nil || !strings.Contains(err.Error(), `names cluster "west", not "north"`) {
		t.Errorf("wrong cluster: %v", err)
	}
	// An address that is no known peer, or a cluster the address is not.
	if _, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "west", Addr: "127.0.0.1:1"}); err == nil {
		t.Error("request to an unknown peer address")
	}
	if _, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "west", Addr: west.addr}); err == nil {
		t.Error("request to a peer listed for another cluster")
	}

	// A client with a certificate of another CA is refused by the peer.
	other, _ := pki.NewCA(time.Now())
	stranger := NewClient(testpki.ClusterIdentity(t, other, "east"), ca.Pool())
	defer stranger.CloseIdleConnections()
	stranger.SetPeers(map[string]string{west.addr: "west"})
	if _, err := stranger.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "west", Addr: west.addr, TargetGroup: "g", Target: "t:1"}); err == nil {
		t.Error("a certificate of another CA was accepted by the peer")
	}
	west.mu.Lock()
	defer west.mu.Unlock()
	if len(west.deliveries) != 0 {
		t.Errorf("deliveries: %+v", west.deliveries)
	}
}

// A new connection to a peer resumes the TLS session of the last one: no
// full handshake, and the peer still knows the client by the certificate
// of the session (its cluster is the delivery's). Sessions are kept per
// peer address and cluster: two peers on one IP address both resume, and a
// session is never offered to an address listed for another cluster.
func TestSessionResumption(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	backend := echo()
	defer backend.Close()
	west, north := startPeer(t, ca, "west", backend), startPeer(t, ca, "north", backend)
	c := NewClient(testpki.ClusterIdentity(t, ca, "east"), ca.Pool())
	defer c.Close()
	c.SetPeers(map[string]string{west.addr: "west", north.addr: "north"})
	send := func(ps *peerSide, cluster string) error {
		t.Helper()
		resp, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil),
			Request{Cluster: cluster, Addr: ps.addr, TargetGroup: "g", Target: "t:1", Identity: "spiffe://east/ns/a/sa/b"})
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", cluster, resp.StatusCode)
		}
		return nil
	}
	for round := range 3 {
		for _, ps := range []*peerSide{west, north} {
			if err := send(ps, map[*peerSide]string{west: "west", north: "north"}[ps]); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		c.CloseIdleConnections()
	}
	for name, ps := range map[string]*peerSide{"west": west, "north": north} {
		ps.mu.Lock()
		from, last := strings.Join(ps.resumedFrom, ","), ps.deliveries[len(ps.deliveries)-1]
		ps.mu.Unlock()
		if h, r := ps.handshakes.Load(), ps.resumed.Load(); h != 1 || r != 2 {
			t.Errorf("%s: %d full handshakes and %d resumed for 3 connections, want 1 and 2", name, h, r)
		}
		if from != "east,east" || last.PeerCluster != "east" || last.Identity != "spiffe://east/ns/a/sa/b" {
			t.Errorf("%s: resumed sessions of %q, last delivery %+v", name, from, last)
		}
	}

	// west's address now stands for north: the session made with west is
	// not offered, and west's certificate fails the check.
	c.SetPeers(map[string]string{west.addr: "north"})
	if err := send(west, "north"); err == nil || !strings.Contains(err.Error(), `names cluster "west", not "north"`) {
		t.Errorf("west's address as north's: %v", err)
	}
	if r := west.resumed.Load(); r != 2 {
		t.Errorf("west resumed %d sessions, want 2", r)
	}
}

func httptestRequest(method, target string, body []byte) *http.Request {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	return httptest.NewRequest(method, target, r)
}

func TestIdentityCluster(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://east/ns/shop/sa/frontend":   "east",
		"spiffe://e.1/ns/a/sa/b":              "e.1",
		"spiffe://east/ns/shop/sa/":           "",
		"spiffe://east/ns//sa/b":              "",
		"spiffe://east/ns/a/sa/b/c":           "",
		"spiffe://u@east/ns/a/sa/b":           "",
		"spiffe:///ns/a/sa/b":                 "",
		"spiffe://east/ns/a/sa/b?x":           "",
		"spiffe://east/ns/a/sa/b#x":           "",
		"SPIFFE://east/ns/a/sa/b":             "",
		"spiffe://East/ns/a/sa/b":             "",
		"spiffe://east/ns/-a/sa/b":            "",
		"spiffe://east/cluster/east":          "",
		"Principal=spiffe://east/ns/a/sa/b":   "",
		"spiffe://east/ns/a/sa/b\x00":         "",
		"spiffe://east/ns/a/sa/b; Type=Admin": "",
	} {
		got, ok := identityCluster(in)
		if got != want || ok != (want != "") {
			t.Errorf("identityCluster(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func FuzzIdentityCluster(f *testing.F) {
	f.Add("spiffe://east/ns/shop/sa/frontend")
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := identityCluster(s)
		if !ok {
			return
		}
		// Whatever is accepted is canonical: its cluster as the authority,
		// nothing but name characters anywhere.
		if !strings.HasPrefix(s, "spiffe://"+c+"/ns/") || strings.ContainsFunc(s[len("spiffe://"):], func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '/')
		}) {
			t.Fatalf("%q accepted as cluster %q", s, c)
		}
	})
}

// A peer whose connection fails is out of use at once, and back once a
// background probe reaches it again: no request is spent finding out.
func TestPeerDownAndBackByProbe(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	backend := echo()
	defer backend.Close()
	west, c := eastToWest(t, ca, backend, "west")
	to := Request{Cluster: "west", Addr: west.addr, TargetGroup: "g", Target: "t:1"}
	send := func() error {
		resp, err := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), to)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := send(); err != nil || !c.Up(west.addr) {
		t.Fatalf("first request: %v, up %v", err, c.Up(west.addr))
	}
	west.srv.Close()
	if err := send(); err == nil {
		t.Fatal("a request to a closed peer succeeded")
	}
	if c.Up(west.addr) {
		t.Fatal("a peer whose connection failed is still up")
	}
	// The same address answers again: the probe finds it.
	ln, err := net.Listen("tcp", west.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(west.handler, slog.New(slog.DiscardHandler))
	go srv.Serve(tls.NewListener(ln, west.tls))
	defer srv.Close()
	deadline := time.Now().Add(3 * probeEvery)
	for !c.Up(west.addr) {
		if time.Now().After(deadline) {
			t.Fatal("the peer is back but not in use again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := send(); err != nil {
		t.Errorf("request after the peer came back: %v", err)
	}
}

// A probe measures a round trip to a peer over the pooled connection and
// delivers nothing; a peer that refuses the prober's cluster fails it, and
// an unknown address is not dialed.
func TestProbe(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	backend := echo()
	defer backend.Close()
	west := startPeer(t, ca, "west", backend)
	c := NewClient(testpki.ClusterIdentity(t, ca, "east"), ca.Pool())
	defer c.Close()
	c.SetPeers(map[string]string{west.addr: "west"})
	if got := c.Peers(); len(got) != 1 || got[west.addr] != "west" {
		t.Fatalf("Peers: %v", got)
	}
	ctx := t.Context()
	for range 3 {
		rtt, err := c.Probe(ctx, west.addr)
		if err != nil || rtt <= 0 || rtt > time.Second {
			t.Fatalf("probe: %v, %v", rtt, err)
		}
		t.Logf("probe: %v", rtt)
	}
	if n := west.handshakes.Load(); n != 1 {
		t.Errorf("three probes made %d handshakes, want 1 (the pooled connection)", n)
	}
	west.mu.Lock()
	delivered := len(west.deliveries)
	west.mu.Unlock()
	if delivered != 0 {
		t.Errorf("probes delivered %d requests", delivered)
	}
	if _, err := c.Probe(ctx, "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "not a known peer") {
		t.Errorf("probe of an unknown address: %v", err)
	}
	west.handler.(*Server).Admitted = func(string) bool { return false }
	if _, err := c.Probe(ctx, west.addr); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("probe by a cluster the peer does not admit: %v", err)
	}
}

// The verifier remembers an accepted chain and checks the cluster each
// time; a chain of another CA is never accepted, and one whose certificate
// expired is verified again, and refused.
func TestVerifierRemembersOnlyWhatHolds(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	other, _ := pki.NewCA(time.Now())
	state := func(id *pki.Identity) tls.ConnectionState {
		var cs tls.ConnectionState
		for _, der := range id.Certificate().Certificate {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			cs.PeerCertificates = append(cs.PeerCertificates, c)
		}
		return cs
	}
	v := newVerifier(ca.Pool(), x509.ExtKeyUsageClientAuth)
	// A certificate's NotAfter is kept to the second: two seconds leave at
	// least one for the checks before it expires.
	short, err := ca.IssueIdentity("east", time.Now(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	east := state(short)
	for range 2 {
		if err := v.verify(east, "east"); err != nil {
			t.Fatal(err)
		}
		if err := v.verify(east, "west"); err == nil || !strings.Contains(err.Error(), `names cluster "east", not "west"`) {
			t.Errorf("east's certificate as west's: %v", err)
		}
	}
	if len(v.known) != 1 {
		t.Errorf("%d chains remembered, want 1", len(v.known))
	}
	if err := v.verify(state(testpki.ClusterIdentity(t, other, "east")), ""); err == nil {
		t.Error("a certificate of another CA was accepted")
	}
	if err := v.verify(tls.ConnectionState{}, ""); err == nil {
		t.Error("no certificate was accepted")
	}
	time.Sleep(time.Until(east.PeerCertificates[0].NotAfter) + 50*time.Millisecond)
	if err := v.verify(east, "east"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired certificate, verified before: %v", err)
	}
}

// The cluster a certificate names is read once per certificate; each
// certificate keeps its own, one that names none is refused every time,
// and the memory holds at most maxClusterCache certificates.
func TestServerClusterOfCertificates(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	east, west := testpki.ClusterIdentity(t, ca, "east").Certificate().Leaf, testpki.ClusterIdentity(t, ca, "west").Certificate().Leaf
	for range 3 {
		for cert, want := range map[*x509.Certificate]string{east: "east", west: "west"} {
			if got, err := s.clusterOf(cert); err != nil || got != want {
				t.Errorf("clusterOf: %q, %v; want %q", got, err, want)
			}
		}
	}
	noCluster := &x509.Certificate{}
	for range 2 {
		if got, err := s.clusterOf(noCluster); err == nil {
			t.Errorf("a certificate without a cluster ID: %q, no error", got)
		}
	}
	for range maxClusterCache + 10 {
		c := *east
		s.clusterOf(&c)
	}
	if n := len(s.clusters); n > maxClusterCache {
		t.Errorf("%d certificates remembered, want at most %d", n, maxClusterCache)
	}
}
