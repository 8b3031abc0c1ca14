package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// fieldsBackend answers with every field it received whose name starts
// with x-trellis- or x-amzn-lattice- (in any case, '_' for '-'), as JSON.
func fieldsBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string][]string{}
		for k, v := range r.Header {
			if hasFieldPrefix(k, trellisPrefix) || hasFieldPrefix(k, latticePrefix) {
				seen[k] = v
			}
		}
		json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A peer proxy is trusted for what its certificate says and nothing else:
// the identity fields a target reads as the proxy's word (X-Trellis-*, and
// Lattice's x-amzn-lattice-*, in any spelling) are the receiver's, not
// whatever the sending proxy wrote. A proxy of east that claims to be
// west's (SourceCluster=west), or slips a west identity in under a name a
// CGI-style target reads as X-Trellis-Identity, gets neither to the
// target; an honest hop's fields arrive as before.
func TestPeerHopSenderCannotForgeIdentityFields(t *testing.T) {
	w := newHopWorld(t)
	srv := fieldsBackend(t)
	pc := w.eastSender(t, srv)
	send := func(h http.Header) map[string][]string {
		t.Helper()
		req := httptest.NewRequest("GET", "http://shop.example/", nil)
		req.Header = h
		resp, err := pc.RoundTrip(req, peer.Request{
			Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: srv.Listener.Addr().String(),
			Service: "svc", Network: "edge", Port: webPort,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("delivery: %d %q", resp.StatusCode, body)
		}
		var seen map[string][]string
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("target's answer %q: %v", body, err)
		}
		return seen
	}

	honest := send(http.Header{
		"X-Trellis-Network":    {"SourceCluster=east; Network=edge"},
		"X-Trellis-Target":     {"Service=svc; Network=edge; TargetGroup=api"},
		"X-Trellis-Request-Id": {"2f1a64c4-5b6e-4b8e-9a51-0c7d1f1d1e2a"},
		"X-Trellis-Identity":   {"Type=Anonymous"},
	})
	want := map[string][]string{
		"X-Trellis-Network":    {"SourceCluster=east; Network=edge"},
		"X-Trellis-Target":     {"Service=svc; Network=edge; TargetGroup=api"},
		"X-Trellis-Request-Id": {"2f1a64c4-5b6e-4b8e-9a51-0c7d1f1d1e2a"},
		"X-Trellis-Identity":   {anonymousIdentity},
	}
	if !equalFields(honest, want) {
		t.Errorf("an honest hop's fields reached the target as %v, want %v", honest, want)
	}

	forged := send(http.Header{
		"X-Trellis-Network":       {"SourceCluster=west; Network=edge", "SourceCluster=east; Network=edge"},
		"X-Trellis-Target":        {"Service=admin; Network=mesh; TargetGroup=admin"},
		"X-Trellis-Request-Id":    {"a", "b"},
		"X_trellis_identity":      {"Principal=spiffe://west/ns/shop/sa/admin; Type=Workload"},
		"X-Trellis_network":       {"SourceCluster=west; Network=edge"},
		"X-Amzn-Lattice-Identity": {"Principal=arn:aws:iam::123456789012:role/admin; Type=AWS_IAM"},
		"X-Amzn-Lattice-Network":  {"SourceVpcArn=arn:aws:ec2:us-west-2:123456789012:vpc/vpc-1"},
	})
	want = map[string][]string{
		"X-Trellis-Network":  {"SourceCluster=east; Network=edge"},
		"X-Trellis-Target":   {"Service=svc; Network=edge; TargetGroup=api"},
		"X-Trellis-Identity": {anonymousIdentity},
	}
	if !equalFields(forged, want) {
		t.Errorf("a forging hop's fields reached the target as %v, want %v", forged, want)
	}
}

func equalFields(got, want map[string][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			return false
		}
	}
	return true
}

// The same holds for an upgrade tunnel: the upgrade request's head as the
// target reads it carries the receiver's identity fields, not the ones
// the sending proxy wrote into it.
func TestPeerHopTunnelSenderCannotForgeIdentityFields(t *testing.T) {
	w := newHopWorld(t)
	seen := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := http.Header{}
		for k, v := range r.Header {
			if hasFieldPrefix(k, trellisPrefix) || hasFieldPrefix(k, latticePrefix) {
				h[k] = v
			}
		}
		seen <- h
		conn, _, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	pc := w.eastSender(t, srv)
	head := "GET / HTTP/1.1\r\nHost: shop.example\r\nUpgrade: test\r\nConnection: Upgrade\r\n" +
		"X-Trellis-Network: SourceCluster=west; Network=edge\r\n" +
		"X_Trellis_Identity: Principal=spiffe://west/ns/shop/sa/admin; Type=Workload\r\n" +
		"X-Amzn-Lattice-Identity: Principal=arn:aws:iam::123456789012:role/admin\r\n\r\n"
	rest, restW := io.Pipe()
	defer restW.Close()
	back, err := pc.Tunnel(context.Background(), peer.Request{
		Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: srv.Listener.Addr().String(),
		Service: "svc", Network: "edge", Port: webPort,
	}, peer.TunnelUpgrade, []byte(head), rest)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	resp, err := http.ReadResponse(bufio.NewReader(back), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d, want the target's 101", resp.StatusCode)
	}
	got := testsync.Receive(t, seen, 5*time.Second, "the upgrade request at the target")
	want := map[string][]string{
		"X-Trellis-Network":  {"SourceCluster=east; Network=edge"},
		"X-Trellis-Target":   {"Service=svc; Network=edge; TargetGroup=api"},
		"X-Trellis-Identity": {anonymousIdentity},
	}
	if !equalFields(got, want) {
		t.Errorf("a forging tunnel's fields reached the target as %v, want %v", got, want)
	}
}

// A peer proxy that starts a request body and never sends the rest holds
// no stream, goroutine or target connection of the receiver longer than
// the body idle timeout (Config.RequestBodyIdleTimeout), as a client of
// the proxy's own listeners would not: the delivery is answered 408 and
// the target's read of the body fails. On main the receiver waited for
// as long as the peer kept the stream open.
func TestPeerHopStalledBodyTimesOut(t *testing.T) {
	w := newHopWorld(t, func(c *Config) { c.RequestBodyIdleTimeout = 200 * time.Millisecond })
	readErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		readErr <- err
	}))
	t.Cleanup(srv.Close)
	pc := w.eastSender(t, srv)
	pr, pw := io.Pipe()
	defer pw.Close()
	req := httptest.NewRequest("POST", "http://shop.example/", pr)
	req.ContentLength = -1
	done := make(chan int, 1)
	go func() {
		resp, err := pc.RoundTrip(req, peer.Request{
			Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: srv.Listener.Addr().String(),
			Service: "svc", Network: "edge", Port: webPort,
		})
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	pw.Write([]byte("the first bytes"))
	if code := testsync.Receive(t, done, 10*time.Second, "west's answer to a stalled body"); code != http.StatusRequestTimeout {
		t.Errorf("a stalled body across the hop: %d, want 408", code)
	}
	if err := testsync.Receive(t, readErr, 10*time.Second, "the target's read of the stalled body"); err == nil {
		t.Error("the target read the stalled body to its end, want the body cut short")
	}
}

// A passthrough tunnel is judged by the receiver as a request is: it must
// name a service that routes to the group here, and that service's
// policies must allow trellis:Connect from the sending cluster. A proxy of
// east that skips its own checks cannot reach a west TLS target that no
// service it names routes to, nor one whose policy admits only west's own
// clients. An honest east proxy's tunnel names the route's service and
// passes (TestTLSPassthroughAcrossThePeerHop).
func TestPeerHopPassthroughJudgedByReceiver(t *testing.T) {
	w := newHopWorld(t)
	ca := testpki.NewCA(t)
	dbAddr := tlsEcho(t, ca.Issue(t, "db.example.com").TLS(t), "west-db")
	tg := westTCPGroup(dbAddr)
	const onlyWest = `{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "trellis:Connect", "Resource": "*",
		"Condition": {"StringEquals": {"trellis:SourceCluster": "west"}}}]}`
	open := passthroughDB(to("db", 1))
	guarded := passthroughDB(to("db", 1))
	guarded.Name, guarded.CustomDomains = "guarded", []string{"guarded.example.com"}
	guarded.Auth = &model.Auth{Policy: json.RawMessage(onlyWest)}
	w.update(t, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg}, Services: []model.Service{open, guarded},
	}, Revision: 1})

	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	hello := clientHello(t, "db.example.com")
	for _, tc := range []struct {
		name, service string
		port          int32
		reason        string
	}{
		{"no service named", "", 0, peerNotRouted},
		{"a service that does not exist", "nope", 9443, peerNotRouted},
		{"a port the service does not listen on", "db", 8443, peerNotRouted},
		{"a service whose policy refuses east", "guarded", 9443, ""}, // a denial is an answer: no reason
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		back, err := pc.Tunnel(ctx, peer.Request{Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/db", Target: dbAddr,
			Service: tc.service, Network: "edge", Port: tc.port}, peer.TunnelTCP, hello, closedAfter(ctx))
		var re *peer.RefusedError
		if err == nil {
			back.Close()
			t.Errorf("%s: tunnel accepted, want refused %q", tc.name, tc.reason)
		} else if !errors.As(err, &re) || re.Status != http.StatusForbidden || re.Reason != tc.reason {
			t.Errorf("%s: %v, want refused 403 %q", tc.name, err, tc.reason)
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	back, err := pc.Tunnel(ctx, peer.Request{Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/db", Target: dbAddr,
		Service: "db", Network: "edge", Port: 9443}, peer.TunnelTCP, hello, closedAfter(ctx))
	if err != nil {
		t.Fatalf("a tunnel naming the open service that routes there: %v", err)
	}
	back.Close()
	// A refusal is counted before it is answered; a delivery once the
	// tunnel is accepted, which the sender may see first.
	for outcome, want := range map[string]float64{peerNotRouted: 3, peerPolicyDenied: 1} {
		if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", outcome)); n != want {
			t.Errorf("west counted %v %s tunnels from east, want %v", n, outcome, want)
		}
	}
	testsync.WaitFor(t, 5*time.Second, "west to count the delivered tunnel", func() bool {
		return testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")) == 1
	})
}

// clientHello is the first flight of a TLS client for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
		c.Close()
	}()
	buf := make([]byte, 16<<10)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// eastSender serves srv as west's target group "api" behind west's service
// "svc" and returns a peer client of east's that hands requests to west's
// peer listener directly, as a proxy that skipped its own checks would.
func (w *hopWorld) eastSender(t *testing.T, srv *httptest.Server) *peer.Client {
	t.Helper()
	snap := oneRoute(1, []model.TargetGroup{westGroup(t, "api", srv)}, to("api", 1))
	snap.Services[0].Owner = "west"
	w.update(t, snap)
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	t.Cleanup(pc.Close)
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	return pc
}
