package router

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// clustersetExport is cluster's export of shop/cart with ports, each with
// one target on port target.
func clustersetExport(cluster string, target int32, ports ...model.ExportPort) model.ServiceExport {
	for i := range ports {
		ports[i].Targets = []model.Target{{Address: "127.0.0.1", Port: target, Cluster: cluster, State: model.TargetActive}}
	}
	return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster},
		Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP, Ports: ports}
}

func clustersetSnapshot(services ...model.Service) *model.Snapshot {
	return &model.Snapshot{Objects: model.Objects{
		Networks:     networks,
		TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "explicit"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}},
		Services:     services,
		Exports: []model.ServiceExport{
			clustersetExport("east", 1,
				model.ExportPort{Name: "http", Protocol: "TCP", Port: 80},
				model.ExportPort{Name: "db", Protocol: "TCP", Port: 5432},
				model.ExportPort{Name: "api", Protocol: "TCP", AppProtocol: "grpc", Port: 9000},
				model.ExportPort{Name: "dns", Protocol: "UDP", Port: 53}),
			clustersetExport("west", 2, model.ExportPort{Name: "http", Protocol: "TCP", Port: 80}),
		},
	}}
}

const cartHost = "cart.shop.svc.clusterset.local"

func matchHost(tab *Table, port int32, host string) *Rule {
	return tab.Match(Bind{Port: port}, httptest.NewRequest("GET", "http://"+host+"/x", nil))
}

// Without any route, a proxy serves an import's clusterset name on its
// HTTP ports, at its own bind address, forwarding to every exporting
// cluster's endpoints of that port; ports without an HTTP hint are not
// served.
func TestClustersetHostWithoutRoute(t *testing.T) {
	tab := mustCompile(t, clustersetSnapshot())
	if got, want := tab.Binds(), []Bind{{Port: 80}, {Port: 9000}}; !slices.Equal(got, want) {
		t.Errorf("binds %v, want %v (no bind for the db port nor UDP)", got, want)
	}
	for _, host := range []string{cartHost, strings.ToUpper(cartHost) + ":80", cartHost + "."} {
		r := matchHost(tab, 80, host)
		if r == nil || r.Service != ClustersetServiceName("shop", "cart", 80) {
			t.Fatalf("host %q on 80: %+v, want the clusterset service", host, r)
		}
		got := map[string]int{}
		for range 40 {
			tt := r.Pick().Group().Pick()
			got[tt.Cluster+" "+tt.Addr]++
		}
		if len(got) != 2 || got["east 127.0.0.1:1"] == 0 || got["west 127.0.0.1:2"] == 0 {
			t.Errorf("host %q: picks %v, want both clusters' targets", host, got)
		}
	}
	r := matchHost(tab, 9000, cartHost)
	if r == nil {
		t.Fatal("grpc port 9000 not served")
	}
	if g := r.Pick().Group(); g.Version != model.GRPC || len(g.targets) != 1 || g.targets[0].Cluster != "east" {
		t.Errorf("port 9000: group %s %v, want gRPC to east's one target", g.Version, g.targets)
	}
	if r := matchHost(tab, 80, "other.shop.svc.clusterset.local"); r != nil {
		t.Errorf("another name on 80 matched %s", r.Service)
	}
	svc := tab.Service(ClustersetServiceName("shop", "cart", 80))
	if svc == nil || svc.Network != "" || !slices.Equal(svc.Ports, []int32{80}) || !slices.Equal(svc.Imports, []ExportRef{{"shop", "cart"}}) || svc.Auth != nil {
		t.Errorf("the clusterset service as the peer hop's receiver sees it: %+v", svc)
	}
	if c := tab.Conflicts(); len(c) != 0 {
		t.Errorf("conflicts %v", c)
	}
}

// A route naming the clusterset host (or a wildcard over it, or a
// listener of that hostname) on the same bind serves it instead; the
// import's other ports keep their clusterset service.
func TestClustersetHostExplicitRouteWins(t *testing.T) {
	explicit := func(hostnames []string, listenerHost string) model.Service {
		l := http80()
		l[0].Hostname = listenerHost
		return model.Service{Meta: model.Meta{Name: "explicit"}, Network: "edge", Listeners: l, CustomDomains: hostnames,
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1, TargetGroup: "explicit"}}}}}}}
	}
	for name, svc := range map[string]model.Service{
		"exact":             explicit([]string{cartHost}, ""),
		"wildcard":          explicit([]string{"*.svc.clusterset.local"}, ""),
		"listener hostname": explicit(nil, "*.shop.svc.clusterset.local"),
	} {
		tab := mustCompile(t, clustersetSnapshot(svc))
		if r := matchHost(tab, 80, cartHost); r == nil || r.Service != "explicit" {
			t.Errorf("%s: %+v, want the explicit route", name, r)
		}
		if tab.Service(ClustersetServiceName("shop", "cart", 80)) != nil {
			t.Errorf("%s: a clusterset service on 80 beside the explicit route", name)
		}
		if r := matchHost(tab, 9000, cartHost); r == nil || r.Service != ClustersetServiceName("shop", "cart", 9000) {
			t.Errorf("%s: port 9000: %+v, want the clusterset service", name, r)
		}
	}
	// A catch-all route (an edge listener without hostnames) names no
	// host: the clusterset name, more specific, is served as the import.
	tab := mustCompile(t, clustersetSnapshot(explicit(nil, "")))
	if r := matchHost(tab, 80, cartHost); r == nil || r.Service != ClustersetServiceName("shop", "cart", 80) {
		t.Errorf("beside a catch-all: %+v, want the clusterset service", r)
	}
	if r := matchHost(tab, 80, "anything.example"); r == nil || r.Service != "explicit" {
		t.Errorf("the catch-all lost other hosts: %+v", r)
	}
}

// A bind another protocol holds is not taken over, and says why.
func TestClustersetHostProtocolConflict(t *testing.T) {
	pt := model.Service{Meta: model.Meta{Name: "pt"}, Network: "edge", CustomDomains: []string{"tls.example"},
		Listeners: []model.Listener{{Name: "tls", Port: 80, Protocol: model.ProtocolTLSPassthrough}},
		Rules:     []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1, TargetGroup: "explicit"}}}}}}}
	tab := mustCompile(t, clustersetSnapshot(pt))
	if tab.Protocol(Bind{Port: 80}) != model.ProtocolTLSPassthrough || matchHost(tab, 80, cartHost) != nil {
		t.Error("the clusterset name took a TLS passthrough bind")
	}
	if c := tab.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "clusterset name "+cartHost+" port 80") {
		t.Errorf("conflicts %v, want one naming the clusterset name", c)
	}
}

// The import's exported cluster weights split the clusterset name's
// requests; a malformed annotation leaves the name unserved, reported.
func TestClustersetHostClusterWeights(t *testing.T) {
	snap := clustersetSnapshot()
	for i := range snap.Exports {
		snap.Exports[i].ExportedAnnotations = map[string]string{"trellis.dev/cluster-weights": "east=3,west=1"}
	}
	r := matchHost(mustCompile(t, snap), 80, cartHost)
	if r == nil {
		t.Fatal("not served")
	}
	got := map[string]int{}
	for range 400 {
		got[r.Pick().Group().Pick().Cluster]++
	}
	if got["east"] < 270 || got["east"] > 330 || got["east"]+got["west"] != 400 {
		t.Errorf("400 picks by cluster %v, want about 300 east and 100 west", got)
	}
	for i := range snap.Exports {
		snap.Exports[i].ExportedAnnotations = map[string]string{"trellis.dev/cluster-weights": "east=x"}
	}
	tab := mustCompile(t, snap)
	if r := matchHost(tab, 80, cartHost); r != nil {
		t.Errorf("served with a malformed weights annotation: %s", r.Service)
	}
	if c := tab.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "trellis.dev/cluster-weights") {
		t.Errorf("conflicts %v, want the annotation's", c)
	}
}

// BenchmarkCompileClusterset1k compiles 1,000 exported Services, each
// exported by 3 clusters with an HTTP port of 3 endpoints and no route:
// 1,000 clusterset services merged and made on every compile.
func BenchmarkCompileClusterset1k(b *testing.B) {
	snap := &model.Snapshot{}
	for i := range 1000 {
		for ci, cluster := range []string{"east", "west", "north"} {
			var targets []model.Target
			for j := range 3 {
				targets = append(targets, model.Target{Address: fmt.Sprintf("10.%d.%d.%d", ci, i/250, i%250), Port: int32(8080 + j), Cluster: cluster, State: model.TargetActive})
			}
			snap.Exports = append(snap.Exports, model.ServiceExport{
				Meta:      model.Meta{Name: model.ExportName(cluster, "shop", fmt.Sprintf("svc-%d", i)), Owner: cluster},
				Namespace: "shop", Service: fmt.Sprintf("svc-%d", i), Type: model.ExportClusterSetIP,
				Ports: []model.ExportPort{{Name: "http", Protocol: "TCP", Port: 80, Targets: targets}},
			})
		}
	}
	var c Compiler
	tab, err := c.Compile(snap)
	if err != nil || matchHost(tab, 80, "svc-999.shop.svc.clusterset.local") == nil {
		b.Fatalf("not served: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Compile(snap); err != nil {
			b.Fatal(err)
		}
	}
}

// Exports cannot make a proxy open ports without bound: past
// maxClustersetPorts new ports, clusterset names are not served and each
// says why; ports a service already listens on do not count.
func TestClustersetPortsBounded(t *testing.T) {
	var ports []model.ExportPort
	for i := range maxClustersetPorts + 6 {
		ports = append(ports, model.ExportPort{Name: fmt.Sprintf("http-%d", i), Protocol: "TCP", Port: int32(20000 + i)})
	}
	snap := clustersetSnapshot()
	snap.Exports = []model.ServiceExport{clustersetExport("west", 2, ports...)}
	tab := mustCompile(t, snap)
	served := 0
	for _, p := range ports {
		if tab.Service(ClustersetServiceName("shop", "cart", p.Port)) != nil {
			served++
		}
	}
	if served != maxClustersetPorts {
		t.Errorf("%d clusterset ports served, want %d", served, maxClustersetPorts)
	}
	if c := tab.Conflicts(); len(c) != 6 || !strings.Contains(c[0], "already opened") {
		t.Errorf("conflicts: %q", c)
	}
}

// An export from a namespace its cluster's admission no longer lists is
// left out of the picks, and the table says why; a cluster without a
// Cluster object, or one allowed every namespace, keeps its exports.
func TestExportOutsideItsClustersNamespacesNotServed(t *testing.T) {
	snap := clustersetSnapshot()
	snap.Clusters = []model.Cluster{
		{Meta: model.Meta{Name: "west", Owner: model.ControlPlaneOwner}, ExportNamespaces: []string{"web"}},
		{Meta: model.Meta{Name: "east", Owner: model.ControlPlaneOwner}, ExportNamespaces: []string{model.AllNamespaces}},
	}
	tab := mustCompile(t, snap)
	r := matchHost(tab, 80, cartHost)
	if r == nil {
		t.Fatal("the clusterset name is not served")
	}
	for range 40 {
		if tt := r.Pick().Group().Pick(); tt.Cluster != "east" {
			t.Fatalf("picked %s %s: west may not export from shop", tt.Cluster, tt.Addr)
		}
	}
	if c := tab.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "export shop/cart of cluster west") {
		t.Errorf("conflicts %v, want west's export named as not served", c)
	}
}
