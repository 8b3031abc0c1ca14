package router

import (
	"net/http/httptest"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
)

// localitySnapshot is one service whose rule forwards to the import of
// shop/cart port 80, exported by east, west and north (one target each, on
// loopback ports nothing listens on).
func localitySnapshot(locality model.Locality, version model.ProtocolVersion, weights map[string]int32) *model.Snapshot {
	export := func(cluster string, port int32) model.ServiceExport {
		return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster},
			Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP,
			Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: []model.Target{
				{Address: "127.0.0.1", Port: port, Cluster: cluster, State: model.TargetActive}}}}}
	}
	return &model.Snapshot{Objects: model.Objects{
		Networks: networks,
		Services: []model.Service{{Meta: model.Meta{Name: "svc"}, Network: "edge", Listeners: http80(), Rules: []model.Rule{{
			Locality: locality,
			Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1, Import: &model.ImportRef{
				Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: version, ClusterWeights: weights}}}}},
		}}}},
		Exports: []model.ServiceExport{export("east", 1), export("west", 2), export("north", 3)},
	}}
}

// A LocalFirst import group picks its own cluster's targets while one is
// routable; otherwise the other clusters', by their weights alone, passing
// over clusters that cannot be reached. A rule without LocalFirst, or an
// import that gives the own cluster no weight, spreads by the weights.
func TestLocalFirstPick(t *testing.T) {
	weights := map[string]int32{"east": 5, "west": 3, "north": 1}
	for _, tc := range []struct {
		name     string
		locality model.Locality
		version  model.ProtocolVersion // HTTP2: unchecked, routable; HTTP1: checked, not yet healthy
		weights  map[string]int32
		down     string // a cluster that cannot be reached
		want     map[string]int
	}{
		{"local routable", model.LocalityLocalFirst, model.HTTP2, weights, "", map[string]int{"east": 90}},
		{"local not healthy: overflow by weight", model.LocalityLocalFirst, model.HTTP1, weights, "", map[string]int{"west": 68, "north": 22}},
		{"overflow passes over a cluster down", model.LocalityLocalFirst, model.HTTP1, weights, "west", map[string]int{"north": 90}},
		{"overflow without weights", model.LocalityLocalFirst, model.HTTP1, nil, "", map[string]int{"west": 45, "north": 45}},
		{"local given no weight", model.LocalityLocalFirst, model.HTTP2, map[string]int32{"east": 0, "west": 1, "north": 1}, "", map[string]int{"west": 45, "north": 45}},
		{"spread", "", model.HTTP2, weights, "", map[string]int{"east": 50, "west": 30, "north": 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := localitySnapshot(tc.locality, tc.version, tc.weights)
			checker := health.New(health.Config{Cluster: "east", Second: time.Hour})
			defer checker.Close()
			checker.Update(LocalFirstHealth(snap, "east"))
			c := &Compiler{Hooks: CompileHooks{Health: checker.Group, Cluster: "east",
				Reachable: func(cluster string) bool { return cluster != tc.down }}}
			tab, err := c.Compile(snap)
			if err != nil {
				t.Fatal(err)
			}
			r := tab.Match(Bind{Port: 80}, httptest.NewRequest("GET", "http://any.example/", nil))
			got := map[string]int{}
			for range 90 {
				tg := r.Pick().Group().Pick()
				got[tg.Cluster]++
			}
			for _, cl := range []string{"east", "west", "north"} {
				if d := got[cl] - tc.want[cl]; d < -2 || d > 2 {
					t.Errorf("90 picks by cluster: %v, want %v (±2)", got, tc.want)
					break
				}
			}
		})
	}
}
