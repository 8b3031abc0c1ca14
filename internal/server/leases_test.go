package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// leaseOf returns cluster's lease from leases, failing when it is absent.
func leaseOf(t *testing.T, leases []api.Lease, cluster string) api.Lease {
	t.Helper()
	i := slices.IndexFunc(leases, func(l api.Lease) bool { return l.Cluster == cluster })
	if i < 0 {
		t.Fatalf("no lease of %s in %+v", cluster, leases)
	}
	return leases[i]
}

// A cluster renews its own lease with its certificate, and nothing else:
// not with a bearer token, not another cluster's, not with fields the
// server fills in. A cluster that stops renewing lapses a lease duration
// later; one that renews stays alive.
func TestLeaseRenewedOnlyByItsCluster(t *testing.T) {
	const lease = time.Second
	p := newClusterPlaneWith(t, lease)
	ctx := context.Background()
	westID, west := p.Join(t, "west")
	_, north := p.Join(t, "north")

	res, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lease.Cluster != "west" || res.Lease.Holder != "proxy" || !res.Lease.Alive || res.RenewEveryMillis != 200 {
		t.Fatalf("renewal answered %+v", res)
	}

	// A bearer token holds no lease, even of its own cluster.
	if _, err := p.east.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("renewal with a bearer token: %v", err)
	}
	// The body cannot name a cluster: the certificate does.
	tr := &http.Transport{TLSClientConfig: westID.ClientConfig(p.Roots)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(p.URL()+"/v1/lease", "application/json",
		bytes.NewReader([]byte(`{"holder":"proxy","cluster":"north"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("renewal naming another cluster: %s, want 400 (unknown field)", resp.Status)
	}
	for name, tc := range map[string]struct {
		req   api.LeaseRenewal
		field string
	}{
		"holder":          {api.LeaseRenewal{Holder: "Proxy_1"}, "holder"},
		"own cluster":     {api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{{Cluster: "west", Address: "127.0.0.1:1"}}}, "peers[0].cluster"},
		"address":         {api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{{Cluster: "north", Address: "north:1"}}}, "peers[0].address"},
		"rtt unreached":   {api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{{Cluster: "north", Address: "127.0.0.1:1", RTTMicros: 5}}}, "peers[0].rttMicros"},
		"forged reporter": {api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{{Reporter: "north/proxy", Cluster: "north", Address: "127.0.0.1:1"}}}, "peers[0]"},
	} {
		_, err := west.RenewLease(ctx, tc.req)
		if apiStatus(err) != http.StatusUnprocessableEntity || !slices.Contains(fieldsOf(err), tc.field) {
			t.Errorf("%s: %v, want 422 naming %s", name, err, tc.field)
		}
	}

	// west keeps renewing, north renews once and stops, south never
	// renews: once the server has been able to take renewals for a lease
	// duration, north has lapsed and west has not; south, whose lease does
	// not exist, has not lapsed either. Anyone authenticated reads the
	// leases.
	_, south := p.Join(t, "south")
	if _, err := north.RenewLease(ctx, api.LeaseRenewal{Holder: "controller"}); err != nil {
		t.Fatal(err)
	}
	stopWest := renewing(west, "proxy")
	testsync.WaitFor(t, 5*time.Second, "north's lease to lapse", func() bool {
		leases, err := p.east.Leases(ctx)
		return err == nil && !leaseOf(t, leases, "north").Alive
	})
	leases, err := north.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := leaseOf(t, leases, "west"); !w.Alive || w.Held || w.Holder != "proxy" {
		t.Errorf("west's lease while it renews: %+v", w)
	}
	if n := leaseOf(t, leases, "north"); n.AgeMillis < lease.Milliseconds() || n.Holder != "controller" || n.Held {
		t.Errorf("north's lease, renewed since only by west: %+v", n)
	}
	if s := leaseOf(t, leases, "south"); !s.Alive || s.AgeMillis != -1 || s.Holder != "" {
		t.Errorf("south's lease, never renewed: %+v", s)
	}
	if _, err := south.Leases(ctx); err != nil {
		t.Errorf("south reading the leases: %v", err)
	}

	// north renews and is alive again; west stops and lapses.
	stopNorth := renewing(north, "controller")
	testsync.WaitFor(t, 10*time.Second, "north alive again", func() bool {
		leases, err := p.east.Leases(ctx)
		return err == nil && leaseOf(t, leases, "north").Alive
	})
	// The server stamps a renewal when it takes it, after the call
	// started: the lease lapses no sooner than a lease duration after the
	// start of west's last renewal that succeeded (on a loaded machine that
	// may be well before the stop).
	lastRenewal := stopWest()
	testsync.WaitFor(t, 3*time.Second, "west's lease to lapse", func() bool {
		leases, err := p.admin.Leases(ctx)
		return err == nil && !leaseOf(t, leases, "west").Alive
	})
	if took := time.Since(lastRenewal); took < lease-50*time.Millisecond {
		t.Errorf("west's lease lapsed %v after its last renewal, before its duration %v", took, lease)
	}
	if leases, _ := p.east.Leases(ctx); !leaseOf(t, leases, "north").Alive {
		t.Errorf("north, renewing, with west lapsed: %+v", leases)
	}

	// Both stop: more than half of the leases would lapse at once, so the
	// server, likelier cut off than both clusters down, judges none
	// lapsed and marks them held.
	stopNorth()
	testsync.WaitFor(t, 3*time.Second, "both leases held", func() bool {
		leases, err := p.east.Leases(ctx)
		return err == nil && leaseOf(t, leases, "north").Held && leaseOf(t, leases, "west").Held &&
			leaseOf(t, leases, "north").Alive && leaseOf(t, leases, "west").Alive
	})
}

// renewing renews c's lease as holder every 100 ms until the returned
// function is called.
func renewing(c *client.Client, holder string) (stop func() (lastStart time.Time)) {
	done, stopped := make(chan struct{}), make(chan struct{})
	var last time.Time // the start of the last renewal that succeeded
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				start := time.Now()
				if _, err := c.RenewLease(context.Background(), api.LeaseRenewal{Holder: holder}); err == nil {
					last = start
				}
			}
		}
	}()
	return func() time.Time { close(done); <-stopped; return last }
}

// A server that could not take renewals (it just started) judges no
// lease lapsed for a lease duration: a control-plane outage does not
// lapse the clusters it could not hear from.
func TestLeaseNotLapsedByTheControlPlanesOutage(t *testing.T) {
	const lease = time.Second
	p := newClusterPlaneWith(t, lease)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	_, north := p.Join(t, "north")
	defer renewing(north, "proxy")() // north keeps renewing: west alone lapses
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lease + 200*time.Millisecond)
	leases, err := p.admin.Leases(ctx)
	if err != nil || leaseOf(t, leases, "west").Alive {
		t.Fatalf("west unrenewed for longer than its lease: %+v, %v", leases, err)
	}

	// The server restarts on the same store:
	// west, unrenewed for well over its lease, counts as alive until the
	// new server has been up for a lease duration.
	p.Stop()
	started := time.Now()
	p.Restart(t)
	leases, err = p.admin.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, leases, "west"); time.Since(started) < lease && !l.Alive {
		t.Errorf("a server up for %v judged west lapsed: %+v", time.Since(started), l)
	}
	testsync.WaitFor(t, 3*time.Second, "the new server to judge west lapsed", func() bool {
		leases, err := p.admin.Leases(ctx)
		return err == nil && !leaseOf(t, leases, "west").Alive
	})
	if up := time.Since(started); up < lease {
		t.Errorf("west judged lapsed %v after the server started, within the lease %v", up, lease)
	}
}

// `trellis get clusters`' data: each cluster's lease, its peers published
// and reached by other clusters' reports, their median RTT and its last
// sync. A holder's reports are kept at most every few seconds.
func TestClusterStatus(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	_, north := p.Join(t, "north")
	for _, c := range []struct {
		cl   *client.Client
		name string
		addr string
	}{{west, "west", "127.0.0.2:9443"}, {north, "north", "127.0.0.3:9443"}} {
		if err := c.cl.Put(ctx, &model.Peer{Meta: model.Meta{Name: model.PeerName(c.name, "proxy")}, Address: c.addr}); err != nil {
			t.Fatal(err)
		}
	}
	if err := north.Put(ctx, &model.Peer{Meta: model.Meta{Name: model.PeerName("north", "proxy-2")}, Address: "127.0.0.3:9444"}); err != nil {
		t.Fatal(err)
	}
	report := func(rtt int64) []api.PeerReport {
		return []api.PeerReport{
			{Cluster: "north", Address: "127.0.0.3:9443", Reached: true, RTTMicros: rtt},
			{Cluster: "north", Address: "127.0.0.3:9444"},
			{Cluster: "north", Address: "127.0.0.9:1", Reached: true, RTTMicros: 1}, // not a published peer: ignored
		}
	}
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy", Peers: report(300)}); err != nil {
		t.Fatal(err)
	}
	// Within a few seconds, a second report is not kept.
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy", Peers: report(900)}); err != nil {
		t.Fatal(err)
	}
	if _, err := north.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Networks: []model.ServiceNetwork{*network("harbour")}}}); err != nil {
		t.Fatal(err)
	}

	clusters, err := p.admin.Clusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]api.Cluster{}
	for _, c := range clusters {
		byName[c.Name] = c
	}
	n, w := byName["north"], byName["west"]
	if n.PeersPublished != 2 || n.PeersReached != 1 || n.RTTMicros != 300 || len(n.Reports) != 2 || n.Reports[0].Reporter != "west/proxy" {
		t.Errorf("north: %+v", n)
	}
	if n.LastSync.IsZero() || time.Since(n.LastSync) > time.Minute || n.Lease.AgeMillis != -1 {
		t.Errorf("north's sync and lease: %+v", n)
	}
	if w.PeersPublished != 1 || w.PeersReached != 0 || w.RTTMicros != 0 || !w.LastSync.IsZero() || w.Lease.Holder != "proxy" {
		t.Errorf("west: %+v", w)
	}
}

// Removing a cluster deletes its lease, reports, sync record and the
// objects it owns, and touches nothing of another cluster's; a network
// it owns that another cluster's service joins is kept.
func TestRemoveClusterDeletesWhatItOwns(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	_, north := p.Join(t, "north")
	harbour := network("harbour")
	harbour.AllowedClusters = []string{"east"}
	objs := model.Objects{
		Networks:     []model.ServiceNetwork{*harbour, *network("solo")},
		TargetGroups: []model.TargetGroup{*inCluster("west", targetGroup("west-api", 8080))},
		Peers:        []model.Peer{{Meta: model.Meta{Name: model.PeerName("west", "proxy")}, Address: "127.0.0.2:9443"}},
	}
	if _, err := west.Apply(ctx, &objs); err != nil {
		t.Fatal(err)
	}
	if err := p.east.Put(ctx, network("plaza")); err != nil {
		t.Fatal(err)
	}
	if err := p.east.Put(ctx, loginService("shop", "harbour")); err != nil {
		t.Fatal(err)
	}
	if err := north.Put(ctx, &model.Peer{Meta: model.Meta{Name: model.PeerName("north", "proxy")}, Address: "127.0.0.3:9443"}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{{Cluster: "north", Address: "127.0.0.3:9443", Reached: true, RTTMicros: 10}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := north.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"}); err != nil {
		t.Fatal(err)
	}
	before, _, err := p.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	res, err := p.admin.RemoveCluster(ctx, "west")
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 3 || !slices.Equal(res.Kept, []string{"harbour"}) {
		t.Errorf("removal: %+v, want 3 deleted (solo, west-api, proxy.west) and harbour kept", res)
	}
	after, _, err := p.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{}
	for _, kv := range after {
		left[kv.Key] = true
		if strings.Contains(kv.Key, "west") && kv.Key != model.Key(model.KindServiceNetwork, "harbour") {
			t.Errorf("%s is left after west was removed", kv.Key)
		}
	}
	for _, kv := range before {
		owner := ""
		if strings.HasPrefix(kv.Key, "/") {
			var m struct{ Owner string }
			_ = json.Unmarshal(kv.Value, &m)
			owner = m.Owner
		}
		if (owner == "east" || owner == "north" || strings.Contains(kv.Key, "north")) && !left[kv.Key] {
			t.Errorf("%s (of another cluster) was deleted with west", kv.Key)
		}
	}
	leases, err := p.admin.Leases(ctx)
	if err != nil || slices.ContainsFunc(leases, func(l api.Lease) bool { return l.Cluster == "west" }) || len(leases) != 1 {
		t.Errorf("leases after removal: %+v, %v", leases, err)
	}
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"}); apiStatus(err) != http.StatusUnauthorized {
		t.Errorf("renewal by a removed cluster: %v", err)
	}
	clusters, err := p.admin.Clusters(ctx)
	if err != nil || len(clusters) != 1 || clusters[0].Name != "north" || len(clusters[0].Reports) != 0 {
		t.Errorf("clusters after removal: %+v, %v", clusters, err)
	}
	// Admitted again, the cluster starts clean.
	if _, err := p.admin.AddCluster(ctx, "west", 0); err != nil {
		t.Fatal(err)
	}
	if ls, _ := p.admin.Leases(ctx); leaseOf(t, ls, "west").AgeMillis != -1 {
		t.Errorf("re-admitted west's lease: %+v", ls)
	}
}

// One cluster keeps the reports of at most 64 fresh holders: a cluster
// cannot grow the store without bound by inventing holders.
func TestReportsBounded(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	report := []api.PeerReport{{Cluster: "north", Address: "127.0.0.3:9443"}}
	for i := range 64 {
		if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy-" + strconv.Itoa(i), Peers: report}); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
	}
	_, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy-64", Peers: report})
	if apiStatus(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "not kept") {
		t.Errorf("the 65th holder's report: %v", err)
	}
	// Without a report, a new holder still renews.
	if _, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy-64"}); err != nil {
		t.Errorf("renewal without a report: %v", err)
	}
	kvs, _, err := p.Store.List(ctx, "status/west/")
	if err != nil || len(kvs) != 64 {
		t.Errorf("%d reports kept, want 64 (%v)", len(kvs), err)
	}
}
