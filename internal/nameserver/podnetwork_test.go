package nameserver

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"trellis.dev/trellis/internal/model"
)

// admitted adds the published admissions of clusters, each "name" or
// "name=pod network".
func admitted(s *model.Snapshot, clusters ...string) *model.Snapshot {
	for _, c := range clusters {
		name, network, _ := strings.Cut(c, "=")
		s.Clusters = append(s.Clusters, model.Cluster{Meta: model.Meta{Name: name, Owner: model.ControlPlaneOwner}, PodNetwork: network})
	}
	return s
}

// podNetworkSnapshot is shop/db exported Headless by east (two named pods,
// one of them IPv6, and one without a hostname) and west.eu (a pod whose
// address east also names, to be answered once), east, west.eu and far in
// pod network "flat", north in "other", south in its own.
func podNetworkSnapshot(rev int64) *model.Snapshot {
	snap := admitted(snapshot(rev), "east=flat", "west.eu=flat", "far=flat", "north=other", "south")
	snap = headless(snap, "east", "web-0=10.0.0.1", "web-1=fd00::2", "=10.0.0.3")
	return headless(snap, "west.eu", "web-0=10.1.0.1", "web-9=10.0.0.1")
}

// In the proxy's cluster's pod network a Headless Service answers its
// pods' own addresses: the Service's name every exporting cluster's ready
// endpoints (unique, by family), a pod's name that pod's; names that do
// not exist stay NXDOMAIN, and the SRV records still name the pods, with
// the pods' addresses beside them.
func TestClustersetPodNetworkAnswersThePods(t *testing.T) {
	s, addr := startIn(t, "east", "127.0.0.1", "::1")
	s.Update(podNetworkSnapshot(3))
	ok := func(addrs ...string) result { return result{rcode: dns.RcodeSuccess, answers: addrs, aa: true} }
	ask(t, addr, []question{
		{"db.shop.svc.clusterset.local.", dns.TypeA, ok("10.0.0.1", "10.0.0.3", "10.1.0.1")},
		{"DB.Shop.svc.clusterset.local.", dns.TypeAAAA, ok("fd00::2")},
		{"web-0.east.db.shop.svc.clusterset.local.", dns.TypeA, ok("10.0.0.1")},
		{"web-0.east.db.shop.svc.clusterset.local.", dns.TypeAAAA, nodata},
		{"web-1.east.db.shop.svc.clusterset.local.", dns.TypeAAAA, ok("fd00::2")},
		{"web-1.east.db.shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"web-0.west.eu.db.shop.svc.clusterset.local.", dns.TypeA, ok("10.1.0.1")},
		{"web-9.west.eu.db.shop.svc.clusterset.local.", dns.TypeA, ok("10.0.0.1")},
		{"east.db.shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"web-2.east.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"web-0.far.db.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"cart.shop.svc.clusterset.local.", dns.TypeA, nx},
	})
	targets, _, rcode := srvAnswer(t, "tcp", addr, "_http._tcp.db.shop.svc.clusterset.local.")
	slices.Sort(targets)
	want := []string{"80 db.shop.svc.clusterset.local.", "80 web-0.east.db.shop.svc.clusterset.local.", "80 web-0.west.eu.db.shop.svc.clusterset.local.",
		"80 web-1.east.db.shop.svc.clusterset.local.", "80 web-9.west.eu.db.shop.svc.clusterset.local."}
	if rcode != dns.RcodeSuccess || !slices.Equal(targets, want) {
		t.Errorf("SRV targets %v, want %v", targets, want)
	}
	extra := srvExtra(t, addr, "_http._tcp.db.shop.svc.clusterset.local.")
	for _, w := range []string{"web-0.east.db.shop.svc.clusterset.local. 10.0.0.1", "web-1.east.db.shop.svc.clusterset.local. fd00::2",
		"db.shop.svc.clusterset.local. 10.1.0.1", "db.shop.svc.clusterset.local. fd00::2"} {
		if !slices.Contains(extra, w) {
			t.Errorf("SRV additional section %v lacks %s", extra, w)
		}
	}
	if slices.ContainsFunc(extra, func(e string) bool { return strings.HasSuffix(e, " 127.0.0.1") || strings.HasSuffix(e, " ::1") }) {
		t.Errorf("SRV additional section %v has the proxy's addresses", extra)
	}
}

// A name means one thing: when some exporting cluster with ready
// endpoints is outside the proxy's pod network (another network, its own,
// or not admitted at all), the Service's name answers the proxy's
// addresses, while the pods of clusters inside it keep their own and the
// others' pods the proxy's. A cluster with no ready endpoint does not
// count. A ClusterSetIP import always answers the proxy.
func TestClustersetPodNetworkMixed(t *testing.T) {
	s, addr := startIn(t, "east", "127.0.0.1", "::1")
	proxy := result{rcode: dns.RcodeSuccess, answers: []string{"127.0.0.1"}, aa: true}
	check := func(name string, want result) {
		t.Helper()
		if got := query(t, "udp", addr, name, dns.TypeA); got.rcode != want.rcode || !slices.Equal(got.answers, want.answers) {
			t.Errorf("A %s = %+v, want %+v", name, got, want)
		}
	}
	for _, outside := range []string{"north", "south", "stranger"} {
		t.Run(outside, func(t *testing.T) {
			snap := headless(podNetworkSnapshot(4), outside, "web-0=10.9.0.1")
			s.Update(snap)
			check("db.shop.svc.clusterset.local.", proxy)
			check("web-0."+outside+".db.shop.svc.clusterset.local.", proxy)
			check("web-0.east.db.shop.svc.clusterset.local.", result{rcode: dns.RcodeSuccess, answers: []string{"10.0.0.1"}, aa: true})
			check("web-0.west.eu.db.shop.svc.clusterset.local.", result{rcode: dns.RcodeSuccess, answers: []string{"10.1.0.1"}, aa: true})

			// The outside cluster's endpoints only draining: it has no
			// ready endpoint, and the Service's name is the pods' again.
			e := &snap.Exports[len(snap.Exports)-1]
			e.Hostnames = nil
			for i := range e.Ports {
				for j := range e.Ports[i].Targets {
					e.Ports[i].Targets[j].State = model.TargetDraining
				}
			}
			snap.Revision++
			s.Update(snap)
			check("db.shop.svc.clusterset.local.", result{rcode: dns.RcodeSuccess, answers: []string{"10.0.0.1", "10.0.0.3", "10.1.0.1"}, aa: true})
		})
	}

	// A ClusterSetIP import, even of clusters in one network: the proxy.
	snap := podNetworkSnapshot(9)
	for i := range snap.Exports {
		snap.Exports[i].Type, snap.Exports[i].Hostnames = model.ExportClusterSetIP, nil
		snap.Exports[i].ExportedAt = time.Unix(int64(1000+i), 0)
	}
	s.Update(snap)
	check("db.shop.svc.clusterset.local.", proxy)
}

// Outside every pod network the answers are the proxy's, as without
// networks: a proxy of an isolated cluster, of one in another network, of
// a cluster not admitted, and of no cluster at all. A network declared by
// nobody but the exporting clusters does not make it shared.
func TestClustersetPodNetworkIsolated(t *testing.T) {
	for _, cluster := range []string{"south", "north", "stranger", ""} {
		t.Run(cmp.Or(cluster, "none"), func(t *testing.T) {
			s, addr := startIn(t, cluster, "127.0.0.1", "::1")
			s.Update(podNetworkSnapshot(3))
			for _, name := range []string{"db.shop.svc.clusterset.local.", "web-0.east.db.shop.svc.clusterset.local.", "web-0.west.eu.db.shop.svc.clusterset.local."} {
				if got := query(t, "udp", addr, name, dns.TypeA); !slices.Equal(got.answers, []string{"127.0.0.1"}) {
					t.Errorf("A %s = %+v, want the proxy's address", name, got)
				}
				if got := query(t, "udp", addr, name, dns.TypeAAAA); !slices.Equal(got.answers, []string{"::1"}) {
					t.Errorf("AAAA %s = %+v, want the proxy's address", name, got)
				}
			}
		})
	}
}

// Moving a cluster out of the network (the operator's `cluster set`)
// takes effect with the next snapshot.
func TestClustersetPodNetworkFollowsAdmissions(t *testing.T) {
	s, addr := startIn(t, "east", "127.0.0.1")
	snap := podNetworkSnapshot(3)
	s.Update(snap)
	if got := query(t, "udp", addr, "web-0.west.eu.db.shop.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"10.1.0.1"}) {
		t.Fatalf("in the network: %+v", got)
	}
	for i := range snap.Clusters {
		if snap.Clusters[i].Name == "west.eu" {
			snap.Clusters[i].PodNetwork = ""
		}
	}
	snap.Revision = 4
	s.Update(snap)
	if got := query(t, "udp", addr, "web-0.west.eu.db.shop.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"127.0.0.1"}) {
		t.Errorf("moved out: %+v, want the proxy's address", got)
	}
	if got := query(t, "udp", addr, "db.shop.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"127.0.0.1"}) {
		t.Errorf("the Service with west.eu moved out: %+v, want the proxy's address", got)
	}
	if got := query(t, "udp", addr, "web-0.east.db.shop.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"10.0.0.1"}) {
		t.Errorf("east's own pod: %+v", got)
	}
}

// srvExtra is the additional section of an SRV answer over TCP, as "name
// address" lines.
func srvExtra(t *testing.T, addr, name string) []string {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range r.Extra {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.Hdr.Name+" "+rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.Hdr.Name+" "+rr.AAAA.String())
		}
	}
	return out
}

// The pods' addresses of a Headless Service of 5 clusters of 1,000 pods
// in one network are cut to fit like any long answer: truncated over UDP,
// what fits in 64 KiB over TCP, never no answer.
func TestClustersetPodNetworkBounded(t *testing.T) {
	s, addr := startIn(t, "c-0", "127.0.0.1")
	snap := snapshot(3)
	for c := range 5 {
		snap = admitted(snap, fmt.Sprintf("c-%d=flat", c))
		var pods []string
		for i := range model.MaxExportHostnames {
			pods = append(pods, fmt.Sprintf("web-%d=10.%d.%d.%d", i, c, i/250, i%250))
		}
		snap = headless(snap, fmt.Sprintf("c-%d", c), pods...)
	}
	s.Update(snap)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("db.shop.svc.clusterset.local.", dns.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(r.Answer) == 0 {
		t.Errorf("over UDP: truncated %v, %d records", r.Truncated, len(r.Answer))
	}
	got := query(t, "tcp", addr, "db.shop.svc.clusterset.local.", dns.TypeA)
	if got.rcode != dns.RcodeSuccess || len(got.answers) < 1000 || len(got.answers) >= 5000 || got.answers[0] != "10.0.0.0" {
		t.Errorf("over TCP: %s, %d addresses of 5000, first %v", dns.RcodeToString[got.rcode], len(got.answers), got.answers[:min(1, len(got.answers))])
	}
}

// A cluster whose lease has lapsed leaves the pod network's answers at
// once, without a new snapshot: its pods' names and the Service's name
// answer the proxy's addresses (whose pick has dropped its targets), and
// its pods' own addresses come back with its lease. The proxy's own
// cluster is never lapsed to itself.
func TestClustersetPodNetworkLapsedLease(t *testing.T) {
	s, addr := startIn(t, "east", "127.0.0.1")
	s.Update(podNetworkSnapshot(5))
	check := func(name string, want ...string) {
		t.Helper()
		if got := query(t, "udp", addr, name, dns.TypeA); got.rcode != dns.RcodeSuccess || !slices.Equal(got.answers, want) {
			t.Errorf("A %s = %+v, want %v", name, got, want)
		}
	}
	s.SetLapsed(map[string]bool{"west.eu": true})
	check("db.shop.svc.clusterset.local.", "127.0.0.1")
	check("web-0.west.eu.db.shop.svc.clusterset.local.", "127.0.0.1")
	check("web-0.east.db.shop.svc.clusterset.local.", "10.0.0.1")

	s.SetLapsed(map[string]bool{"east": true})
	check("db.shop.svc.clusterset.local.", "10.0.0.1", "10.0.0.3", "10.1.0.1")
	check("web-0.west.eu.db.shop.svc.clusterset.local.", "10.1.0.1")

	// A lapse seen before the next snapshot still holds for it.
	s.SetLapsed(map[string]bool{"west.eu": true})
	s.Update(podNetworkSnapshot(6))
	check("web-0.west.eu.db.shop.svc.clusterset.local.", "127.0.0.1")
	s.SetLapsed(nil)
	check("web-0.west.eu.db.shop.svc.clusterset.local.", "10.1.0.1")
}
