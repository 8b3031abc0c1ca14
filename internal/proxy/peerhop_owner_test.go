package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
)

// westOnly lets nobody but west's own workloads reach a service.
const westOnly = `{"Statement": [{"Effect": "Allow", "Principal": {"Trellis": "spiffe://west/*"}, "Action": "trellis:Invoke", "Resource": "*"}]}`

// A cluster reaches another's target group only through a service of that
// cluster: east, whose credentials write its own services, writes one with
// no policy that forwards to west's target group "db" (which west serves
// only to its own workloads). Neither east's proxy, nor east's peer client
// naming its own service, nor west's proxy itself serving east's service
// reaches west's target; west's own service still does.
func TestAnotherClustersServiceCannotForwardToMyTargetGroup(t *testing.T) {
	w := newHopWorld(t)
	db := identityBackend(t, "west-db")
	tg := westGroup(t, "db", db)
	mine := edgeService("db", []string{"db.example"}, model.Rule{Action: forward(to("db", 1))})
	mine.Owner = "west"
	mine.Auth = &model.Auth{Policy: json.RawMessage(westOnly)}
	evil := edgeService("evil", []string{"evil.example"}, model.Rule{Action: forward(to("db", 1))})
	evil.Owner = "east"
	w.update(t, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Services: []model.Service{mine, evil}}, Revision: 1})

	cl := newClient(t)
	for _, p := range []struct {
		name string
		px   *Proxy
	}{{"east's proxy", w.east}, {"west's proxy", w.west}} {
		r := cl.get(addrOf(p.px, webPort), "evil.example", "/")
		if strings.HasPrefix(r.body, "west-db") {
			t.Errorf("%s sends east's service to west's target group: %d %q", p.name, r.status, r.body)
		}
	}
	// West's own service is judged by its own policy: east is refused.
	if r := cl.get(addrOf(w.east, webPort), "db.example", "/"); r.status != http.StatusForbidden {
		t.Errorf("east's client to west's service db: %d %q, want 403", r.status, r.body)
	}

	// A proxy of east that skips its own checks, naming east's service.
	pc := peer.NewClient(w.eastID, w.ca.Pool())
	defer pc.Close()
	pc.SetPeers(map[string]string{w.westPeer: "west"})
	resp, err := pc.RoundTrip(httptest.NewRequest("GET", "http://evil.example/", nil), peer.Request{
		Cluster: "west", Addr: w.westPeer, TargetGroup: "TargetGroup/db", Target: db.Listener.Addr().String(),
		Service: "evil", Network: "edge", Port: webPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(peer.HeaderRefused) != peerNotRouted {
		t.Errorf("east's peer request for its own service to west's group: %d %q (refused %q), want 403 %s",
			resp.StatusCode, body, resp.Header.Get(peer.HeaderRefused), peerNotRouted)
	}
}
