package proxy

import (
	"fmt"
	"math/rand/v2"
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
			before = cloneDeliver(prev.deliver)
		}
		got := compilePeers(snap, cluster, prev)
		want := compilePeers(snap, cluster, nil)
		if !reflect.DeepEqual(got.deliver, want.deliver) {
			t.Fatalf("step %d: delivers %v, want %v", step, got.deliver, want.deliver)
		}
		if prev != nil && !reflect.DeepEqual(prev.deliver, before) {
			t.Fatalf("step %d: the previous peer set changed", step)
		}
		prev = got
	}
	if changedGroups == 0 {
		t.Fatal("no target group changed")
	}
}

func cloneDeliver(d map[string]map[string]deliverable) map[string]map[string]deliverable {
	out := map[string]map[string]deliverable{}
	for k, m := range d {
		out[k] = map[string]deliverable{}
		for a, v := range m {
			out[k][a] = v
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
