package nameserver

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"trellis.dev/trellis/internal/model"
)

// headless adds cluster's Headless export of shop/db, port 80 (http) and
// 5432 (pg), with a target per hostname=address pair ("" for a pod
// without a hostname).
func headless(s *model.Snapshot, cluster string, pods ...string) *model.Snapshot {
	e := model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "db"), Owner: cluster},
		Namespace: "shop", Service: "db", Type: model.ExportHeadless}
	var targets []model.Target
	for _, pod := range pods {
		h, addr, _ := strings.Cut(pod, "=")
		targets = append(targets, model.Target{Address: addr, Port: 8080, Cluster: cluster, State: model.TargetActive})
		if h != "" {
			e.Hostnames = append(e.Hostnames, model.ExportHostname{Hostname: h, Addresses: []string{addr}})
		}
	}
	e.Ports = []model.ExportPort{{Name: "http", Protocol: "TCP", Port: 80, Targets: targets}, {Name: "pg", Protocol: "TCP", Port: 5432, Targets: targets}}
	s.Exports = append(s.Exports, e)
	return s
}

// Per-pod names of a Headless export: each pod with a hostname has
// <hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local, answered with the
// proxy's addresses (not the pod's: pod addresses of one cluster mean
// nothing in another); the cluster's name below the Service exists
// empty; an unknown hostname or cluster does not exist; the SRV records
// name each pod per port, and the Service itself only while some pod has
// no hostname.
func TestClustersetPodNames(t *testing.T) {
	s, addr := start(t, "127.0.0.1", "::1")
	snap := headless(snapshot(3), "east", "web-0=10.0.0.1", "web-1=10.0.0.2")
	snap = headless(snap, "west.eu", "web-0=10.0.0.1")
	s.Update(snap)
	ok4 := result{rcode: dns.RcodeSuccess, answers: []string{"127.0.0.1"}, aa: true}
	ok6 := result{rcode: dns.RcodeSuccess, answers: []string{"::1"}, aa: true}
	ask(t, addr, []question{
		{"web-0.east.db.shop.svc.clusterset.local.", dns.TypeA, ok4},
		{"WEB-1.East.db.shop.svc.clusterset.local.", dns.TypeA, ok4},
		{"web-0.east.db.shop.svc.clusterset.local.", dns.TypeAAAA, ok6},
		{"web-0.west.eu.db.shop.svc.clusterset.local.", dns.TypeA, ok4},
		{"db.shop.svc.clusterset.local.", dns.TypeA, ok4},
		{"east.db.shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"eu.db.shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"west.eu.db.shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"web-2.east.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"web-1.west.eu.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"web-0.north.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"x.web-0.east.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"web-0.east.cart.shop.svc.clusterset.local.", dns.TypeA, nx},
	})
	podsOn := func(port int) []string {
		return []string{
			fmt.Sprintf("%d web-0.east.db.shop.svc.clusterset.local.", port),
			fmt.Sprintf("%d web-0.west.eu.db.shop.svc.clusterset.local.", port),
			fmt.Sprintf("%d web-1.east.db.shop.svc.clusterset.local.", port),
		}
	}
	srv := func(name string, want []string) {
		t.Helper()
		got, _, rcode := srvAnswer(t, "tcp", addr, name)
		slices.Sort(got)
		slices.Sort(want)
		if rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
			t.Errorf("SRV %s = %s %v, want %v", name, dns.RcodeToString[rcode], got, want)
		}
	}
	srv("db.shop.svc.clusterset.local.", slices.Concat(podsOn(80), podsOn(5432)))
	srv("_http._tcp.db.shop.svc.clusterset.local.", podsOn(80))
	srv("_pg._tcp.db.shop.svc.clusterset.local.", podsOn(5432))

	// A pod without a hostname is reached by the Service's name.
	s.Update(headless(snapshot(4), "east", "web-0=10.0.0.1", "=10.0.0.3"))
	srv("_http._tcp.db.shop.svc.clusterset.local.", []string{"80 db.shop.svc.clusterset.local.", "80 web-0.east.db.shop.svc.clusterset.local."})
	if got := query(t, "udp", addr, "web-0.west.eu.db.shop.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("a pod whose export went: %+v, want NXDOMAIN", got)
	}
}

// The SRV answer of a Headless Service of 3 clusters of 1,000 pods and two
// ports is cut to fit: truncated over UDP, at most 64 KiB over TCP, never
// no answer.
func TestClustersetPodSRVBounded(t *testing.T) {
	s, addr := start(t, "127.0.0.1")
	snap := snapshot(3)
	for c := range 3 {
		var pods []string
		for i := range model.MaxExportHostnames {
			pods = append(pods, fmt.Sprintf("web-%d=10.0.%d.%d", i, i/250, i%250))
		}
		snap = headless(snap, fmt.Sprintf("cluster-%d", c), pods...)
	}
	s.Update(snap)
	if got, tc, _ := srvAnswer(t, "udp", addr, "db.shop.svc.clusterset.local."); !tc || len(got) == 0 {
		t.Errorf("over UDP: %d records, truncated %v", len(got), tc)
	}
	got, _, rcode := srvAnswer(t, "tcp", addr, "db.shop.svc.clusterset.local.")
	if rcode != dns.RcodeSuccess || len(got) == 0 || len(got) >= 6000 {
		t.Errorf("over TCP: %s, %d records of 6000", dns.RcodeToString[rcode], len(got))
	}
	if got := query(t, "tcp", addr, "web-999.cluster-2.db.shop.svc.clusterset.local.", dns.TypeA); len(got.answers) != 1 {
		t.Errorf("the last pod: %+v", got)
	}
}

// When a ClusterSetIP export wins the type conflict (it is older), the
// import is ClusterSetIP and the Headless export's pods have no names.
func TestClustersetPodNamesNotOfAClusterSetIPImport(t *testing.T) {
	s, addr := start(t, "127.0.0.1")
	snap := headless(snapshot(3), "east", "web-0=10.0.0.1")
	snap = headless(snap, "west", "web-0=10.0.0.1")
	snap.Exports[0].Type, snap.Exports[0].Hostnames = model.ExportClusterSetIP, nil
	snap.Exports[0].ExportedAt = time.Unix(1000, 0)
	snap.Exports[1].ExportedAt = time.Unix(2000, 0)
	s.Update(snap)
	if got := query(t, "udp", addr, "db.shop.svc.clusterset.local.", dns.TypeA); len(got.answers) != 1 {
		t.Fatalf("the Service's name: %+v", got)
	}
	if got := query(t, "udp", addr, "web-0.west.db.shop.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("a pod of the younger Headless export: %+v, want NXDOMAIN", got)
	}
	// The older export Headless: west's pod is named again.
	snap.Exports[1].ExportedAt = time.Unix(500, 0)
	snap.Revision = 4
	s.Update(snap)
	if got := query(t, "udp", addr, "web-0.west.db.shop.svc.clusterset.local.", dns.TypeA); len(got.answers) != 1 {
		t.Errorf("a pod of the older Headless export: %+v", got)
	}
}
