package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

// hopPolicy allows east's frontend workload everything but /admin.
const hopPolicy = `{"Statement": [
	{"Effect": "Allow", "Principal": {"Trellis": "spiffe://east/ns/shop/sa/frontend"}, "Action": "trellis:Invoke", "Resource": "*"},
	{"Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke", "Resource": "api/admin*"}]}`

// policyWorld is a hop world where service "api" (west's, with policy)
// forwards to west's target group "api", and service "open" (west's, no
// policy) to west's target group "other"; east's clients reach them
// through east's proxy and the hop.
func policyWorld(t *testing.T, apiPolicy string) (w *hopWorld, snap func(rev int64, policy string) *model.Snapshot) {
	t.Helper()
	w = newHopWorldWith(t, true)
	api := identityBackend(t, "west-api")
	other := identityBackend(t, "west-other")
	tgAPI, tgOther := westGroup(t, "api", api), westGroup(t, "other", other)
	snap = func(rev int64, policy string) *model.Snapshot {
		svc := edgeService("api", []string{"api.example.com"}, model.Rule{Action: forward(to("api", 1))})
		svc.Owner = "west"
		if policy != "" {
			svc.Auth = &model.Auth{Policy: json.RawMessage(policy)}
		}
		open := edgeService("open", []string{"open.example.com"}, model.Rule{Action: forward(to("other", 1))})
		open.Owner = "west"
		return &model.Snapshot{Objects: model.Objects{
			Networks: testNetworks, TargetGroups: []model.TargetGroup{tgAPI, tgOther}, Services: []model.Service{svc, open},
			WorkloadSets: []model.WorkloadSet{{Meta: model.Meta{Name: model.WorkloadSetName("east", "shop"), Owner: "east"},
				Namespace: "shop", Workloads: []model.Workload{{Address: "127.0.0.1", ServiceAccount: "frontend"}}}},
		}, Revision: rev}
	}
	w.update(t, snap(1, apiPolicy))
	return w, snap
}

// A proxy of east holding east's real certificate that skips the policy
// (a compromised proxy) is judged by west itself: by the policy of the
// service it names, which must really route to the target group it names.
func TestPeerHopReceiverEnforcesPolicy(t *testing.T) {
	w, _ := policyWorld(t, hopPolicy)
	target := func(name string) string {
		if ds := w.west.served.Load().peers.deliver["TargetGroup/"+name]; ds != nil {
			for _, t := range ds.targets {
				if t.Cluster == ds.cluster {
					return net.JoinHostPort(t.Address, itoa(t.EffectivePort(&model.TargetGroup{Port: ds.port})))
				}
			}
		}
		t.Fatalf("west delivers nothing of %s", name)
		return ""
	}
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})

	const frontend, other = "spiffe://east/ns/shop/sa/frontend", "spiffe://east/ns/shop/sa/other"
	for _, tc := range []struct {
		name                   string
		service, network, path string
		group                  string
		port                   int32
		identity               string
		want                   int
		body                   string
	}{
		{"allowed principal and path", "api", "edge", "/ok", "api", webPort, frontend, 200, "west-api"},
		{"another service account", "api", "edge", "/ok", "api", webPort, other, 403,
			"AccessDeniedException: User: " + other + " is not authorized to perform: trellis:Invoke on resource: api/ok"},
		{"anonymous", "api", "edge", "/ok", "api", webPort, "", 403, "User: anonymous is not authorized"},
		{"denied path", "api", "edge", "/admin/users", "api", webPort, frontend, 403, "on resource: api/admin/users"},
		{"a path spelled around the policy", "api", "edge", "/admin/../ok", "api", webPort, frontend, 400, "ambiguous request path"},
		{"a service that routes elsewhere", "open", "edge", "/ok", "api", webPort, frontend, 403, "does not route to TargetGroup/api"},
		{"a service of no policy, its own group", "open", "edge", "/ok", "other", webPort, "", 200, "west-other"},
		{"the wrong network", "api", "mesh", "/ok", "api", webPort, frontend, 403, "does not route"},
		{"a port the service does not listen on", "api", "edge", "/ok", "api", 1, frontend, 403, "does not route"},
		{"a service that does not exist", "nope", "edge", "/ok", "api", webPort, frontend, 403, "does not route"},
		{"no service", "", "", "/ok", "api", 0, frontend, 403, "does not route"},
	} {
		req := httptest.NewRequest("GET", "http://api.example.com"+tc.path, nil)
		req.URL.Path = tc.path // kept as sent: "/public/../admin" unresolved
		resp, err := pc.RoundTrip(req, peer.Request{
			Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/" + tc.group, Target: target(tc.group),
			Identity: tc.identity, Service: tc.service, Network: tc.network, Port: tc.port,
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, resp.StatusCode, body, tc.want, tc.body)
		}
	}
	for outcome, want := range map[string]float64{peerPolicyDenied: 4, peerNotRouted: 5, "Delivered": 2} {
		if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", outcome)); n != want {
			t.Errorf("west counted %v %s requests from east, want %v", n, outcome, want)
		}
	}
	// West logs every request east handed over, as it arrived: each
	// policy denial with the level that denied it, each request no service
	// here routes as not deliverable.
	var lines []map[string]any
	testsync.WaitFor(t, 5*time.Second, "11 access log lines on west", func() bool { lines = logLines(t, w.westLog); return len(lines) >= 11 })
	count := map[any]int{}
	for _, l := range lines {
		count[l["failureReason"]]++
		if l["sourceCluster"] != "east" || l["destinationCluster"] != "west" {
			t.Errorf("west's access log line names the wrong clusters: %v", l)
		}
		if l["failureReason"] == "ClientAccessDenied" && (l["responseCode"] != 403.0 || l["service"] != "api" ||
			l["serviceNetwork"] != "edge" || l["authDeniedReason"] != "Service") {
			t.Errorf("west's access log line of a denial: %v", l)
		}
	}
	if want := map[any]int{"ClientAccessDenied": 3, "MalformedRequest": 1, "PeerNotDeliverable": 5, "-": 2}; len(lines) != 11 || !maps.Equal(count, want) {
		t.Errorf("west logged %d lines by failure reason %v, want %v", len(lines), count, want)
	}
}

// Traffic the sending proxy allows is delivered (the receiver judges it
// the same way), and traffic it denies never reaches the receiver. A
// condition on the source address cannot be met on a route that reaches
// another cluster, on either proxy, while a route to local targets still
// meets it.
func TestPeerHopPolicyAgreesBothEnds(t *testing.T) {
	w, snap := policyWorld(t, hopPolicy)
	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	if r := cl.get(addr, "api.example.com", "/ok?x=1"); r.status != 200 || !strings.HasPrefix(r.body, "west-api") {
		t.Errorf("allowed across the hop: %d %q", r.status, r.body)
	}
	if r := cl.get(addr, "api.example.com", "/admin"); r.status != 403 || !strings.Contains(r.body, "AccessDeniedException") {
		t.Errorf("denied by east: %d %q", r.status, r.body)
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n != 1 {
		t.Errorf("west delivered %v, want the allowed request only", n)
	}

	// An Allow on the caller's address: met on a route to east's own
	// targets, not on one that reaches west, by either proxy.
	const byIP = `{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*",
		"Condition": {"IpAddress": {"trellis:SourceIp": "127.0.0.0/8"}}}]}`
	s := snap(2, byIP)
	local := identityBackend(t, "east-local")
	tgLocal := group("local", clusterTarget(t, local, "east"))
	tgLocal.Owner = "east"
	s.TargetGroups = append(s.TargetGroups, tgLocal)
	lsvc := edgeService("local", []string{"local.example.com"}, model.Rule{Action: forward(to("local", 1))})
	lsvc.Owner, lsvc.Auth = "east", &model.Auth{Policy: json.RawMessage(byIP)}
	s.Services = append(s.Services, lsvc)
	w.update(t, s)
	if r := cl.get(addr, "local.example.com", "/"); r.status != 200 || !strings.HasPrefix(r.body, "east-local") {
		t.Errorf("source address condition on a local route: %d %q", r.status, r.body)
	}
	if r := cl.get(addr, "api.example.com", "/"); r.status != 403 || !strings.Contains(r.body, "AccessDeniedException") {
		t.Errorf("source address condition on a route to west: %d %q, want east's 403", r.status, r.body)
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", peerPolicyDenied)); n != 0 {
		t.Errorf("west denied %v requests: east should have refused them first", n)
	}
}

// A client of the sending proxy cannot choose the service the receiver
// judges by: its Trellis-Peer-* headers are dropped, and the sender names
// the route's service. East's configuration is a version behind west's
// here (no policy yet); west judges by the policy it has.
func TestPeerHopServiceHeaderNotForgeable(t *testing.T) {
	w, snap := policyWorld(t, "")
	denyAll := `{"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]}`
	s := snap(2, denyAll)
	s.Peers = []model.Peer{{Meta: model.Meta{Name: "proxy.west", Owner: "west"}, Address: w.westPeer}}
	s.Clusters = admitted("east", "west")
	update(t, w.west, s)

	req, _ := http.NewRequest("GET", "http://"+addrOf(w.east, webPort)+"/", nil)
	req.Host = "api.example.com"
	req.Header.Set(peer.HeaderService, "open")
	req.Header.Set(peer.HeaderNetwork, "edge")
	req.Header.Set(peer.HeaderPort, itoa(webPort))
	req.Header.Set(peer.HeaderTargetGroup, "TargetGroup/other")
	resp, err := newClient(t).c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "on resource: api/") {
		t.Errorf("with forged peer headers: %d %q, want west's 403 for api", resp.StatusCode, body)
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", peerPolicyDenied)); n != 1 {
		t.Errorf("west counted %v policy denials, want 1", n)
	}
}

// FuzzPeerRoutedFor feeds a peer's claims (service, network, port, group)
// to the receiver's check: it never panics, and it accepts exactly the
// claims the configuration bears out.
func FuzzPeerRoutedFor(f *testing.F) {
	api := edgeService("api", []string{"api.example.com"}, model.Rule{Action: forward(to("api", 1))})
	api.Owner = "west"
	// East's service naming west's target group routes nothing to it.
	evil := edgeService("evil", []string{"evil.example.com"}, model.Rule{Action: forward(to("api", 1))})
	evil.Owner = "east"
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks,
		TargetGroups: []model.TargetGroup{
			{Meta: model.Meta{Name: "api", Owner: "west"}, Protocol: model.ProtocolHTTP, Port: 80},
		},
		Services: []model.Service{
			api, evil,
			edgeService("cart", nil, model.Rule{Action: forward(model.WeightedTargetGroup{Weight: 1, Import: &model.ImportRef{
				Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}})}),
		},
	}}
	tab, err := new(router.Compiler).Compile(snap)
	if err != nil {
		f.Fatal(err)
	}
	sv := &served{table: tab}
	port := itoa(webPort)
	valid := map[[4]string]bool{
		{"api", "edge", port, "TargetGroup/api"}:                                            true,
		{"cart", "edge", port, "ServiceExport/" + model.ExportName("west", "shop", "cart")}: true,
	}
	for k := range valid {
		f.Add(k[0], k[1], k[2], k[3])
	}
	f.Add("api", "mesh", port, "TargetGroup/api")
	f.Add("evil", "edge", port, "TargetGroup/api")
	f.Add("api", "edge", "+"+port, "TargetGroup/api")
	f.Add("cart", "edge", port, "ServiceExport/"+model.ExportName("east", "shop", "cart"))
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, service, network, port, group string) {
		svc, p := routedFor(sv, peer.Delivery{Service: service, Network: network, Port: port, TargetGroup: group}, "west")
		n, err := strconv.ParseInt(port, 10, 32)
		want := err == nil && valid[[4]string{service, network, itoa(int32(n)), group}]
		if (svc != nil) != want {
			t.Fatalf("routedFor(%q, %q, %q, %q) = %v, want accepted %v", service, network, port, group, svc, want)
		}
		if svc != nil && (svc.Name != service || p != webPort) {
			t.Fatalf("accepted as %s on %d", svc.Name, p)
		}
	})
}

// countingListener counts the connections a target accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// An upgrade tunnel is judged as a request is: a proxy of east holding
// east's real certificate that skips its own policy opens tunnels west
// must refuse by the policy of the service named, and by whether that
// service routes to the group; west then never reaches the target.
func TestPeerHopReceiverJudgesUpgradeTunnels(t *testing.T) {
	w, snap := policyWorld(t, hopPolicy)
	seen := make(chan string, 4)
	ws := httptest.NewUnstartedServer(websocket.Handler(func(c *websocket.Conn) {
		seen <- c.Request().Header.Get(headerIdentity)
		c.Close()
	}))
	accepts := &countingListener{Listener: ws.Listener}
	ws.Listener = accepts
	ws.Start()
	t.Cleanup(ws.Close)
	s := snap(2, hopPolicy)
	s.TargetGroups[0].Targets = []model.Target{clusterTarget(t, ws, "west")} // group "api"
	w.update(t, s)
	wsTarget := ws.Listener.Addr().String()
	if !w.west.served.Load().peers.deliver["TargetGroup/api"].target(wsTarget) {
		t.Fatalf("west does not deliver TargetGroup/api to the WebSocket target %s", wsTarget)
	}
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})

	const frontend, other = "spiffe://east/ns/shop/sa/frontend", "spiffe://east/ns/shop/sa/other"
	upgrade := func(service, path, identity string) (*http.Response, error) {
		head := "GET " + path + " HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://api.example.com/\r\n\r\n"
		rest, restW := io.Pipe()
		t.Cleanup(func() { restW.Close() })
		back, err := pc.Tunnel(context.Background(), peer.Request{
			Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: wsTarget,
			Identity: identity, Service: service, Network: "edge", Port: webPort,
		}, peer.TunnelUpgrade, []byte(head), rest)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { back.Close() })
		return http.ReadResponse(bufio.NewReader(back), nil)
	}
	for _, tc := range []struct {
		name                    string
		service, path, identity string
		reason                  string // Trellis-Peer-Refused: none for a denial, an answer and final
		counted                 string
		body                    string
	}{
		{"another service account", "api", "/ws", other, "", peerPolicyDenied,
			"User: " + other + " is not authorized to perform: trellis:Invoke on resource: api/ws"},
		{"anonymous", "api", "/ws", "", "", peerPolicyDenied, "User: anonymous is not authorized"},
		{"denied path", "api", "/admin/ws", frontend, "", peerPolicyDenied, "on resource: api/admin/ws"},
		{"a service that routes elsewhere", "open", "/ws", frontend, peerNotRouted, peerNotRouted, "does not route to TargetGroup/api"},
		{"a service that does not exist", "nope", "/ws", frontend, peerNotRouted, peerNotRouted, "does not route"},
	} {
		before := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", tc.counted))
		resp, err := upgrade(tc.service, tc.path, tc.identity)
		if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", tc.counted)); n != before+1 {
			t.Errorf("%s: west's %s count went from %v to %v, want one more", tc.name, tc.counted, before, n)
		}
		var refused *peer.RefusedError
		if !errors.As(err, &refused) || refused.Status != 403 || refused.Reason != tc.reason || !strings.Contains(refused.Body, tc.body) {
			if resp != nil {
				resp.Body.Close()
			}
			t.Errorf("%s: %v (response %v), want refused 403 %q with %q", tc.name, err, resp, tc.reason, tc.body)
		}
	}
	if n := accepts.n.Load(); n != 0 {
		t.Errorf("the target accepted %d connections of refused tunnels, want none", n)
	}
	for outcome, want := range map[string]float64{peerPolicyDenied: 3, peerNotRouted: 2, "Delivered": 0} {
		if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", outcome)); n != want {
			t.Errorf("west counted %v %s tunnels from east, want %v", n, outcome, want)
		}
	}

	resp, err := upgrade("api", "/ws", frontend)
	if err != nil {
		t.Fatalf("allowed principal: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("allowed principal: %d %v, want 101 with the target's accept key", resp.StatusCode, resp.Header)
	}
	if id := testsync.Receive(t, seen, 5*time.Second, "the allowed upgrade at the target's handler"); id != "Principal="+frontend+"; Type=Workload" {
		t.Errorf("the target saw identity %q, want east's frontend", id)
	}
	if n := accepts.n.Load(); n != 1 {
		t.Errorf("the target accepted %d connections, want the allowed tunnel's", n)
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n != 1 {
		t.Errorf("west delivered %v tunnels, want 1", n)
	}
}
