package proxy

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/proxy/accesslog"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// hopWorld is two clusters' proxies on loopback joined by the peer hop:
// east serves the routes, west delivers to its own targets.
type hopWorld struct {
	ca         *pki.CA
	east, west *Proxy
	westPeer   string // west's peer listener
	westSrv    *peer.HTTPServer
	eastID     *pki.Identity
	// eastLog and westLog receive the proxies' access logs, when asked
	// for (newHopWorldWith).
	eastLog, westLog *testsync.Buffer
}

func newHopWorld(t testing.TB, configure ...func(*Config)) *hopWorld {
	return newHopWorldWith(t, false, configure...)
}

// newHopWorldWith is newHopWorld with, when logged, both proxies' access
// logs in eastLog and westLog.
func newHopWorldWith(t testing.TB, logged bool, configure ...func(*Config)) *hopWorld {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w := &hopWorld{ca: ca, eastID: testpki.ClusterIdentity(t, ca, "east"), eastLog: &testsync.Buffer{}, westLog: &testsync.Buffer{}}
	newProxy := func(cluster string, id *pki.Identity, log *testsync.Buffer) *Proxy {
		pc := peer.NewClient(id, ca.Pool())
		t.Cleanup(pc.Close)
		cfg := Config{Cluster: cluster, BindAddress: "127.0.0.1", Peer: pc, Logger: slog.New(slog.DiscardHandler)}
		if logged {
			cfg.AccessLog, cfg.test.accessLog = log, accesslog.Options{FlushInterval: 5 * time.Millisecond}
		}
		for _, f := range configure {
			f(&cfg)
		}
		return newTestProxyWith(t, cfg)
	}
	w.east = newProxy("east", w.eastID, w.eastLog)
	westID := testpki.ClusterIdentity(t, ca, "west")
	w.west = newProxy("west", westID, w.westLog)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := peer.NewHTTPServer(w.west.PeerHandler(), slog.New(slog.DiscardHandler))
	go srv.Serve(tls.NewListener(ln, peer.TLSConfig(westID, ca.Pool())))
	t.Cleanup(func() { srv.Close() })
	w.westPeer, w.westSrv = ln.Addr().String(), srv
	return w
}

// update gives both proxies the same snapshot, as the control plane does.
func (w *hopWorld) update(t testing.TB, snap *model.Snapshot) {
	t.Helper()
	ownServices(snap)
	snap.Peers = []model.Peer{{Meta: model.Meta{Name: "proxy.west", Owner: "west"}, Address: w.westPeer}}
	if snap.Clusters == nil {
		snap.Clusters = admitted("east", "west")
	}
	update(t, w.east, snap)
	update(t, w.west, snap)
}

// ownServices gives each service of snap that the fixtures left to the
// test's cluster (edgeService) the owner of the first target group it
// forwards to, as a translator writes them: a service forwards only to
// its own cluster's target groups (router's builder.group).
func ownServices(snap *model.Snapshot) {
	owners := map[string]string{}
	for _, tg := range snap.TargetGroups {
		owners[tg.Name] = tg.Owner
	}
	for i := range snap.Services {
		svc := &snap.Services[i]
		if svc.Owner != cluster {
			continue
		}
	rules:
		for _, r := range svc.Rules {
			if r.Action.Forward == nil {
				continue
			}
			for _, b := range r.Action.Forward.Backends {
				if o, ok := owners[b.TargetGroup]; ok {
					svc.Owner = o
					break rules
				}
			}
		}
	}
}

// identityBackend answers with its name and the identity and forwarding
// fields it received.
func identityBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Identity", r.Header.Get(headerIdentity))
		w.Header().Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Seen-Peer-Headers", strings.Join(peerHeaders(r.Header), ","))
		io.WriteString(w, name+" "+itoa(int32(len(b))))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func peerHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, peer.HeaderPrefix) {
			out = append(out, k)
		}
	}
	return out
}

func clusterTarget(t testing.TB, srv *httptest.Server, cluster string) model.Target {
	tt := target(t, srv, model.TargetActive)
	tt.Cluster = cluster
	return tt
}

// westGroup is target group name, owned by west, of srv as a target in
// west.
func westGroup(t testing.TB, name string, srv *httptest.Server) model.TargetGroup {
	tg := group(name, clusterTarget(t, srv, "west"))
	tg.Owner = "west"
	return tg
}

// westAPIGroup is westGroup "api" of an identityBackend answering as
// west-api.
func westAPIGroup(t *testing.T) model.TargetGroup {
	t.Helper()
	return westGroup(t, "api", identityBackend(t, "west-api"))
}

// A request for another cluster's target crosses the hop to that cluster's
// proxy, which delivers it; the caller's workload identity travels with it.
func TestPeerHopDeliversWithIdentity(t *testing.T) {
	w := newHopWorld(t)
	tg := westAPIGroup(t)
	snap := oneRoute(1, []model.TargetGroup{tg}, to("api", 1))
	for i := range snap.Networks {
		snap.Networks[i].Owner = "east"
	}
	snap.Services[0].Owner = "west" // in east's network
	snap.WorkloadSets = []model.WorkloadSet{{Meta: model.Meta{Name: model.WorkloadSetName("east", "shop"), Owner: "east"},
		Namespace: "shop", Workloads: []model.Workload{{Address: "127.0.0.1", ServiceAccount: "frontend"}}}}
	w.update(t, snap)

	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	for _, body := range []string{"", strings.Repeat("x", 300<<10)} {
		method := http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/x", strings.NewReader(body))
		req.Host = "shop.example"
		req.Header.Set(peer.HeaderIdentity, "spiffe://west/ns/shop/sa/admin") // forged: never passes
		req.Header.Set(headerIdentity, "Principal=spiffe://west/ns/shop/sa/admin; Type=Workload")
		resp, err := cl.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != "west-api "+itoa(int32(len(body))) {
			t.Fatalf("%s across the hop: %d %q", method, resp.StatusCode, got)
		}
		if id := resp.Header.Get("X-Seen-Identity"); id != "Principal=spiffe://east/ns/shop/sa/frontend; Type=Workload" {
			t.Errorf("target saw identity %q, want the east workload's", id)
		}
		if ph := resp.Header.Get("X-Seen-Peer-Headers"); ph != "" {
			t.Errorf("peer protocol fields reached the target: %s", ph)
		}
		if xff := resp.Header.Get("X-Seen-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("target saw X-Forwarded-For %q, want the client's address as east's proxy set it", xff)
		}
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n != 2 {
		t.Errorf("west counted %v deliveries from east, want 2", n)
	}
}

// A peer may have delivered only this cluster's targets of the group it
// names: anything else on the receiver's network is refused.
func TestPeerHopRefusesWhatIsNotDeliverable(t *testing.T) {
	w := newHopWorld(t)
	api := identityBackend(t, "west-api")
	other := identityBackend(t, "not-in-config")
	tg := westGroup(t, "api", api)
	w.update(t, oneRoute(1, []model.TargetGroup{tg}, to("api", 1)))

	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.CloseIdleConnections()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	for _, tc := range []struct{ group, target string }{
		{"TargetGroup/api", other.Listener.Addr().String()},            // a target not in the group
		{"TargetGroup/other", api.Listener.Addr().String()},            // a group that does not exist
		{"ServiceExport/shop.cart.west", api.Listener.Addr().String()}, // an export that does not exist
		{"api", api.Listener.Addr().String()},                          // no kind
		{"TargetGroup/api", strings.Replace(api.Listener.Addr().String(), "127.0.0.1", "127.0.0.2", 1)},
	} {
		resp, err := pc.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), peer.Request{
			Cluster: "west", Addr: w.westPeer, TargetGroup: tc.group, Target: tc.target,
		})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "not-in-config") {
			t.Errorf("%+v: %d %q, want 403", tc, resp.StatusCode, body)
		}
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "NotDeliverable")); n != 5 {
		t.Errorf("west counted %v refusals, want 5", n)
	}
}

// An import backend picks among every exporting cluster's endpoints, by the
// import's cluster weights: this cluster's directly, another's through the
// hop. Without a proxy of the other cluster it answers 502.
func TestImportBackendAcrossClusters(t *testing.T) {
	w := newHopWorld(t)
	eastCart, westCart := identityBackend(t, "east-cart"), identityBackend(t, "west-cart")
	imp := func(weights map[string]int32) *model.Snapshot {
		snap := cartImport(nil, cartExport(t, "east", eastCart), cartExport(t, "west", westCart))
		snap.Services[0].Rules[0].Action.Forward.Backends[0].Import.ClusterWeights = weights
		return snap
	}
	cl := newClient(t)

	w.update(t, imp(map[string]int32{"east": 90, "west": 10}))
	if got := cl.tally(addrOf(w.east, webPort), 200); got["east-cart/200"] != 180 || got["west-cart/200"] != 20 {
		t.Errorf("90/10 by cluster: %v, want 180 east and 20 west", got)
	}
	w.update(t, imp(nil))
	if got := cl.tally(addrOf(w.east, webPort), 100); got["east-cart/200"] != 50 || got["west-cart/200"] != 50 {
		t.Errorf("no weights: %v, want 50/50", got)
	}
	// A UDP port of the same number is not the backend's: east's targets
	// count once though it exports 80/TCP and 80/UDP.
	withUDP := imp(nil)
	withUDP.Exports[0].Ports = append(withUDP.Exports[0].Ports, model.ExportPort{Name: "udp", Protocol: "UDP", Port: 80,
		Targets: withUDP.Exports[0].Ports[0].Targets})
	w.update(t, withUDP)
	if got := cl.tally(addrOf(w.east, webPort), 100); got["east-cart/200"] != 50 || got["west-cart/200"] != 50 {
		t.Errorf("east exporting 80/TCP and 80/UDP: %v, want 50/50", got)
	}
	// West's proxy dies: the connection that breaks (or the next dial,
	// refused) takes west out of the pick at once, and its share goes to
	// east until west answers again.
	w.update(t, imp(map[string]int32{"east": 50, "west": 50}))
	if got := cl.tally(addrOf(w.east, webPort), 20); got["east-cart/200"] != 10 || got["west-cart/200"] != 10 {
		t.Fatalf("50/50 by cluster: %v", got)
	}
	w.westSrv.Close()
	got := cl.tally(addrOf(w.east, webPort), 200)
	if got["east-cart/200"] < 198 {
		t.Errorf("after west's proxy died: %v, want all but the first one or two to east", got)
	}
	t.Logf("after west's proxy died: %v", got)

	// Without a proxy of west to hop to, west's share fails: 502.
	snap := imp(map[string]int32{"west": 1})
	update(t, w.east, snap) // no Peers
	if got := cl.tally(addrOf(w.east, webPort), 10); got["?/502"]+got["/502"] != 10 {
		t.Errorf("no west proxy: %v, want 10 × 502", got)
	}
}

// An export from a namespace its cluster's admission no longer lists
// leaves the import's pick in every proxy, and its cluster's proxy no
// longer delivers to it: a request naming it over the hop is refused.
func TestExportOutsideItsClustersNamespacesLeavesThePick(t *testing.T) {
	w := newHopWorld(t)
	eastCart, westCart := identityBackend(t, "east-cart"), identityBackend(t, "west-cart")
	exports := []model.ServiceExport{cartExport(t, "east", eastCart), cartExport(t, "west", westCart)}
	// Served by both at first; then west's admission narrows to namespace
	// web, and the proxies that served its export stop (an update of the
	// clusters alone, which the incremental compile must not miss).
	snap := cartImport(nil, exports...)
	w.update(t, snap)
	cl := newClient(t)
	if got := cl.tally(addrOf(w.east, webPort), 40); got["west-cart/200"] == 0 || got["east-cart/200"] == 0 {
		t.Fatalf("both exporting clusters unlimited: %v, want some to each", got)
	}
	snap = cartImport(nil, exports...)
	snap.Revision = 2
	snap.Clusters = admitted("east", "west")
	snap.Clusters[1].ExportNamespaces = []string{"web"}
	w.update(t, snap)
	if got := cl.tally(addrOf(w.east, webPort), 40); got["east-cart/200"] != 40 {
		t.Errorf("west limited to namespace web: %v, want all 40 to east", got)
	}
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	resp, err := pc.RoundTrip(httptest.NewRequest("GET", "http://cart.shop.svc.clusterset.local/", nil), peer.Request{
		Cluster: "west", Addr: w.westPeer, TargetGroup: "ServiceExport/" + model.ExportName("west", "shop", "cart"), Target: westCart.Listener.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Refused as no longer deliverable, before any route is looked at.
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(peer.HeaderRefused) != peerNotDeliverable || strings.Contains(string(body), "west-cart") {
		t.Errorf("a hop to west's unserved export: %d (%s) %q, want 403 (%s)", resp.StatusCode, resp.Header.Get(peer.HeaderRefused), body, peerNotDeliverable)
	}
}

func admitted(names ...string) []model.Cluster {
	var out []model.Cluster
	for _, n := range names {
		out = append(out, model.Cluster{Meta: model.Meta{Name: n, Owner: model.ControlPlaneOwner}})
	}
	return out
}

// A cluster removed from the control plane is cut off from the hop both
// ways as soon as the proxies have the configuration that says so, though
// its certificate is still valid: its proxies' requests are refused, and
// no request is sent to them.
func TestPeerHopOnlyBetweenAdmittedClusters(t *testing.T) {
	w := newHopWorld(t)
	api := identityBackend(t, "west-api")
	tg := westGroup(t, "api", api)
	snap := oneRoute(1, []model.TargetGroup{tg}, to("api", 1))
	w.update(t, snap)
	cl := newClient(t)
	if r := cl.get(addrOf(w.east, webPort), "shop.example", "/"); r.status != 200 {
		t.Fatalf("both admitted: %d", r.status)
	}

	// West removed: east sends nothing to west's proxy.
	snap = oneRoute(2, []model.TargetGroup{tg}, to("api", 1))
	snap.Clusters = admitted("east")
	w.update(t, snap)
	if r := cl.get(addrOf(w.east, webPort), "shop.example", "/"); r.status != http.StatusBadGateway {
		t.Errorf("to a removed cluster: %d, want 502", r.status)
	}

	// East removed, as west's proxy sees it: east's requests are refused.
	snap = oneRoute(3, []model.TargetGroup{tg}, to("api", 1))
	snap.Clusters = admitted("west")
	update(t, w.west, snap)
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	resp, err := pc.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), peer.Request{
		Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: api.Listener.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("from a removed cluster: %d, want 403", resp.StatusCode)
	}
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "NotAdmitted")); n != 1 {
		t.Errorf("west counted %v refusals of a removed cluster, want 1", n)
	}
}

// gRPC crosses the hop: unary calls, an error status in the trailers, and
// a server stream whose messages arrive as the target sends them.
func TestGRPCAcrossThePeerHop(t *testing.T) {
	w := newHopWorld(t)
	tg, hs := grpcHealthTarget(t, "west")
	w.update(t, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{edgeService("grpc", []string{"grpc.example.com"}, model.Rule{Action: forward(to("grpc", 1))})},
	}, Revision: 1})

	checkGRPCHealth(t, addrOf(w.east, webPort), hs)
	if n := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "Delivered")); n < 3 {
		t.Errorf("west delivered %v requests from east, want the 3 calls", n)
	}
}

// A policy allowing ns/shop/sa/frontend from any cluster admits that
// workload whether it calls from east or from west, through each cluster's
// own proxy, and denies another service account of the same cluster; the
// target is in west either way.
func TestPolicyAcrossClusters(t *testing.T) {
	w := newHopWorld(t)
	tg := westAPIGroup(t)
	svc := edgeService("api", []string{"api.example.com"}, model.Rule{Action: forward(to("api", 1))})
	svc.Owner = "west"
	svc.Auth = &model.Auth{Policy: json.RawMessage(`{"Statement": [
		{"Effect": "Allow", "Principal": {"Trellis": "spiffe://*/ns/shop/sa/frontend"}, "Action": "trellis:Invoke", "Resource": "*"}]}`)}
	set := func(owner, sa string) model.WorkloadSet {
		return model.WorkloadSet{Meta: model.Meta{Name: model.WorkloadSetName(owner, "shop"), Owner: owner}, Namespace: "shop",
			Workloads: []model.Workload{{Address: "127.0.0.1", ServiceAccount: sa}}}
	}
	snap := func(rev int64, eastSA, westSA string) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{
			Networks: testNetworks, TargetGroups: []model.TargetGroup{tg}, Services: []model.Service{svc},
			WorkloadSets: []model.WorkloadSet{set("east", eastSA), set("west", westSA)},
		}, Revision: rev}
	}
	cl := newClient(t)
	call := func(p *Proxy) (int, string) {
		r := cl.get(addrOf(p, webPort), "api.example.com", "/")
		return r.status, r.header.Get("X-Seen-Identity")
	}

	// frontend in both clusters: each proxy admits its own caller.
	w.update(t, snap(1, "frontend", "frontend"))
	if code, id := call(w.east); code != 200 || id != "Principal=spiffe://east/ns/shop/sa/frontend; Type=Workload" {
		t.Errorf("east's frontend: %d %q", code, id)
	}
	if code, id := call(w.west); code != 200 || id != "Principal=spiffe://west/ns/shop/sa/frontend; Type=Workload" {
		t.Errorf("west's frontend: %d %q", code, id)
	}
	// Another service account in the same clusters: denied.
	w.update(t, snap(2, "other", "other"))
	for _, p := range []*Proxy{w.east, w.west} {
		if code, _ := call(p); code != http.StatusForbidden {
			t.Errorf("%s's other service account: %d, want 403", p.cluster, code)
		}
	}
}

// A cluster whose lease lapsed leaves an import's pick at once, though its
// proxy still answers, and comes back when the lease is alive again; the
// proxy's own cluster never leaves its own picks, whatever it is told.
func TestLapsedClusterLeavesThePick(t *testing.T) {
	w := newHopWorld(t)
	eastCart, westCart := identityBackend(t, "east-cart"), identityBackend(t, "west-cart")
	snap := cartImport(nil, cartExport(t, "east", eastCart), cartExport(t, "west", westCart))
	w.update(t, snap)
	cl, addr := newClient(t), addrOf(w.east, webPort)
	if got := cl.tally(addr, 20); got["east-cart/200"] != 10 || got["west-cart/200"] != 10 {
		t.Fatalf("both alive: %v, want 10/10", got)
	}
	w.east.SetLapsed(map[string]bool{"west": true})
	if !w.east.Lapsed("west") {
		t.Fatal("Lapsed(west) is false after SetLapsed named it")
	}
	if got := cl.tally(addr, 20); got["east-cart/200"] != 20 {
		t.Errorf("west lapsed: %v, want all 20 to east", got)
	}
	w.east.SetLapsed(map[string]bool{"west": false, "north": true})
	if got := cl.tally(addr, 20); got["east-cart/200"] != 10 || got["west-cart/200"] != 10 {
		t.Errorf("west alive again: %v, want 10/10", got)
	}
	w.east.SetLapsed(map[string]bool{"east": true})
	if w.east.Lapsed("east") {
		t.Error("the proxy's own cluster counted as lapsed")
	}
	if got := cl.tally(addr, 20); got["east-cart/200"] != 10 || got["west-cart/200"] != 10 {
		t.Errorf("own cluster told lapsed: %v, want 10/10", got)
	}
}

// Both ends of the hop log a request and count it with its source and
// destination cluster: the sending proxy (east) and the delivering one
// (west), whose entry names the target group and target it delivered to.
// A request a peer cannot have delivered is logged by the receiver too.
func TestPeerHopLogsAndCountsBothClusters(t *testing.T) {
	w := newHopWorldWith(t, true)
	api := identityBackend(t, "west-api")
	tg := westGroup(t, "api", api)
	w.update(t, oneRoute(1, []model.TargetGroup{tg}, to("api", 1)))
	cl := newClient(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addrOf(w.east, webPort)+"/orders", strings.NewReader("0123456789"))
	req.Host = "shop.example"
	resp, err := cl.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("across the hop: %d", resp.StatusCode)
	}
	var sent, received map[string]any
	testsync.WaitFor(t, 10*time.Second, "an access-log entry on both ends", func() bool {
		e, r := logLines(t, w.eastLog), logLines(t, w.westLog)
		if len(e) > 0 && len(r) > 0 {
			sent, received = e[0], r[0]
			return true
		}
		return false
	})
	target := api.Listener.Addr().String()
	for name, want := range map[string]map[string]any{
		"east's (sending)": {"sourceCluster": "east", "destinationCluster": "west", "targetIpPort": target, "responseCode": 200.0,
			"targetGroup": "api", "bytesReceived": 10.0},
		"west's (delivering)": {"sourceCluster": "east", "destinationCluster": "west", "targetIpPort": target, "responseCode": 200.0,
			"targetGroup": "TargetGroup/api", "requestPath": "/orders", "hostHeader": "shop.example", "bytesReceived": 10.0,
			"requestId": sent["requestId"], "failureReason": "-"},
	} {
		got := sent
		if strings.HasPrefix(name, "west") {
			got = received
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s entry: %s = %v, want %v (entry %v)", name, k, got[k], v, got)
			}
		}
	}
	if n := testutil.ToFloat64(w.east.metrics.hops.WithLabelValues("sent", "east", "west", "200")); n != 1 {
		t.Errorf("east counted %v requests sent to west, want 1", n)
	}
	if n := testutil.ToFloat64(w.west.metrics.hops.WithLabelValues("received", "east", "west", "200")); n != 1 {
		t.Errorf("west counted %v requests received from east, want 1", n)
	}

	// A target west does not deliver to: refused, and logged as such.
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	resp, err = pc.RoundTrip(httptest.NewRequest("GET", "http://shop.example/", nil), peer.Request{
		Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/api", Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testsync.WaitFor(t, 10*time.Second, "the refusal's entry", func() bool {
		r := logLines(t, w.westLog)
		return len(r) == 2 && r[1]["failureReason"] == "PeerNotDeliverable" && r[1]["responseCode"] == 403.0 && r[1]["sourceCluster"] == "east"
	})
	if n := testutil.ToFloat64(w.west.metrics.hops.WithLabelValues("received", "east", "west", "403")); n != 1 {
		t.Errorf("west counted %v refused requests from east, want 1", n)
	}
}

// cartExport is cluster's export of shop/cart port 80, served by srv.
func cartExport(t *testing.T, cluster string, srv *httptest.Server) model.ServiceExport {
	return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster},
		Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP, ExportedAt: time.Now(),
		Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: []model.Target{clusterTarget(t, srv, cluster)}}}}
}

// cartImport is a snapshot of one route to the import of shop/cart.
func cartImport(retry *model.Retry, exports ...model.ServiceExport) *model.Snapshot {
	snap := oneRoute(1, nil, model.WeightedTargetGroup{Weight: 1, Import: &model.ImportRef{
		Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}})
	snap.Services[0].Rules[0].Retry = retry
	snap.Exports = exports
	return snap
}

// An attempt the peer hop could not deliver (west refuses: its export is
// gone by its own configuration) is sent to another pick, here east's own
// target, at once: no client sees the refusal. A body that was not read
// ahead cannot be sent twice, so without a retry policy a POST's refusal
// reaches its client as 502 PeerUnavailable; with one, the POST is retried.
func TestRefusedHopPicksAnotherTarget(t *testing.T) {
	w := newHopWorld(t)
	eastCart, westCart := identityBackend(t, "east-cart"), identityBackend(t, "west-cart")
	peers := []model.Peer{{Meta: model.Meta{Name: "proxy.west", Owner: "west"}, Address: w.westPeer}}
	apply := func(retry *model.Retry) {
		east := cartImport(retry, cartExport(t, "east", eastCart), cartExport(t, "west", westCart))
		east.Peers, east.Clusters = peers, admitted("east", "west")
		update(t, w.east, east)
		west := cartImport(retry, cartExport(t, "east", eastCart)) // west's own export withdrawn
		west.Peers, west.Clusters = peers, admitted("east", "west")
		update(t, w.west, west)
	}
	apply(nil)
	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	for i := range 40 {
		if r := cl.get(addr, "shop.example", "/"); r.status != 200 || r.body != "east-cart 0" {
			t.Fatalf("GET %d: %d %q, want east's target after west's refusal", i, r.status, r.body)
		}
	}
	refused := testutil.ToFloat64(w.west.metrics.peerRequests.WithLabelValues("east", "NotDeliverable"))
	if refused < 10 {
		t.Errorf("west refused %v requests, want about half of 40 (the retries are what the test shows)", refused)
	}
	post := func() map[int]int {
		out := map[int]int{}
		for range 20 {
			resp, err := cl.c.Post("http://"+addr+"/", "text/plain", strings.NewReader("order"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			out[resp.StatusCode]++
		}
		return out
	}
	if got := post(); got[http.StatusBadGateway] == 0 || got[200] == 0 || got[200]+got[http.StatusBadGateway] != 20 {
		t.Errorf("POSTs without a retry policy: %v, want some 200 (east) and some 502 (west refused, body not replayable)", got)
	}
	apply(&model.Retry{Attempts: 1, Codes: []int{503}})
	if got := post(); got[200] != 20 {
		t.Errorf("POSTs with a retry policy: %v, want 20 × 200", got)
	}
}

// A cluster whose proxy cannot be dialled loses no request: the failed
// dial sends the request to another pick at once, and the peer stays out of
// the pick while it is down. With no other cluster to go to, the request
// fails as 502.
func TestUnreachablePeerPicksAnotherTarget(t *testing.T) {
	w := newHopWorld(t)
	eastCart, northCart := identityBackend(t, "east-cart"), identityBackend(t, "north-cart")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens: every dial is refused
	snap := cartImport(nil, cartExport(t, "east", eastCart), cartExport(t, "north", northCart))
	snap.Peers = []model.Peer{{Meta: model.Meta{Name: "proxy.north", Owner: "north"}, Address: dead}}
	snap.Clusters = admitted("east", "north")
	update(t, w.east, snap)
	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	for i := range 20 {
		if r := cl.get(addr, "shop.example", "/"); r.status != 200 || r.body != "east-cart 0" {
			t.Fatalf("GET %d: %d %q, want east's target", i, r.status, r.body)
		}
	}
	only := cartImport(nil, cartExport(t, "north", northCart))
	only.Peers, only.Clusters, only.Revision = snap.Peers, snap.Clusters, 2
	update(t, w.east, only)
	if r := cl.get(addr, "shop.example", "/"); r.status != http.StatusBadGateway {
		t.Errorf("only north's target, north down: %d, want 502", r.status)
	}
}
