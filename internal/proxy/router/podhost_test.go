package router

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// headlessExport is cluster's Headless export of shop/db on port 80 with
// a target per hostname=address pair, every cluster using the same
// addresses.
func headlessExport(cluster string, pods ...string) model.ServiceExport {
	e := model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "db"), Owner: cluster},
		Namespace: "shop", Service: "db", Type: model.ExportHeadless}
	p := model.ExportPort{Name: "http", Protocol: "TCP", Port: 80}
	for _, pod := range pods {
		h, addr, _ := strings.Cut(pod, "=")
		p.Targets = append(p.Targets, model.Target{Address: addr, Port: 8080, Cluster: cluster, State: model.TargetActive})
		if h != "" {
			e.Hostnames = append(e.Hostnames, model.ExportHostname{Hostname: h, Addresses: []string{addr}})
		}
	}
	e.Ports = []model.ExportPort{p}
	return e
}

func podSnapshot(exports ...model.ServiceExport) *model.Snapshot {
	return &model.Snapshot{Objects: model.Objects{Networks: networks, Exports: exports}}
}

// A per-pod name reaches that pod of that cluster only, both clusters
// using the same pod addresses; a name of no ready pod (an unknown
// hostname, an unknown cluster, a pod without a hostname) matches the
// catch-all whose group has no target (503 NoTarget), never another pod;
// the Service's clusterset name still reaches every pod.
func TestPodHostRoutesToOnePod(t *testing.T) {
	tab := mustCompile(t, podSnapshot(
		headlessExport("east", "web-0=10.0.0.1", "web-1=10.0.0.2", "=10.0.0.3"),
		headlessExport("west", "web-0=10.0.0.2", "web-1=10.0.0.1"),
	))
	if c := tab.Conflicts(); len(c) > 0 {
		t.Fatalf("conflicts %v", c)
	}
	for _, tc := range []struct{ cluster, hostname, addr string }{
		{"east", "web-0", "10.0.0.1:8080"}, {"east", "web-1", "10.0.0.2:8080"},
		{"west", "web-0", "10.0.0.2:8080"}, {"west", "web-1", "10.0.0.1:8080"},
	} {
		host := mcs.PodHost(tc.hostname, tc.cluster, "shop", "db")
		for _, h := range []string{host, strings.ToUpper(host) + ":80"} {
			r := matchHost(tab, 80, h)
			if r == nil || r.Service != PodServiceName("shop", "db", 80, tc.hostname, tc.cluster) {
				t.Fatalf("%s: %+v, want the per-pod service", h, r)
			}
			for range 20 {
				if got := r.Pick().Group().Pick(); got == nil || got.Cluster != tc.cluster || got.Addr != tc.addr {
					t.Fatalf("%s: picked %+v, want %s %s", h, got, tc.cluster, tc.addr)
				}
			}
		}
		// The receiving proxy of the peer hop checks the service routes to
		// its cluster's export: it has the same service.
		if svc := tab.Service(PodServiceName("shop", "db", 80, tc.hostname, tc.cluster)); svc == nil || len(svc.Imports) != 1 {
			t.Errorf("%s: service %+v", host, svc)
		}
	}
	for _, host := range []string{
		mcs.PodHost("web-2", "east", "shop", "db"),  // no such pod
		mcs.PodHost("web-0", "north", "shop", "db"), // no such cluster
		"x.web-0.east.db.shop.svc.clusterset.local", // below a pod's name
	} {
		r := matchHost(tab, 80, host)
		if r == nil || r.Service != ClustersetServiceName("shop", "db", 80)+"/*" {
			t.Fatalf("%s: %+v, want the catch-all", host, r)
		}
		if b := r.Pick(); b == nil || b.Group() == nil || b.Group().Pick() != nil {
			t.Errorf("%s: a target was picked", host)
		}
	}
	r := matchHost(tab, 80, "db.shop.svc.clusterset.local")
	if r == nil || r.Service != ClustersetServiceName("shop", "db", 80) {
		t.Fatalf("clusterset name: %+v", r)
	}
	picked := map[string]bool{}
	for range 100 {
		tt := r.Pick().Group().Pick()
		picked[tt.Cluster+" "+tt.Addr] = true
	}
	if len(picked) != 5 {
		t.Errorf("clusterset name picks %v, want all 5 pods", picked)
	}
}

// A cluster cannot take over another cluster's pod name: its export of
// the same hostname is a name with its own cluster in it, a hostname
// naming another cluster ("web-0.east") is not a label the model admits,
// and a hostname pointing at an address that is not its target reaches
// nothing.
func TestPodHostOfAnotherCluster(t *testing.T) {
	evil := headlessExport("west", "web-0=10.0.0.9")
	evil.Hostnames = append(evil.Hostnames, model.ExportHostname{Hostname: "web-1", Addresses: []string{"10.0.0.1"}})
	if err := (&model.ServiceExport{Meta: model.Meta{Name: evil.Name, Owner: "west"}, Namespace: "shop", Service: "db", Type: model.ExportHeadless,
		Hostnames: []model.ExportHostname{{Hostname: "web-0.east", Addresses: []string{"10.0.0.9"}}}}).Validate(); err == nil {
		t.Error("a hostname of two labels was admitted")
	}
	tab := mustCompile(t, podSnapshot(headlessExport("east", "web-0=10.0.0.1"), evil))
	r := matchHost(tab, 80, mcs.PodHost("web-0", "east", "shop", "db"))
	for range 20 {
		if got := r.Pick().Group().Pick(); got == nil || got.Cluster != "east" || got.Addr != "10.0.0.1:8080" {
			t.Fatalf("east's web-0 picked %+v", got)
		}
	}
	r = matchHost(tab, 80, mcs.PodHost("web-1", "west", "shop", "db"))
	if r == nil || r.Pick().Group().Pick() != nil {
		t.Errorf("west's web-1, at an address not among west's targets: %+v", r)
	}
}

// Per-pod names are bounded per proxy: five clusters of 1,000 pods make
// 5,000; beyond maxPodNames they are reported, not served.
func TestPodHostBounds(t *testing.T) {
	var exports []model.ServiceExport
	for c := range 5 {
		var pods []string
		for i := range model.MaxExportHostnames {
			pods = append(pods, fmt.Sprintf("web-%d=10.0.%d.%d", i, i/250, i%250))
		}
		exports = append(exports, headlessExport(fmt.Sprintf("c%d", c), pods...))
	}
	tab := mustCompile(t, podSnapshot(exports...))
	if c := tab.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "per-pod names already make 4096 services") {
		t.Errorf("conflicts %v", c)
	}
	served := 0
	for c := range 5 {
		for i := range model.MaxExportHostnames {
			if tab.Service(PodServiceName("shop", "db", 80, fmt.Sprintf("web-%d", i), fmt.Sprintf("c%d", c))) != nil {
				served++
			}
		}
	}
	if served != maxPodNames {
		t.Errorf("%d per-pod names served, want %d", served, maxPodNames)
	}
}

// BenchmarkPodHostsCompile is a full compile (what any export change
// costs) of a Headless Service exported by 4 clusters of 1,000 pods, with
// and without hostnames: the cost of the 4,000 per-pod names.
func BenchmarkPodHostsCompile(b *testing.B) {
	for _, named := range []bool{false, true} {
		var exports []model.ServiceExport
		for c := range 4 {
			var pods []string
			for i := range model.MaxExportHostnames {
				pod := fmt.Sprintf("web-%d=10.0.%d.%d", i, i/250, i%250)
				if !named {
					pod = pod[strings.IndexByte(pod, '='):]
				}
				pods = append(pods, pod)
			}
			exports = append(exports, headlessExport(fmt.Sprintf("c%d", c), pods...))
		}
		b.Run(fmt.Sprintf("hostnames=%v", named), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var c Compiler
				if _, err := c.Compile(podSnapshot(exports...)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An import that is ClusterSetIP (an older ClusterSetIP export won the
// type conflict) has no per-pod names, though a younger Headless export
// names its pods.
func TestPodHostNotOfAClusterSetIPImport(t *testing.T) {
	older := headlessExport("east", "=10.0.0.1")
	older.Type, older.ExportedAt = model.ExportClusterSetIP, time.Unix(1000, 0)
	younger := headlessExport("west", "web-0=10.0.0.2")
	younger.ExportedAt = time.Unix(2000, 0)
	tab := mustCompile(t, podSnapshot(older, younger))
	if r := matchHost(tab, 80, mcs.PodHost("web-0", "west", "shop", "db")); r != nil {
		t.Errorf("west's web-0 matched %s", r.Service)
	}
	if r := matchHost(tab, 80, mcs.ClustersetHost("shop", "db")); r == nil {
		t.Error("the Service's name is not served")
	}
}

// dbTLSRoute is a TLS passthrough service on port 443 of network mesh,
// its listener's host names hosts, forwarding to shop/db's port 80 (as a
// TLSRoute to the ServiceImport makes it).
func dbTLSRoute(hosts ...string) model.Service {
	return model.Service{Meta: model.Meta{Name: "db-tls"}, Network: "mesh",
		Listeners: []model.Listener{{Name: "tls", Port: 443, Protocol: model.ProtocolTLSPassthrough, Hostnames: hosts}},
		Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1,
			Import: &model.ImportRef{Namespace: "shop", Name: "db", Port: 80, Protocol: model.ProtocolTCP, ProtocolVersion: model.HTTP1}}}}}}},
	}
}

// A TLS passthrough route over the Service's wildcard name serves each
// per-pod name by SNI with that pod of that cluster only; a name below an
// exporting cluster's that is no ready pod's reaches no target; the
// Service's other names keep the route's spread over every pod.
func TestPodHostBySNI(t *testing.T) {
	snap := podSnapshot(headlessExport("east", "web-0=10.0.0.1", "web-1=10.0.0.2"), headlessExport("west", "web-0=10.0.0.2"))
	snap.Services = []model.Service{dbTLSRoute("*.db.shop.svc.clusterset.local")}
	tab := mustCompile(t, snap)
	if c := tab.Conflicts(); len(c) > 0 {
		t.Fatalf("conflicts %v", c)
	}
	bind := Bind{Port: 443}
	for _, tc := range []struct{ hostname, cluster, addr string }{
		{"web-0", "east", "10.0.0.1:8080"}, {"web-1", "east", "10.0.0.2:8080"}, {"web-0", "west", "10.0.0.2:8080"},
	} {
		host := mcs.PodHost(tc.hostname, tc.cluster, "shop", "db")
		r := tab.MatchSNI(bind, host)
		if r == nil || r.Service != ClustersetServicePrefix+"db-tls/"+tc.hostname+"."+tc.cluster {
			t.Fatalf("%s: %+v", host, r)
		}
		for range 20 {
			if got := r.Pick().Group().Pick(); got == nil || got.Cluster != tc.cluster || got.Addr != tc.addr {
				t.Fatalf("%s: picked %+v, want %s %s", host, got, tc.cluster, tc.addr)
			}
		}
		// The peer hop's receiver finds the same service, in the network.
		if svc := tab.Service(r.Service); svc == nil || svc.Network != "mesh" || len(svc.Imports) != 1 {
			t.Errorf("%s: service %+v", host, svc)
		}
	}
	for _, host := range []string{mcs.PodHost("web-1", "west", "shop", "db"), "x.web-0.east.db.shop.svc.clusterset.local"} {
		if r := tab.MatchSNI(bind, host); r == nil || r.Pick().Group().Pick() != nil {
			t.Errorf("%s: %+v, want a route without a target", host, r)
		}
	}
	if r := tab.MatchSNI(bind, "other.db.shop.svc.clusterset.local"); r == nil || r.Service != "db-tls" {
		t.Errorf("another name under the route's wildcard: %+v", r)
	}

	// The route goes: so do its per-pod names (an incremental compile).
	var c Compiler
	if _, err := c.Compile(snap); err != nil {
		t.Fatal(err)
	}
	next := podSnapshot(snap.Exports...)
	next.Revision = 2
	next.Services = []model.Service{{Meta: model.Meta{Name: "other"}, Network: "mesh",
		Listeners: []model.Listener{{Name: "tls", Port: 443, Protocol: model.ProtocolTLSPassthrough, Hostnames: []string{"x.example"}}},
		Rules:     snap.Services[0].Rules}}
	next.Services[0].Rules = nil
	tab2, err := c.Compile(next)
	if err != nil {
		t.Fatal(err)
	}
	if r := tab2.MatchSNI(bind, mcs.PodHost("web-0", "east", "shop", "db")); r != nil {
		t.Errorf("after the route went: %s", r.Service)
	}
}

// A route naming a per-pod host exactly keeps it: no per-pod service is
// made for it.
func TestPodHostBySNIExactRouteWins(t *testing.T) {
	host := mcs.PodHost("web-0", "east", "shop", "db")
	snap := podSnapshot(headlessExport("east", "web-0=10.0.0.1"))
	snap.Services = []model.Service{dbTLSRoute(host)}
	tab := mustCompile(t, snap)
	if r := tab.MatchSNI(Bind{Port: 443}, host); r == nil || r.Service != "db-tls" {
		t.Errorf("%s: %+v, want the route's own", host, r)
	}
}
