package nameserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"trellis.dev/trellis/internal/model"
)

func snapshot(rev int64, services ...string) *model.Snapshot {
	s := &model.Snapshot{Objects: model.Objects{Networks: []model.ServiceNetwork{
		{Meta: model.Meta{Name: "my-hotel"}, Mode: model.ModeServiceNetwork, Domain: "my-hotel.trellis.internal"},
		{Meta: model.Meta{Name: "edge"}, Mode: model.ModeEdge},
	}}, Revision: rev}
	for _, name := range services {
		s.Services = append(s.Services, model.Service{
			Meta: model.Meta{Name: name + "-default.my-hotel"}, Network: "my-hotel",
			DNSName: name + "-default.my-hotel.trellis.internal", CustomDomains: []string{name + ".example.com"},
		})
	}
	s.Services = append(s.Services, model.Service{Meta: model.Meta{Name: "shop"}, Network: "edge", CustomDomains: []string{"shop.example.com"}})
	return s
}

func start(t *testing.T, addrs ...string) (*Server, string) {
	t.Helper()
	return startIn(t, "", addrs...)
}

// startIn starts a server for a proxy of cluster, answering addrs.
func startIn(t *testing.T, cluster string, addrs ...string) (*Server, string) {
	t.Helper()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	s, err := New(Config{Addresses: as, Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, addr
}

type result struct {
	rcode   int
	answers []string // the A/AAAA addresses
	soa     bool
	aa      bool
}

// The results of a name that exists without records of the type asked
// (NODATA) and of one that does not exist (NXDOMAIN), both with the SOA.
var (
	nodata = result{rcode: dns.RcodeSuccess, soa: true, aa: true}
	nx     = result{rcode: dns.RcodeNameError, soa: true, aa: true}
)

// question is a query and the result it must get.
type question struct {
	name  string
	qtype uint16
	want  result
}

// ask asks the server at addr every question, over UDP and over TCP.
func ask(t *testing.T, addr string, questions []question) {
	t.Helper()
	for _, proto := range []string{"udp", "tcp"} {
		for _, q := range questions {
			got := query(t, proto, addr, q.name, q.qtype)
			if got.rcode != q.want.rcode || !slices.Equal(got.answers, q.want.answers) || got.soa != q.want.soa || got.aa != q.want.aa {
				t.Errorf("%s %s %s = %+v, want %+v", proto, dns.TypeToString[q.qtype], q.name, got, q.want)
			}
		}
	}
}

func query(t *testing.T, net, addr, name string, qtype uint16) result {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	var r *dns.Msg
	var err error
	for range 20 { // the listener may still be starting
		if r, _, err = c.Exchange(m, addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, net, err)
	}
	res := result{rcode: r.Rcode, aa: r.Authoritative}
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			res.answers = append(res.answers, rr.A.String())
		case *dns.AAAA:
			res.answers = append(res.answers, rr.AAAA.String())
		}
		if rr.Header().Ttl != TTL {
			t.Errorf("%s: TTL %d, want %d", name, rr.Header().Ttl, TTL)
		}
	}
	for _, rr := range r.Ns {
		_, res.soa = rr.(*dns.SOA)
	}
	return res
}

func TestAnswers(t *testing.T) {
	s, addr := start(t, "198.18.0.1", "fd00::1")
	s.Update(snapshot(7, "inventory", "parking"))
	ask(t, addr, []question{
		{"inventory-default.my-hotel.trellis.internal.", dns.TypeA, result{rcode: dns.RcodeSuccess, answers: []string{"198.18.0.1"}, aa: true}},
		{"INVENTORY-Default.My-Hotel.trellis.internal.", dns.TypeA, result{rcode: dns.RcodeSuccess, answers: []string{"198.18.0.1"}, aa: true}},
		{"parking-default.my-hotel.trellis.internal.", dns.TypeAAAA, result{rcode: dns.RcodeSuccess, answers: []string{"fd00::1"}, aa: true}},
		// The network's own domain is the Gateway's address.
		{"my-hotel.trellis.internal.", dns.TypeA, result{rcode: dns.RcodeSuccess, answers: []string{"198.18.0.1"}, aa: true}},
		// A name without records of the type: NODATA, with the SOA.
		{"parking-default.my-hotel.trellis.internal.", dns.TypeMX, nodata},
		{"review-default.my-hotel.trellis.internal.", dns.TypeA, nx},
		{"x.inventory-default.my-hotel.trellis.internal.", dns.TypeA, nx},
		// Custom domains and everything else belong to other servers.
		{"inventory.example.com.", dns.TypeA, result{rcode: dns.RcodeRefused}},
		{"shop.example.com.", dns.TypeA, result{rcode: dns.RcodeRefused}},
		{"trellis.internal.", dns.TypeA, result{rcode: dns.RcodeRefused}},
	})

	// An update takes effect at once: a service that left is NXDOMAIN, a
	// new one resolves.
	s.Update(snapshot(8, "review"))
	if got := query(t, "udp", addr, "inventory-default.my-hotel.trellis.internal.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("a removed service: %+v, want NXDOMAIN", got)
	}
	if got := query(t, "udp", addr, "review-default.my-hotel.trellis.internal.", dns.TypeA); len(got.answers) != 1 {
		t.Errorf("an added service: %+v, want an answer", got)
	}
}

// goResolver is Go's own resolver, asking only the server at addr.
func goResolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// Go's own resolver, pointed at the server, finds a service's address.
func TestGoResolver(t *testing.T) {
	s, addr := start(t, "127.0.0.1")
	s.Update(snapshot(1, "inventory"))
	r := goResolver(addr)
	ips, err := r.LookupHost(context.Background(), "inventory-default.my-hotel.trellis.internal")
	if err != nil || !slices.Equal(ips, []string{"127.0.0.1"}) {
		t.Errorf("LookupHost = %v, %v; want [127.0.0.1]", ips, err)
	}
	if _, err := r.LookupHost(context.Background(), "nothing.my-hotel.trellis.internal"); err == nil {
		t.Error("an unknown name resolved")
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without addresses: no error")
	}
	as, err := ParseAddresses("198.18.0.1, ::ffff:10.0.0.1,fd00::2")
	if err != nil || len(as) != 3 || !as[1].Is4() {
		t.Errorf("ParseAddresses = %v, %v", as, err)
	}
	for _, bad := range []string{"", "not-an-ip", "1.2.3.4,,x"} {
		if _, err := ParseAddresses(bad); err == nil {
			t.Errorf("ParseAddresses(%q): no error", bad)
		}
	}
}

// FuzzAnswer feeds the handler arbitrary messages: whatever arrives, it
// answers without panicking, and never with an address for a name outside
// the table.
func FuzzAnswer(f *testing.F) {
	// A proxy of east, in pod network flat with west: db's names answer
	// the pods' addresses, cart's the proxy's.
	s, err := New(Config{Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, Cluster: "east"})
	if err != nil {
		f.Fatal(err)
	}
	snap := admitted(withExports(snapshot(1, "inventory"), [3]string{"east", "shop", "cart"}), "east=flat", "west=flat")
	s.Update(headless(headless(snap, "east", "web-0=10.0.0.1", "=10.0.0.2"), "west", "web-0=fd00::1"))
	for _, name := range []string{"inventory-default.my-hotel.trellis.internal.", "my-hotel.trellis.internal.", "x.", ".",
		"cart.shop.svc.clusterset.local.", "shop.svc.clusterset.local.", "web-0.east.db.shop.svc.clusterset.local.",
		"east.db.shop.svc.clusterset.local.", "web-0.west.db.shop.svc.clusterset.local.", "_http._tcp.db.shop.svc.clusterset.local."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return
		}
		r := s.answer(q)
		if len(r.Answer) > 0 {
			name := dns.CanonicalName(q.Question[0].Name)
			tab := s.table.Load()
			if !tab.names[name] {
				t.Errorf("answered %q, which is not in the table", name)
			}
			for _, rr := range r.Answer {
				var a netip.Addr
				switch rr := rr.(type) {
				case *dns.A:
					a, _ = netip.AddrFromSlice(rr.A)
				case *dns.AAAA:
					a, _ = netip.AddrFromSlice(rr.AAAA)
				default:
					continue
				}
				want, ok := tab.direct[name]
				if !ok {
					want = s.cfg.Addresses
				}
				if !slices.Contains(want, a.Unmap()) {
					t.Errorf("%q answered %s, not one of %v", name, a, want)
				}
			}
		}
	})
}

// withExports adds exports of namespace/service by each cluster to s.
func withExports(s *model.Snapshot, exports ...[3]string) *model.Snapshot {
	for _, e := range exports {
		cluster, ns, svc := e[0], e[1], e[2]
		s.Exports = append(s.Exports, model.ServiceExport{
			Meta: model.Meta{Name: model.ExportName(cluster, ns, svc), Owner: cluster}, Namespace: ns, Service: svc,
			Type: model.ExportClusterSetIP,
		})
	}
	return s
}

// The Multi-Cluster Services names: every exported Service's
// <service>.<namespace>.svc.clusterset.local resolves to the proxy;
// other names in svc.clusterset.local do not exist; cluster.local is
// someone else's, as before.
func TestClustersetNames(t *testing.T) {
	s, addr := start(t, "127.0.0.1", "::1")
	s.Update(withExports(snapshot(3, "inventory"),
		[3]string{"east", "shop", "cart"}, [3]string{"west", "shop", "cart"}, [3]string{"west", "billing", "ledger"}))
	ok4 := result{rcode: dns.RcodeSuccess, answers: []string{"127.0.0.1"}, aa: true}
	refused := result{rcode: dns.RcodeRefused}
	ask(t, addr, []question{
		{"cart.shop.svc.clusterset.local.", dns.TypeA, ok4},
		{"Cart.SHOP.svc.clusterset.local.", dns.TypeA, ok4},
		{"cart.shop.svc.clusterset.local.", dns.TypeAAAA, result{rcode: dns.RcodeSuccess, answers: []string{"::1"}, aa: true}},
		{"ledger.billing.svc.clusterset.local.", dns.TypeA, ok4},
		{"cart.shop.svc.clusterset.local.", dns.TypeTXT, nodata},
		// Not exported, or exported in another namespace.
		{"ledger.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"cart.billing.svc.clusterset.local.", dns.TypeA, nx},
		{"cart.other.svc.clusterset.local.", dns.TypeA, nx},
		// Headless per-pod and the reserved per-cluster forms are not served.
		{"pod-0.east.cart.shop.svc.clusterset.local.", dns.TypeA, nx},
		{"east.cart.shop.svc.clusterset.local.", dns.TypeA, nx},
		// Names with exported names below them exist without records.
		{"shop.svc.clusterset.local.", dns.TypeA, nodata},
		{"svc.clusterset.local.", dns.TypeA, nodata},
		// Outside svc.clusterset.local, and all of cluster.local: refused
		// as before.
		{"clusterset.local.", dns.TypeA, refused},
		{"cart.shop.clusterset.local.", dns.TypeA, refused},
		{"cart.shop.svc.cluster.local.", dns.TypeA, refused},
		{"kubernetes.default.svc.cluster.local.", dns.TypeA, refused},
		// The service networks' names are unchanged.
		{"inventory-default.my-hotel.trellis.internal.", dns.TypeA, ok4},
	})

	// When the last export of a name goes, so does the name; the others stay.
	s.Update(withExports(snapshot(4, "inventory"), [3]string{"west", "shop", "cart"}))
	if got := query(t, "udp", addr, "ledger.billing.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("a name no longer exported: %+v, want NXDOMAIN", got)
	}
	if got := query(t, "udp", addr, "billing.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("a namespace with no exports left: %+v, want NXDOMAIN", got)
	}
	if got := query(t, "udp", addr, "cart.shop.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"127.0.0.1"}) {
		t.Errorf("a name still exported by one cluster: %+v, want 127.0.0.1", got)
	}
	// A name whose only export is from a namespace its cluster may no
	// longer export from is not answered.
	limited := withExports(snapshot(5, "inventory"), [3]string{"west", "shop", "cart"}, [3]string{"west", "billing", "ledger"})
	limited.Clusters = []model.Cluster{{Meta: model.Meta{Name: "west", Owner: model.ControlPlaneOwner}, ExportNamespaces: []string{"billing"}}}
	s.Update(limited)
	if got := query(t, "udp", addr, "cart.shop.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeNameError {
		t.Errorf("an export outside its cluster's namespaces: %+v, want NXDOMAIN", got)
	}
	if got := query(t, "udp", addr, "ledger.billing.svc.clusterset.local.", dns.TypeA); !slices.Equal(got.answers, []string{"127.0.0.1"}) {
		t.Errorf("an export inside its cluster's namespaces: %+v, want 127.0.0.1", got)
	}
	// With no exports at all, the zone is still ours: NXDOMAIN, not REFUSED.
	s.Update(snapshot(6))
	if got := query(t, "udp", addr, "cart.shop.svc.clusterset.local.", dns.TypeA); got.rcode != nx.rcode || !got.soa || len(got.answers) > 0 {
		t.Errorf("no exports: %+v, want %+v", got, nx)
	}
}

// Before the first snapshot nothing is answered, clusterset.local included:
// a resolver asks another server rather than caching a negative answer.
func TestClustersetBeforeFirstSnapshot(t *testing.T) {
	_, addr := start(t, "127.0.0.1")
	if got := query(t, "udp", addr, "cart.shop.svc.clusterset.local.", dns.TypeA); got.rcode != dns.RcodeRefused {
		t.Errorf("before any snapshot: %+v, want REFUSED", got)
	}
}

// Go's resolver finds an exported Service by its clusterset name.
func TestClustersetGoResolver(t *testing.T) {
	s, addr := start(t, "127.0.0.1")
	s.Update(withExports(snapshot(1), [3]string{"east", "shop", "cart"}))
	ips, err := goResolver(addr).LookupHost(context.Background(), "cart.shop.svc.clusterset.local")
	if err != nil || !slices.Equal(ips, []string{"127.0.0.1"}) {
		t.Errorf("LookupHost = %v, %v; want [127.0.0.1]", ips, err)
	}
}

// srvAnswer asks name's SRV records over net and returns them as
// "port target", with whether the reply was truncated.
func srvAnswer(t *testing.T, net, addr, name string) ([]string, bool, int) {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("SRV %s over %s: %v", name, net, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, fmt.Sprintf("%d %s", s.Port, s.Target))
		}
	}
	return out, r.Truncated, r.Rcode
}

// SRV records of the clusterset names: at the Service's name one per port
// number of the import (the merge of every cluster's export: the union,
// the oldest export's port where they conflict), at _<port>._<protocol>
// the named port; the target is the Service's name, whose address comes
// in the additional section.
func TestClustersetSRV(t *testing.T) {
	s, addr := start(t, "127.0.0.1")
	snap := snapshot(3)
	old, young := time.Unix(1000, 0), time.Unix(2000, 0)
	export := func(cluster string, at time.Time, ports ...model.ExportPort) {
		snap.Exports = append(snap.Exports, model.ServiceExport{
			Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster}, Namespace: "shop", Service: "cart",
			Type: model.ExportClusterSetIP, ExportedAt: at, Ports: ports,
		})
	}
	export("east", old, model.ExportPort{Name: "http", Protocol: "TCP", Port: 80}, model.ExportPort{Name: "dns", Protocol: "UDP", Port: 53},
		model.ExportPort{Name: "dns-tcp", Protocol: "TCP", Port: 53})
	// West's http is another port number: east's, the older, wins; its
	// grpc port joins the union.
	export("west", young, model.ExportPort{Name: "http", Protocol: "TCP", Port: 8080}, model.ExportPort{Name: "grpc", Protocol: "TCP", Port: 9090})
	s.Update(snap)
	tests := []struct {
		name string
		want []string
	}{
		{"cart.shop.svc.clusterset.local.", []string{"53 cart.shop.svc.clusterset.local.", "80 cart.shop.svc.clusterset.local.", "9090 cart.shop.svc.clusterset.local."}},
		{"_http._tcp.cart.shop.svc.clusterset.local.", []string{"80 cart.shop.svc.clusterset.local."}},
		{"_dns._udp.cart.shop.svc.clusterset.local.", []string{"53 cart.shop.svc.clusterset.local."}},
		{"_grpc._tcp.cart.shop.svc.clusterset.local.", []string{"9090 cart.shop.svc.clusterset.local."}},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			got, _, rcode := srvAnswer(t, proto, addr, tt.name)
			slices.Sort(got)
			if rcode != dns.RcodeSuccess || !slices.Equal(got, tt.want) {
				t.Errorf("%s SRV %s = %s %v, want %v", proto, tt.name, dns.RcodeToString[rcode], got, tt.want)
			}
		}
	}
	for _, tt := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		// The port names exist for SRV only; the names above them exist
		// without records; a port or protocol nobody exports does not.
		{"_http._tcp.cart.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess},
		{"_tcp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess},
		{"_http._udp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError},
		{"_sctp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError},
		{"_ftp._tcp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError},
	} {
		got := query(t, "udp", addr, tt.name, tt.qtype)
		if got.rcode != tt.rcode || len(got.answers) != 0 {
			t.Errorf("%s %s = %+v, want rcode %s and no addresses", dns.TypeToString[tt.qtype], tt.name, got, dns.RcodeToString[tt.rcode])
		}
	}

	// An import of many ports: over UDP the answer is truncated, with TC,
	// and whole over TCP.
	var many []model.ExportPort
	for i := range 200 {
		many = append(many, model.ExportPort{Name: fmt.Sprintf("p%d", i), Protocol: "TCP", Port: int32(1000 + i)})
	}
	snap = snapshot(4)
	export("east", old, many...)
	s.Update(snap)
	if got, tc, _ := srvAnswer(t, "udp", addr, "cart.shop.svc.clusterset.local."); !tc || len(got) >= 200 {
		t.Errorf("200 ports over UDP: %d records, truncated %v; want fewer, truncated", len(got), tc)
	}
	if got, tc, _ := srvAnswer(t, "tcp", addr, "cart.shop.svc.clusterset.local."); tc || len(got) != 200 {
		t.Errorf("200 ports over TCP: %d records, truncated %v; want 200", len(got), tc)
	}
}
