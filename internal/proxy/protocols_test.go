package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/grpchealth"
	"trellis.dev/trellis/test/pki"
)

// protoBackend answers with the protocol it was spoken to in, and whether
// over TLS.
func protoBackend(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s tls=%t", r.Proto, r.TLS != nil)
}

// h2cBackend is a target that speaks only HTTP/2 with prior knowledge.
func h2cBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(protoBackend))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func versioned(g model.TargetGroup, p model.Protocol, v model.ProtocolVersion) model.TargetGroup {
	g.Protocol, g.ProtocolVersion = p, v
	return g
}

// h2cClient speaks HTTP/2 with prior knowledge, as gRPC clients do in the clear.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func body(t *testing.T, c *http.Client, url, host string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s (Host %s): %d %s", url, host, resp.StatusCode, b)
	}
	return resp.Proto, string(b)
}

// Whatever the client speaks, the target is spoken to in its group's
// protocol: HTTP/1.1, h2c, or either over TLS.
func TestProtocolConversion(t *testing.T) {
	h1 := httptest.NewServer(http.HandlerFunc(protoBackend))
	t.Cleanup(h1.Close)
	h2c := h2cBackend(t)
	tlsH1 := httptest.NewTLSServer(http.HandlerFunc(protoBackend))
	t.Cleanup(tlsH1.Close)
	tlsH2 := httptest.NewUnstartedServer(http.HandlerFunc(protoBackend))
	tlsH2.EnableHTTP2 = true
	tlsH2.StartTLS()
	t.Cleanup(tlsH2.Close)

	groups := []model.TargetGroup{
		group("h1", target(t, h1, model.TargetActive)),
		versioned(group("h2c", target(t, h2c, model.TargetActive)), model.ProtocolHTTP, model.HTTP2),
		versioned(group("grpc", target(t, h2c, model.TargetActive)), model.ProtocolHTTP, model.GRPC),
		versioned(group("tls-h1", target(t, tlsH1, model.TargetActive)), model.ProtocolHTTPS, model.HTTP1),
		versioned(group("tls-h2", target(t, tlsH2, model.TargetActive)), model.ProtocolHTTPS, model.HTTP2),
	}
	var services []model.Service
	for _, g := range groups {
		services = append(services, edgeService(g.Name, []string{g.Name + ".example.com"}, model.Rule{Action: forward(to(g.Name, 1))}))
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, Services: services, TargetGroups: groups}, Revision: 1})
	url := "http://" + addrOf(p, webPort) + "/"

	want := map[string]string{
		"h1": "HTTP/1.1 tls=false", "h2c": "HTTP/2.0 tls=false", "grpc": "HTTP/2.0 tls=false",
		"tls-h1": "HTTP/1.1 tls=true", "tls-h2": "HTTP/2.0 tls=true",
	}
	for clientName, c := range map[string]*http.Client{"HTTP/1.1": {Timeout: 5 * time.Second}, "h2c": h2cClient()} {
		for name, w := range want {
			proto, got := body(t, c, url, name+".example.com")
			if got != w {
				t.Errorf("%s client → %s group: target saw %q, want %q", clientName, name, got, w)
			}
			if clientName == "h2c" && proto != "HTTP/2.0" {
				t.Errorf("h2c client got a %s answer", proto)
			}
		}
	}
}

// An HTTPS listener terminates TLS with the certificate the client's SNI
// selects and offers HTTP/2 and HTTP/1.1 by ALPN.
func TestHTTPSListenerTerminatesBySNI(t *testing.T) {
	ca := pki.NewCA(t)
	cert := func(name string, names ...string) model.Certificate {
		l := ca.Issue(t, names...)
		return model.Certificate{Meta: model.Meta{Name: name, Owner: cluster, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	be := httptest.NewServer(http.HandlerFunc(protoBackend))
	t.Cleanup(be.Close)
	https := []model.Listener{{Name: "https", Port: 8443, Protocol: model.ProtocolHTTPS, Certificates: []string{"shop", "api"}}}
	snap := &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		Certificates: []model.Certificate{cert("api", "api.example.com"), cert("shop", "*.shop.example.com")},
		Services: []model.Service{{
			Meta: model.Meta{Name: "svc", Owner: cluster}, Network: "edge", Listeners: https,
			Rules: []model.Rule{{Action: forward(to("be", 1))}},
		}},
		TargetGroups: []model.TargetGroup{group("be", target(t, be, model.TargetActive))},
	}, Revision: 1}
	p := newTestProxy(t, nil)
	update(t, p, snap)
	addr := addrOf(p, 8443)

	for _, tc := range []struct {
		sni, wantCert string
		alpn          []string
		wantProto     string
	}{
		{"api.example.com", "api.example.com", []string{"h2", "http/1.1"}, "HTTP/2.0"},
		{"www.shop.example.com", "*.shop.example.com", []string{"http/1.1"}, "HTTP/1.1"},
	} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: tc.sni, RootCAs: ca.Pool()}, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(slices.Contains(tc.alpn, "http/1.1"))
		tr.Protocols.SetHTTP2(slices.Contains(tc.alpn, "h2"))
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
		req.Host = tc.sni
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("SNI %s: %v", tc.sni, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].DNSNames[0]; got != tc.wantCert {
			t.Errorf("SNI %s: certificate for %s, want %s", tc.sni, got, tc.wantCert)
		}
		if resp.Proto != tc.wantProto || string(b) != "HTTP/1.1 tls=false" {
			t.Errorf("SNI %s: client %s, target saw %q", tc.sni, resp.Proto, b)
		}
		tr.CloseIdleConnections()
	}

	// A certificate change applies to the next handshake, on the same port.
	renewed := cert("api", "api.example.com")
	renewed.Revision = 2
	snap.Certificates[0] = renewed
	snap.Revision = 2
	update(t, p, snap)
	if addrOf(p, 8443) != addr {
		t.Fatal("the port was reopened for a certificate change")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "api.example.com", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want, err := renewed.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(want.Leaf.SerialNumber) != 0 {
		t.Error("the renewed certificate is not served")
	}
}

// A real gRPC client reaches a real gRPC server through the proxy, in the
// clear with prior knowledge: unary calls and server streams, with the
// status carried in trailers.
func TestGRPCThroughProxy(t *testing.T) {
	tg, hs := grpcHealthTarget(t, cluster)

	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{edgeService("grpc", []string{"grpc.example.com"}, model.Rule{
			Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/grpc.health.v1.Health/"}}},
			Action:  forward(to("grpc", 1)),
		})},
	}, Revision: 1})
	checkGRPCHealth(t, addrOf(p, webPort), hs)
}

// checkGRPCHealth calls the health service that grpcHealthTarget serves
// behind the proxy at addr, as grpc.example.com: a unary Check, a gRPC
// error status (which arrives intact in the trailers), and a server stream
// whose second status is pushed later through hs. The connection is h2c
// unless opts say otherwise.
func checkGRPCHealth(t *testing.T, addr string, hs *health.Server, opts ...grpc.DialOption) {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com")}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)

	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "inventory"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check = %v, %v", resp, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("Check of an unknown service: %v, want NotFound", err)
	}
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "inventory"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first streamed status = %v, %v", m, err)
	}
	hs.SetServingStatus("inventory", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second streamed status = %v, %v", m, err)
	}
}

// grpcHealthTarget serves gRPC's health service on loopback ("inventory"
// SERVING) and returns a GRPC target group of it in cluster, and the
// health server, to change the status it streams.
func grpcHealthTarget(t testing.TB, cluster string) (model.TargetGroup, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := grpchealth.Serve(t, ln)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	tg := versioned(group("grpc", model.Target{Address: host, Port: int32(n), Cluster: cluster, State: model.TargetActive}), model.ProtocolHTTP, model.GRPC)
	tg.Owner = cluster
	return tg, hs
}

// A TLS passthrough listener routes by SNI to a TCP target group without
// decrypting: the client sees the target's own certificate.
func TestTLSPassthroughListener(t *testing.T) {
	ca := pki.NewCA(t)
	tg := tlsTarget(t, ca)
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{passthroughDB(to("db", 1))},
	}, Revision: 1})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "db.example.com"}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	resp, err := c.Get("https://" + addrOf(p, 9443) + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/1.1 tls=true" || resp.TLS.PeerCertificates[0].DNSNames[0] != "db.example.com" {
		t.Errorf("through passthrough: %q, certificate %v", b, resp.TLS.PeerCertificates[0].DNSNames)
	}
}

// passthroughDB is service db: db.example.com's TLS on port 9443, passed
// through to be.
func passthroughDB(be model.WeightedTargetGroup) model.Service {
	return model.Service{
		Meta: model.Meta{Name: "db", Owner: cluster}, Network: "edge", CustomDomains: []string{"db.example.com"},
		Listeners: []model.Listener{{Name: "tls", Port: 9443, Protocol: model.ProtocolTLSPassthrough}},
		Rules:     []model.Rule{{Action: forward(be)}},
	}
}

// tlsTarget serves protoBackend over TLS as db.example.com, with a
// certificate from ca, and returns a TCP target group "db" of it, for
// passthrough listeners.
func tlsTarget(t *testing.T, ca *pki.CA) model.TargetGroup {
	t.Helper()
	be := httptest.NewUnstartedServer(http.HandlerFunc(protoBackend))
	be.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "db.example.com").TLS(t)}}
	be.StartTLS()
	t.Cleanup(be.Close)
	return versioned(group("db", target(t, be, model.TargetActive)), model.ProtocolTCP, model.HTTP1)
}

// A port whose protocol changes is reopened with the new protocol.
func TestPortChangesProtocol(t *testing.T) {
	ca := pki.NewCA(t)
	l := ca.Issue(t, "a.example.com")
	be := httptest.NewServer(http.HandlerFunc(protoBackend))
	t.Cleanup(be.Close)
	snap := oneRoute(1, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, to("be", 1))
	p := newTestProxy(t, nil)
	update(t, p, snap)
	if _, got := body(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addrOf(p, webPort)+"/", "a.example.com"); got != "HTTP/1.1 tls=false" {
		t.Fatalf("over HTTP: %q", got)
	}
	snap.Revision = 2
	snap.Certificates = []model.Certificate{{Meta: model.Meta{Name: "a", Owner: cluster}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}}
	snap.Services[0].Listeners = []model.Listener{{Name: "https", Port: webPort, Protocol: model.ProtocolHTTPS, Certificates: []string{"a"}}}
	update(t, p, snap)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.com"}}}
	resp, err := c.Get("https://" + addrOf(p, webPort) + "/")
	if err != nil {
		t.Fatalf("after the switch to HTTPS: %v", err)
	}
	resp.Body.Close()
}

// An HTTP/1.1 upgrade (WebSocket) passes through, and the connection then
// carries the two sides' bytes both ways.
func TestUpgradePassesThrough(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo " + line)
		rw.Flush()
	}))
	t.Cleanup(be.Close)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, to("be", 1)))

	conn := dialWeb(t, p)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answer: %v, %v", resp, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Errorf("after the upgrade: %q, %v", line, err)
	}
}
