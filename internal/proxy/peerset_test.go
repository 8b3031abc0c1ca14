package proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// TestCompilePeersFromPreviousEqualsFresh changes target groups and exports
// of this and other clusters at random, with and without revisions, and
// checks that the peer set made from the last one delivers exactly what
// one made afresh does.
func TestCompilePeersFromPreviousEqualsFresh(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 15))
	rev := int64(0)
	meta := func(name, owner string) model.Meta {
		rev++
		if r.IntN(4) == 0 {
			return model.Meta{Name: name, Owner: owner}
		}
		return model.Meta{Name: name, Owner: owner, Revision: rev}
	}
	owners := []string{cluster, cluster, "other"}
	targets := func(owner string) []model.Target {
		var ts []model.Target
		for j := range r.IntN(3) {
			c := owner
			if r.IntN(4) == 0 {
				c = "other"
			}
			ts = append(ts, model.Target{Address: fmt.Sprintf("10.0.%d.%d", r.IntN(3), j), Port: 80, State: model.TargetActive, Cluster: c})
		}
		return ts
	}
	snap := &model.Snapshot{Objects: model.Objects{Clusters: []model.Cluster{{Meta: model.Meta{Name: cluster}}, {Meta: model.Meta{Name: "other"}}}}}
	var prev *peerSet
	changedGroups := 0
	for step := range 400 {
		next := *snap
		next.TargetGroups, next.Exports = slices.Clone(snap.TargetGroups), slices.Clone(snap.Exports)
		name := fmt.Sprint("g", r.IntN(8))
		owner := owners[r.IntN(len(owners))]
		if r.IntN(2) == 0 {
			tg := model.TargetGroup{Meta: meta(name, owner), Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, Port: 8080, Targets: targets(owner)}
			next.TargetGroups = churn(r, next.TargetGroups, tg)
			changedGroups++
		} else {
			e := model.ServiceExport{Meta: meta(name, owner), Namespace: "ns", Service: name, Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: targets(owner)}}}
			next.Exports = churn(r, next.Exports, e)
		}
		snap = &next
		var before map[string]map[string]deliverable
		if prev != nil {
			before = deliveredAddrs(t, prev.deliver)
		}
		got := compilePeers(snap, cluster, prev)
		want := compilePeers(snap, cluster, nil)
		if g, w := deliveredAddrs(t, got.deliver), deliveredAddrs(t, want.deliver); !reflect.DeepEqual(g, w) {
			t.Fatalf("step %d: delivers %v, want %v", step, g, w)
		}
		if prev != nil && !reflect.DeepEqual(deliveredAddrs(t, prev.deliver), before) {
			t.Fatalf("step %d: the previous peer set changed", step)
		}
		prev = got
	}
	if changedGroups == 0 {
		t.Fatal("no target group changed")
	}
}

// deliveredAddrs lists what each deliver set delivers, by address,
// checking that its target method finds each of them.
func deliveredAddrs(t *testing.T, d map[string]*deliverSet) map[string]map[string]deliverable {
	t.Helper()
	out := map[string]map[string]deliverable{}
	add := func(k string, ds *deliverSet, addr string, port int32) {
		a := net.JoinHostPort(addr, itoa(port))
		if !ds.target(a) {
			t.Fatalf("%s: target(%q) = false for one of its targets", k, a)
		}
		if out[k] == nil {
			out[k] = map[string]deliverable{}
		}
		out[k][a] = ds.dv
	}
	for k, ds := range d {
		for _, tg := range ds.targets {
			if tg.Cluster == ds.cluster {
				add(k, ds, tg.Address, tg.EffectivePort(&model.TargetGroup{Port: ds.port}))
			}
		}
		for _, p := range ds.ports {
			for _, tg := range p.Targets {
				add(k, ds, tg.Address, tg.Port)
			}
		}
	}
	return out
}

// churn puts v in list when no object there has its name; otherwise it
// deletes that object (one time in three, drawn from r) or replaces it
// with v.
func churn[T any, P interface {
	*T
	model.Object
}](r *rand.Rand, list []T, v T) []T {
	i := slices.IndexFunc(list, func(o T) bool { return P(&o).ObjectMeta().Name == P(&v).ObjectMeta().Name })
	switch {
	case i < 0:
		return append(list, v)
	case r.IntN(3) == 0:
		return slices.Delete(list, i, i+1)
	default:
		list[i] = v
		return list
	}
}

// TestDeliverSetTarget: a delivery is taken only for a target of the set:
// a group's targets of this cluster at their port (or the group's), an
// export's targets at theirs; not another cluster's target, another port,
// nor an address that does not parse.
func TestDeliverSetTarget(t *testing.T) {
	group := &deliverSet{cluster: cluster, port: 8080, targets: []model.Target{
		{Address: "10.0.0.1", Cluster: cluster},
		{Address: "10.0.0.2", Port: 9090, Cluster: cluster},
		{Address: "10.0.0.3", Cluster: "other"},
		{Address: "fd00::1", Cluster: cluster},
	}}
	export := &deliverSet{ports: []model.ExportPort{{Port: 80, Targets: []model.Target{{Address: "10.1.0.1", Port: 8000}}}}}
	// A group of more than deliverScanTargets targets is indexed.
	var many []model.Target
	for i := range deliverScanTargets + 8 {
		many = append(many, model.Target{Address: fmt.Sprintf("10.2.0.%d", i), Cluster: cluster})
	}
	many = append(many, model.Target{Address: "10.2.1.1", Cluster: "other"})
	large := (&deliverSet{cluster: cluster, port: 8080, targets: many}).indexed()
	if large.index == nil || len(large.index) != deliverScanTargets+8 {
		t.Fatalf("a set of %d targets of this cluster is not indexed by them: %v", deliverScanTargets+8, large.index)
	}
	if (&deliverSet{cluster: cluster, port: 8080, targets: many[:3]}).indexed().index != nil {
		t.Error("a set of 3 targets is indexed")
	}
	if (&deliverSet{cluster: cluster, targets: many[len(many)-1:]}).indexed() != nil {
		t.Error("a set of no target of this cluster is not nil")
	}
	for _, tc := range []struct {
		ds   *deliverSet
		addr string
		want bool
	}{
		{large, "10.2.0.5:8080", true},
		{large, "10.2.0.5:8081", false},
		{large, "10.2.1.1:8080", false}, // another cluster's
		{group, "10.0.0.1:8080", true},
		{group, "10.0.0.1:9090", false},
		{group, "10.0.0.2:9090", true},
		{group, "10.0.0.2:8080", false},
		{group, "10.0.0.3:8080", false}, // another cluster's
		{group, "[fd00::1]:8080", true},
		{group, "fd00::1:8080", false},
		{group, "10.0.0.1", false},
		{group, "10.0.0.1:99999", false},
		{export, "10.1.0.1:8000", true},
		{export, "10.1.0.1:80", false},
		{nil, "10.0.0.1:8080", false},
	} {
		if got := tc.ds.target(tc.addr); got != tc.want {
			t.Errorf("target(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// A proxy takes at most model.MaxClusterPeers of a cluster's Peers, the
// first by name, whatever the store holds: each is dialled and probed.
func TestCompilePeersBoundsAClustersPeers(t *testing.T) {
	snap := &model.Snapshot{Objects: model.Objects{Clusters: []model.Cluster{{Meta: model.Meta{Name: cluster}}, {Meta: model.Meta{Name: "west"}}, {Meta: model.Meta{Name: "east"}}}}}
	for i := range model.MaxClusterPeers + 44 {
		snap.Peers = append(snap.Peers, model.Peer{Meta: model.Meta{Name: fmt.Sprintf("p%04d.west", i), Owner: "west"}, Address: fmt.Sprintf("127.0.1.%d:%d", i%250+1, 1000+i)})
	}
	snap.Peers = append(snap.Peers, model.Peer{Meta: model.Meta{Name: "p.east", Owner: "east"}, Address: "127.0.2.1:1"})
	ps := compilePeers(snap, cluster, nil)
	if got := ps.byCluster["west"]; len(got) != model.MaxClusterPeers || got[0] != "127.0.1.1:1000" {
		t.Errorf("west's peers: %d, first %v; want %d from the first", len(got), got[:1], model.MaxClusterPeers)
	}
	if got := ps.byCluster["east"]; !slices.Equal(got, []string{"127.0.2.1:1"}) {
		t.Errorf("east's peers: %v", got)
	}
}
