package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// A WebSocket to another cluster's target crosses the hop as a tunnel: the
// handshake reaches the target with the identity east's proxy vouches for
// (not the one the client forged), messages go both ways, and the target
// closing its end closes the client's.
func TestWebSocketAcrossThePeerHop(t *testing.T) {
	w := newHopWorld(t)
	seen := make(chan string, 2)
	gone := make(chan error, 2)
	ws := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		seen <- c.Request().Header.Get(headerIdentity) + "|" + strings.Join(peerHeaders(c.Request().Header), ",")
		for {
			var msg string
			if err := websocket.Message.Receive(c, &msg); err != nil {
				gone <- err
				return
			}
			if msg == "bye" {
				c.Close()
				return
			}
			websocket.Message.Send(c, "west says "+msg)
		}
	}))
	t.Cleanup(ws.Close)
	tg := westGroup(t, "chat", ws)
	snap := oneRoute(1, []model.TargetGroup{tg}, to("chat", 1))
	snap.WorkloadSets = []model.WorkloadSet{{Meta: model.Meta{Name: model.WorkloadSetName("east", "shop"), Owner: "east"},
		Namespace: "shop", Workloads: []model.Workload{{Address: "127.0.0.1", ServiceAccount: "frontend"}}}}
	w.update(t, snap)

	conn := dialWeb(t, w.east)
	cfg, _ := websocket.NewConfig("ws://chat.example/ws", "http://chat.example/")
	cfg.Header = http.Header{
		headerIdentity:         {"Principal=spiffe://west/ns/shop/sa/admin; Type=Workload"},
		peer.HeaderIdentity:    {"spiffe://west/ns/shop/sa/admin"},
		peer.HeaderTunnel:      {peer.TunnelTCP},
		peer.HeaderTargetGroup: {"TargetGroup/other"},
	}
	c, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("WebSocket handshake across the hop: %v", err)
	}
	if got := <-seen; got != "Principal=spiffe://east/ns/shop/sa/frontend; Type=Workload|" {
		t.Errorf("target saw identity|peer headers %q, want east's workload and none", got)
	}
	for i := range 3 {
		msg := strings.Repeat(strconv.Itoa(i), 1+i*40000)
		if err := websocket.Message.Send(c, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(c, &got); err != nil || got != "west says "+msg {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	websocket.Message.Send(c, "bye")
	var after string
	if err := websocket.Message.Receive(c, &after); err == nil {
		t.Errorf("after the target closed: read %q, want the connection closed", after)
	}

	// The client closing its end reaches the target: its read ends.
	c2, err := websocket.Dial("ws://"+addrOf(w.east, webPort)+"/ws", "", "http://chat.example/")
	if err != nil {
		t.Fatal(err)
	}
	<-seen
	websocket.Message.Send(c2, "hello")
	var got string
	if err := websocket.Message.Receive(c2, &got); err != nil || got != "west says hello" {
		t.Fatalf("second connection: %q, %v", got, err)
	}
	c2.Close()
	testsync.Receive(t, gone, 5*time.Second, "the end of the target's read after the client closed")
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n != 2 {
		t.Errorf("west delivered %v tunnels from east, want 2", n)
	}
}

// A target that refuses the upgrade answers through the tunnel as it would
// locally.
func TestRefusedUpgradeAcrossThePeerHop(t *testing.T) {
	w := newHopWorld(t)
	api := identityBackend(t, "west-api")
	tg := westGroup(t, "api", api)
	w.update(t, oneRoute(1, []model.TargetGroup{tg}, to("api", 1)))
	conn := dialWeb(t, w.east)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: api.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "west-api 0" {
		t.Errorf("target answering the upgrade with 200: %d %q", resp.StatusCode, b)
	}
}

// A TLSRoute's backend in another cluster is reached through a tunnel:
// the client's handshake ends at west's target, whose certificate the
// client verifies, and the bytes pass unmodified both ways.
func TestTLSPassthroughAcrossThePeerHop(t *testing.T) {
	w := newHopWorld(t)
	ca := testpki.NewCA(t)
	tg := westTCPGroup(tlsEcho(t, ca.Issue(t, "db.example.com").TLS(t), "west-db"))
	w.update(t, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{passthroughDB(to("db", 1))},
	}, Revision: 1})

	for range 2 {
		conn, err := tls.Dial("tcp", addrOf(w.east, 9443), &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("handshake through east to west's target: %v", err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if got := conn.ConnectionState().PeerCertificates[0].DNSNames[0]; got != "db.example.com" {
			t.Errorf("certificate for %q, want the target's", got)
		}
		for _, msg := range []string{"ping", "\x00\xff binary \r\n"} {
			conn.Write([]byte(msg))
			buf := make([]byte, 128)
			n, err := conn.Read(buf)
			if err != nil || string(buf[:n]) != "west-db:"+msg {
				t.Errorf("answer %q, %v", buf[:n], err)
			}
		}
		conn.Close()
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n != 2 {
		t.Errorf("west delivered %v tunnels, want 2", n)
	}
}

// A tunnel goes only where it fits, with the checks of a request: a
// passthrough tunnel only to a TCP group's target (or an export's) and only
// for TLS, an upgrade only to an HTTP target and only for an upgrade, and
// never to what is not west's to deliver.
func TestPeerTunnelRefusals(t *testing.T) {
	w := newHopWorld(t)
	api := identityBackend(t, "west-api")
	raw := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(raw.Close)
	httpTG := westGroup(t, "api", api)
	tcpTG := westGroup(t, "raw", raw)
	tcpTG.Protocol = model.ProtocolTCP
	w.update(t, oneRoute(1, []model.TargetGroup{httpTG, tcpTG}, to("api", 1)))

	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	apiAddr, rawAddr := api.Listener.Addr().String(), raw.Listener.Addr().String()
	hello := "\x16\x03\x01" // not a whole ClientHello: refused like plain bytes
	upgrade := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	for _, tc := range []struct {
		name, kind, group, target, body string
		status                          int
	}{
		{"passthrough to an HTTP group", peer.TunnelTCP, "TargetGroup/api", apiAddr, hello, 403},
		{"plain bytes through a passthrough tunnel", peer.TunnelTCP, "TargetGroup/raw", rawAddr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"upgrade to a TCP group", peer.TunnelUpgrade, "TargetGroup/raw", rawAddr, upgrade, 403},
		{"upgrade tunnel without an upgrade", peer.TunnelUpgrade, "TargetGroup/api", apiAddr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"upgrade with a body", peer.TunnelUpgrade, "TargetGroup/api", apiAddr, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: a\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"a target not in the group", peer.TunnelUpgrade, "TargetGroup/api", rawAddr, upgrade, 403},
		{"an unknown kind", "udp", "TargetGroup/raw", rawAddr, hello, 403},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		back, err := pc.Tunnel(ctx, peer.Request{Cluster: "west", Addr: w.westPeer, TargetGroup: tc.group, Target: tc.target}, tc.kind,
			[]byte(tc.body), closedAfter(ctx))
		var re *peer.RefusedError
		if err == nil {
			back.Close()
			t.Errorf("%s: tunnel accepted, want %d", tc.name, tc.status)
		} else if !errors.As(err, &re) || re.Status != tc.status {
			t.Errorf("%s: %v, want refused with %d", tc.name, err, tc.status)
		}
		cancel()
	}
}

// closedAfter is a reader that blocks until ctx ends, like a client that
// sent all it had and waits.
func closedAfter(ctx context.Context) io.Reader {
	r, w := io.Pipe()
	context.AfterFunc(ctx, func() { w.Close() })
	return r
}

// Through a passthrough tunnel, either side's close reaches the other: the
// target closing after its answer ends the client's reads, and a client
// closing ends the target's.
func TestTLSPassthroughCloseAcrossThePeerHop(t *testing.T) {
	w := newHopWorld(t)
	ca := testpki.NewCA(t)
	ended := make(chan error, 4)
	addr := serveTLS(t, ca.Issue(t, "db.example.com").TLS(t), func(c net.Conn) {
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if string(buf[:n]) == "close" {
			c.Write([]byte("closing"))
			return // the target closes
		}
		c.Write(buf[:n])
		_, err = io.Copy(io.Discard, c) // until the client closes
		ended <- err
	})
	tg := westTCPGroup(addr)
	w.update(t, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{passthroughDB(to("db", 1))},
	}, Revision: 1})
	dial := func() *tls.Conn {
		conn, err := tls.Dial("tcp", addrOf(w.east, 9443), &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		return conn
	}

	conn := dial()
	conn.Write([]byte("close"))
	got, err := io.ReadAll(conn)
	if string(got) != "closing" || err != nil {
		t.Errorf("target closing: read %q, %v; want its answer, then the end", got, err)
	}
	conn.Close()

	conn = dial()
	conn.Write([]byte("ping"))
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}
	conn.Close()
	if err := testsync.Receive(t, ended, 5*time.Second, "the end of the target's read after the client closed"); err != nil {
		t.Logf("the target's read ended with %v", err)
	}
}

// A passthrough connection whose hop reached no proxy (north's cannot be
// dialled) goes to another pick, west's exported endpoint, with the
// client's bytes as they were: its handshake with west's target completes.
// The import is a TLSRoute's ServiceImport backend, weighted to north.
func TestTLSPassthroughPicksAnotherClusterWhenTheHopFails(t *testing.T) {
	w := newHopWorld(t)
	ca := testpki.NewCA(t)
	addr := tlsEcho(t, ca.Issue(t, "db.example.com").TLS(t), "west-db")
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	export := func(cluster string) model.ServiceExport {
		return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "db"), Owner: cluster},
			Namespace: "shop", Service: "db", Type: model.ExportClusterSetIP, ExportedAt: time.Now(),
			Ports: []model.ExportPort{{Protocol: "TCP", Port: 443, Targets: []model.Target{
				{Address: host, Port: int32(n), Cluster: cluster, State: model.TargetActive}}}}}
	}
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks,
		Exports:  []model.ServiceExport{export("north"), export("west")},
		Services: []model.Service{passthroughDB(model.WeightedTargetGroup{Weight: 1, Import: &model.ImportRef{
			Namespace: "shop", Name: "db", Port: 443, Protocol: model.ProtocolTCP, ProtocolVersion: model.HTTP1,
			ClusterWeights: map[string]int32{"north": 100, "west": 1}}})},
		Peers: []model.Peer{
			{Meta: model.Meta{Name: "proxy.west", Owner: "west"}, Address: w.westPeer},
			{Meta: model.Meta{Name: "proxy.north", Owner: "north"}, Address: deadAddr},
		},
		Clusters: admitted("east", "west", "north"),
	}, Revision: 1}
	update(t, w.east, snap)
	update(t, w.west, snap)
	for i := range 3 {
		conn, err := tls.Dial("tcp", addrOf(w.east, 9443), &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("ping"))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "west-db:ping" {
			t.Errorf("connection %d: %q, %v", i, buf[:n], err)
		}
		conn.Close()
	}
}

// westTCPGroup is target group db of cluster west: TCP to addr.
func westTCPGroup(addr string) model.TargetGroup {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return model.TargetGroup{Meta: model.Meta{Name: "db", Owner: "west"}, Protocol: model.ProtocolTCP, ProtocolVersion: model.HTTP1,
		Targets: []model.Target{{Address: host, Port: int32(n), Cluster: "west", State: model.TargetActive}}}
}
