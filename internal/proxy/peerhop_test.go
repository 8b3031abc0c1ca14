package proxy

import (
	"context"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/pki"
)

// hopWorld is two clusters' proxies on loopback joined by the peer hop:
// east serves the routes, west delivers to its own targets.
type hopWorld struct {
	ca         *pki.CA
	east, west *Proxy
	westPeer   string // west's peer listener
	westSrv    *http.Server
	eastID     *pki.Identity
}

func clusterIdentity(t testing.TB, ca *pki.CA, cluster string) *pki.Identity {
	t.Helper()
	id, err := ca.IssueIdentity(cluster, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newHopWorld starts east's and west's proxies; edits change the
// configuration of both.
func newHopWorld(t testing.TB, edits ...func(*Config)) *hopWorld {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w := &hopWorld{ca: ca, eastID: clusterIdentity(t, ca, "east")}
	newProxy := func(cluster string, id *pki.Identity) *Proxy {
		pc := peer.NewClient(id, ca.Pool())
		t.Cleanup(pc.Close)
		cfg := Config{Cluster: cluster, BindAddress: "127.0.0.1", Peer: pc, Logger: slog.New(slog.DiscardHandler)}
		for _, edit := range edits {
			edit(&cfg)
		}
		return newTestProxyWith(t, cfg)
	}
	w.east = newProxy("east", w.eastID)
	westID := clusterIdentity(t, ca, "west")
	w.west = newProxy("west", westID)
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
	snap.Peers = []model.Peer{{Meta: model.Meta{Name: "proxy.west", Owner: "west"}, Address: w.westPeer}}
	if snap.Clusters == nil {
		snap.Clusters = admitted("east", "west")
	}
	update(t, w.east, snap)
	update(t, w.west, snap)
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

// A request for another cluster's target crosses the hop to that cluster's
// proxy, which delivers it; the caller's workload identity travels with it.
func TestPeerHopDeliversWithIdentity(t *testing.T) {
	w := newHopWorld(t)
	api := identityBackend(t, "west-api")
	tg := group("api", clusterTarget(t, api, "west"))
	tg.Owner = "west"
	snap := oneRoute(1, []model.TargetGroup{tg}, to("api", 1))
	for i := range snap.Networks {
		snap.Networks[i].Owner = "east"
	}
	snap.Services[0].Owner = "east"
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
	tg := group("api", clusterTarget(t, api, "west"))
	tg.Owner = "west"
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
	export := func(cluster string, srv *httptest.Server) model.ServiceExport {
		return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster},
			Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP, ExportedAt: time.Now(),
			Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: []model.Target{clusterTarget(t, srv, cluster)}}}}
	}
	imp := func(weights map[string]int32) *model.Snapshot {
		snap := oneRoute(1, nil, model.WeightedTargetGroup{Weight: 1, Import: &model.ImportRef{
			Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, ClusterWeights: weights}})
		snap.Exports = []model.ServiceExport{export("east", eastCart), export("west", westCart)}
		return snap
	}
	cl := newClient(t)
	count := func(n int) map[string]int {
		out := map[string]int{}
		for range n {
			r := cl.get(addrOf(w.east, webPort), "shop.example", "/")
			out[strings.Fields(r.body + " ?")[0]+"/"+itoa(int32(r.status))]++
		}
		return out
	}

	w.update(t, imp(map[string]int32{"east": 90, "west": 10}))
	if got := count(200); got["east-cart/200"] != 180 || got["west-cart/200"] != 20 {
		t.Errorf("90/10 by cluster: %v, want 180 east and 20 west", got)
	}
	w.update(t, imp(nil))
	if got := count(100); got["east-cart/200"] != 50 || got["west-cart/200"] != 50 {
		t.Errorf("no weights: %v, want 50/50", got)
	}
	// West's proxy dies: the connection that breaks (or the next dial,
	// refused) takes west out of the pick at once, and its share goes to
	// east until west answers again.
	w.update(t, imp(map[string]int32{"east": 50, "west": 50}))
	if got := count(20); got["east-cart/200"] != 10 || got["west-cart/200"] != 10 {
		t.Fatalf("50/50 by cluster: %v", got)
	}
	w.westSrv.Close()
	got := count(200)
	if got["east-cart/200"] < 198 {
		t.Errorf("after west's proxy died: %v, want all but the first one or two to east", got)
	}
	t.Logf("after west's proxy died: %v", got)

	// Without a proxy of west to hop to, west's share fails: 502.
	snap := imp(map[string]int32{"west": 1})
	update(t, w.east, snap) // no Peers
	if got := count(10); got["?/502"]+got["/502"] != 10 {
		t.Errorf("no west proxy: %v, want 10 × 502", got)
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
	tg := group("api", clusterTarget(t, api, "west"))
	tg.Owner = "west"
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

	conn, err := grpc.NewClient(addrOf(w.east, webPort), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "inventory"}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check across the hop = %v, %v", resp, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("an error status across the hop: %v, want NotFound", err)
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
	api := identityBackend(t, "west-api")
	tg := group("api", clusterTarget(t, api, "west"))
	tg.Owner = "west"
	svc := edgeService("api", []string{"api.example.com"}, model.Rule{Action: forward(to("api", 1))})
	svc.Owner = "east"
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
