package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
)

// `trellis get clusters` shows each admitted cluster's lease, peers, RTT
// and last sync, as a table or as JSON; `get clusters NAME` one of them.
func TestGetClusters(t *testing.T) {
	p := plane.Start(t, server.Config{})
	ctx := context.Background()
	_, east := p.Join(t, "east")
	_, west := p.Join(t, "west")
	if err := west.Put(ctx, &model.Peer{Meta: model.Meta{Name: model.PeerName("west", "proxy")}, Address: "127.0.0.2:9443"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{
		{Cluster: "west", Address: "127.0.0.2:9443", Reached: true, RTTMicros: 1500}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Networks: []model.ServiceNetwork{
		{Meta: model.Meta{Name: "harbour"}, Mode: model.ModeServiceNetwork, Domain: "harbour.trellis.internal"}}}}); err != nil {
		t.Fatal(err)
	}

	run := adminCLI(t, ctx, p)
	if out, err := run("cluster", "set", "east", "--pod-network", "flat"); err != nil {
		t.Fatalf("cluster set east --pod-network flat: %v\n%s", err, out)
	}
	table, err := run("get", "clusters")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^NAME\s+ADMITTED\s+LEASE\s+PEERS\s+RTT\s+LAST SYNC\s+POD NETWORK$`).MatchString(lines[0]) {
		t.Fatalf("table:\n%s", table)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`^east\s+\S+ ago\s+alive \(\S+ ago\)\s+0/0\s+-\s+never\s+flat$`),
		regexp.MustCompile(`^west\s+\S+ ago\s+alive \(never renewed\)\s+1/1\s+1.5ms\s+\S+ ago\s+-$`),
	} {
		if !slices.ContainsFunc(lines[1:], want.MatchString) {
			t.Errorf("no row matching %s in:\n%s", want, table)
		}
	}

	out, err := run("get", "clusters", "west", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []api.Cluster
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(got) != 1 || got[0].Name != "west" || got[0].PeersPublished != 1 || got[0].PeersReached != 1 || got[0].RTTMicros != 1500 ||
		got[0].LastSync.IsZero() || time.Since(got[0].LastSync) > time.Minute || len(got[0].Reports) != 1 || got[0].Reports[0].Reporter != "east/proxy" || got[0].PodNetwork != "" {
		t.Errorf("get clusters west -o json: %+v", got)
	}
	if _, err := run("get", "clusters", "north"); err == nil || !strings.Contains(err.Error(), `"north" is not admitted`) {
		t.Errorf("get clusters north: %v", err)
	}
	if _, err := run("get", "clusters", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "output format") {
		t.Errorf("-o xml: %v", err)
	}
}
