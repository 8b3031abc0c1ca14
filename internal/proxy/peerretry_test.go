package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
)

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
