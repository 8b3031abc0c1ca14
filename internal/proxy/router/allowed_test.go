package router

import (
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// A service of another cluster is served while its network allows that
// cluster, and leaves the table, with a conflict saying why, once the
// network stops allowing it (an association revoked), without waiting for
// the service to be written again.
func TestServiceLeavesWhenItsNetworkNoLongerAllowsItsCluster(t *testing.T) {
	snap := func(allowed ...string) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{
			Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "shared", Owner: "east"}, Mode: model.ModeEdge, AllowedClusters: allowed}},
			TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "west-web", Owner: "west"}, Protocol: model.ProtocolHTTP,
				ProtocolVersion: model.HTTP1, Targets: []model.Target{{Address: "127.0.0.1", Port: 8080, Cluster: "west", State: model.TargetActive}}}},
			Services: []model.Service{{Meta: model.Meta{Name: "west-web", Owner: "west"}, Network: "shared", Listeners: http80(),
				CustomDomains: []string{"web.example"},
				Rules:         []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1, TargetGroup: "west-web"}}}}}}}},
		}}
	}
	tab := mustCompile(t, snap("west"))
	if r := matchHost(tab, 80, "web.example"); r == nil || r.Service != "west-web" {
		t.Fatalf("allowed: %+v, want west-web", r)
	}
	for _, allowed := range [][]string{nil, {"north"}} {
		tab = mustCompile(t, snap(allowed...))
		if r := matchHost(tab, 80, "web.example"); r != nil {
			t.Errorf("allowed %v: %+v, want no route", allowed, r)
		}
		if c := tab.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "network shared does not allow its cluster") {
			t.Errorf("allowed %v: conflicts %q", allowed, c)
		}
	}
	if r := matchHost(mustCompile(t, snap(model.AnyCluster)), 80, "web.example"); r == nil {
		t.Error(`allowed "*": no route`)
	}
}
