package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/pki"
)

// gateway is an edge network published on addrs, as the controller assigns
// them to an edge Gateway.
func gateway(name string, addrs ...string) model.ServiceNetwork {
	return model.ServiceNetwork{Meta: model.Meta{Name: name, Owner: cluster}, Mode: model.ModeEdge, Addresses: addrs}
}

// gatewayService is a service of network on port, answering hosts (every
// host when none).
func gatewayService(name, network string, port int32, proto model.Protocol, tg string, hosts ...string) model.Service {
	return model.Service{
		Meta: model.Meta{Name: name, Owner: cluster}, Network: network,
		Listeners: []model.Listener{{Name: "l", Port: port, Protocol: proto, Hostnames: hosts}},
		Rules:     []model.Rule{{Action: forward(to(tg, 1))}},
	}
}

// freePort returns a port free on 127.0.0.1 to 127.0.0.4 just now.
func freePort(t *testing.T) int32 {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		free := true
		for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
			other, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			other.Close()
		}
		ln.Close()
		if free {
			return int32(port)
		}
	}
	t.Fatal("no port free on 127.0.0.1-4")
	return 0
}

// TestNetworkAddresses runs two edge Gateways and a service network on one
// real port: each Gateway on its own loopback address with its own routes,
// the service network on the proxy's bind address. Then one Gateway's
// address changes.
func TestNetworkAddresses(t *testing.T) {
	a, b, m := backend(t, "a"), backend(t, "b"), backend(t, "mesh")
	port := freePort(t)
	at := func(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(int(port))) }
	snap := func(rev int64, addrA string) *model.Snapshot {
		mesh := gatewayService("mesh", "mesh", port, model.ProtocolHTTP, "m")
		mesh.DNSName = "inv.mesh.trellis.internal"
		return &model.Snapshot{Objects: model.Objects{
			Networks: append([]model.ServiceNetwork{gateway("gw-a", addrA), gateway("gw-b", "127.0.0.3")}, testNetworks...),
			TargetGroups: []model.TargetGroup{
				group("a", target(t, a, model.TargetActive)), group("b", target(t, b, model.TargetActive)),
				group("m", target(t, m, model.TargetActive)),
			},
			Services: []model.Service{
				gatewayService("ga", "gw-a", port, model.ProtocolHTTP, "a"),
				gatewayService("gb", "gw-b", port, model.ProtocolHTTP, "b", "shop.example"),
				mesh,
			},
		}, Revision: rev}
	}
	p := New(Config{Cluster: cluster, BindAddress: "127.0.0.1"})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	update(t, p, snap(1, "127.0.0.2"))
	addrs := p.Addrs()
	for b, want := range map[router.Bind]string{
		{Port: port}: at("127.0.0.1"), {Addr: "127.0.0.2", Port: port}: at("127.0.0.2"), {Addr: "127.0.0.3", Port: port}: at("127.0.0.3"),
	} {
		if addrs[b] != want {
			t.Errorf("Addrs()[%s] = %q, want %q", b, addrs[b], want)
		}
	}
	if len(addrs) != 3 {
		t.Errorf("Addrs = %v, want 3 listeners", addrs)
	}

	cl := newClient(t)
	tests := []struct {
		ip, host string
		status   int
		body     string
	}{
		{"127.0.0.2", "anything.example", 200, "a"},
		// Gateway a has a catch-all route: b's and the mesh's names are
		// just hosts to it.
		{"127.0.0.2", "shop.example", 200, "a"},
		{"127.0.0.2", "inv.mesh.trellis.internal", 200, "a"},
		{"127.0.0.3", "shop.example", 200, "b"},
		// Gateway b does not fall back on a's catch-all.
		{"127.0.0.3", "anything.example", 404, ""},
		{"127.0.0.1", "inv.mesh.trellis.internal", 200, "mesh"},
		{"127.0.0.1", "shop.example", 404, ""},
		{"127.0.0.1", "anything.example", 404, ""},
	}
	check := func() {
		t.Helper()
		for _, tt := range tests {
			if r := cl.get(at(tt.ip), tt.host, "/"); r.status != tt.status || r.body != tt.body {
				t.Errorf("%s Host %s: got %d %q, want %d %q", tt.ip, tt.host, r.status, r.body, tt.status, tt.body)
			}
		}
	}
	check()

	// Gateway a moves to 127.0.0.4: its old socket closes, the new one
	// serves its routes; the others stay where they were.
	update(t, p, snap(2, "127.0.0.4"))
	if c, err := net.DialTimeout("tcp", at("127.0.0.2"), time.Second); err == nil {
		c.Close()
		t.Errorf("the old address %s still accepts connections", at("127.0.0.2"))
	}
	if got := p.Addrs()[router.Bind{Addr: "127.0.0.4", Port: port}]; got != at("127.0.0.4") {
		t.Errorf("Addrs after the move = %v, want 127.0.0.4 listed", p.Addrs())
	}
	for i := range tests {
		if tests[i].ip == "127.0.0.2" {
			tests[i].ip = "127.0.0.4"
		}
	}
	check()
}

// TestPassthroughOnNetworkAddress serves a TLS passthrough listener of an
// edge Gateway on its own address only.
func TestPassthroughOnNetworkAddress(t *testing.T) {
	ca := pki.NewCA(t)
	tg := tlsTarget(t, ca)
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks:     append([]model.ServiceNetwork{gateway("gw-a", "127.0.0.2")}, testNetworks...),
		TargetGroups: []model.TargetGroup{tg},
		Services:     []model.Service{gatewayService("db", "gw-a", 9443, model.ProtocolTLSPassthrough, "db", "db.example.com")},
	}, Revision: 1})
	addrs := p.Addrs()
	addr := addrs[router.Bind{Addr: "127.0.0.2", Port: 9443}]
	if !strings.HasPrefix(addr, "127.0.0.2:") || len(addrs) != 1 {
		t.Fatalf("Addrs = %v, want only 127.0.0.2 for port 9443", addrs)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "db.example.com"}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/1.1 tls=true" {
		t.Errorf("through passthrough on 127.0.0.2: %q", b)
	}
}

// TestWildcardServesNetworkAddresses binds the default address on every
// interface (stood in for by a socket on 127.0.0.1 and 127.0.0.2): a
// Gateway address on the same port is not bound again but served from that
// socket by the connection's local IP, while on a port of its own it is
// bound. A Gateway address whose protocol differs from the wildcard
// socket's on its port is reported and left out.
func TestWildcardServesNetworkAddresses(t *testing.T) {
	a, m := backend(t, "a"), backend(t, "mesh")
	p := New(Config{Cluster: cluster, BindAddress: "0.0.0.0"})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	var wildcard *fanIn
	p.listen = func(b router.Bind) (net.Listener, error) {
		switch {
		case b == router.Bind{Port: webPort}:
			wildcard = newFanIn(t, "127.0.0.1:0", "127.0.0.2:0")
			return wildcard, nil
		case b == router.Bind{Addr: "127.0.0.2", Port: apiPort}:
			return net.Listen("tcp", "127.0.0.2:0")
		}
		t.Errorf("bound %s", b)
		return nil, net.ErrClosed
	}
	mesh := gatewayService("mesh", "mesh", webPort, model.ProtocolHTTP, "m")
	mesh.DNSName = "inv.mesh.trellis.internal"
	snap := &model.Snapshot{Objects: model.Objects{
		Networks:     append([]model.ServiceNetwork{gateway("gw-a", "127.0.0.2"), gateway("gw-b", "127.0.0.3")}, testNetworks...),
		TargetGroups: []model.TargetGroup{group("a", target(t, a, model.TargetActive)), group("m", target(t, m, model.TargetActive))},
		Services: []model.Service{
			gatewayService("ga", "gw-a", webPort, model.ProtocolHTTP, "a"),
			gatewayService("ga-api", "gw-a", apiPort, model.ProtocolHTTP, "a"),
			mesh,
		},
	}, Revision: 1}
	update(t, p, snap)
	if addrs := p.Addrs(); len(addrs) != 2 || addrs[router.Bind{Addr: "127.0.0.2", Port: apiPort}] == "" {
		t.Errorf("Addrs = %v, want the default socket and 127.0.0.2's own on port %d", addrs, apiPort)
	}
	on1, on2 := wildcard.lns[0].Addr().String(), wildcard.lns[1].Addr().String()
	cl := newClient(t)
	tests := []struct {
		addr, host string
		status     int
		body       string
	}{
		{on2, "anything.example", 200, "a"},
		{on2, "inv.mesh.trellis.internal", 200, "a"},
		{on1, "inv.mesh.trellis.internal", 200, "mesh"},
		{on1, "anything.example", 404, ""},
		{p.Addrs()[router.Bind{Addr: "127.0.0.2", Port: apiPort}], "anything.example", 200, "a"},
	}
	for _, tt := range tests {
		if r := cl.get(tt.addr, tt.host, "/"); r.status != tt.status || r.body != tt.body {
			t.Errorf("%s Host %s: got %d %q, want %d %q", tt.addr, tt.host, r.status, r.body, tt.status, tt.body)
		}
	}

	snap.Revision = 2
	snap.Services = append(snap.Services, gatewayService("gb", "gw-b", webPort, model.ProtocolTLSPassthrough, "a", "db.example.com"))
	err := p.Update(snap)
	if err == nil || !strings.Contains(err.Error(), "listener 127.0.0.3:8080") || !strings.Contains(err.Error(), "cannot be served") {
		t.Errorf("Update error = %v, want 127.0.0.3:8080 reported", err)
	}
	if r := cl.get(on2, "anything.example", "/"); r.body != "a" {
		t.Errorf("after the conflict: got %d %q, want a still served", r.status, r.body)
	}
}

// fanIn is one listener over several sockets: a handoffListener that
// each socket's accept loop hands its connections to.
type fanIn struct {
	*handoffListener
	lns []net.Listener
}

func newFanIn(t *testing.T, addrs ...string) *fanIn {
	t.Helper()
	f := &fanIn{}
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		f.lns = append(f.lns, ln)
	}
	f.handoffListener = newHandoffListener(f.lns[0].Addr())
	for _, ln := range f.lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil || !f.hand(c) {
					return
				}
			}
		}()
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func (f *fanIn) Close() error {
	f.handoffListener.Close()
	for _, ln := range f.lns {
		ln.Close()
	}
	return nil
}
