// Package nameserver answers DNS queries for the service networks' names
// with the address of the local proxy, as VPC Lattice's resolver answers a
// service's generated name with the Lattice address: a client anywhere in
// the network resolves `inventory-default.my-hotel.trellis.internal` and
// connects to its own proxy, which routes by the Host header.
//
// It is authoritative for the domain of every service network (edge
// networks have none) and for svc.clusterset.local, and nothing else: a
// generated service name, or the network's own domain, gets the proxy's
// addresses; so does `<service>.<namespace>.svc.clusterset.local` for every
// Service some cluster exports (the Multi-Cluster Services ClusterSetIP
// name, KEP-1645), with SRV records for the import's ports at that name
// and at `_<port>._<protocol>.<service>.<namespace>.svc.clusterset.local`;
// for a Headless Service, each exported pod with a hostname (a
// StatefulSet's) has `<hostname>.<cluster>.<service>.<namespace>.svc.clusterset.local`,
// also the proxy's addresses (the proxy sends it to that pod only: pod
// addresses of one cluster mean nothing in another), and the SRV records
// name each pod. Where the operator declared clusters in one flat pod
// network (model.Cluster.PodNetwork), a proxy of one of them answers a
// Headless Service's names with the pods' own addresses instead, as the
// MCS API has it: a pod's name when its cluster is in the proxy's
// cluster's network, the Service's name when every exporting cluster with
// ready endpoints is (see podAddresses);
// any other name inside those zones gets NXDOMAIN, or an
// empty answer for a name with names below it ("shop.svc.clusterset.local");
// a name outside every zone (cluster.local among them) is REFUSED, since it
// forwards nothing. Like the proxy it is fed snapshots (Update) and swaps
// its table atomically; it must not talk to the control plane itself.
package nameserver

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/miekg/dns"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// TTL is the time to live of the answers, in seconds: names come and go
// with routes, and the answer itself, the proxy's address, hardly changes
// (pods' addresses, answered in a pod network, change with the pods).
const TTL = 30

// Config configures a Server.
type Config struct {
	// Addresses are what every known name resolves to: the proxy's
	// addresses as the clients reach them. IPv4 addresses answer A
	// queries, IPv6 ones AAAA.
	Addresses []netip.Addr
	// Cluster is the cluster the proxy runs in. A Headless Service's
	// names answer the pods' own addresses only where the snapshot's
	// admission of this cluster declares a pod network that the pods'
	// clusters are in; empty, or a cluster without one, never.
	Cluster string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server answers the service networks' names. It is safe for concurrent
// use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	table atomic.Pointer[table]

	mu      sync.Mutex
	servers []*dns.Server

	// build serialises building the table: last is the snapshot it was
	// built from and lapsed the clusters whose leases have lapsed
	// (SetLapsed), whose pods are answered by no pod address.
	build  sync.Mutex
	last   *model.Snapshot
	lapsed map[string]bool
}

// ClustersetZone is the zone of the Multi-Cluster Services names:
// "<service>.<namespace>.svc.clusterset.local".
const ClustersetZone = "svc.clusterset.local."

// table is the names of one snapshot: zones are the network domains and
// ClustersetZone, names every name that resolves, empty the names that
// exist only because names below them do (answered with no records rather
// than NXDOMAIN, so that resolvers minimising their queries, RFC 9156, go
// on to the name below), all lower case and fully qualified.
type table struct {
	zones []string
	names map[string]bool
	empty map[string]bool
	// srv are the SRV records of the clusterset names, by owner name: at a
	// Service's name one per port number of its import, at
	// _<port>._<protocol>.<name> the port of that name and protocol; the
	// target is the Service's name, and for a Headless Service each pod's
	// name too (the Service's only while some endpoint has no hostname).
	srv map[string][]srvRecord
	// direct are the names a Headless Service's pods answer with their
	// own addresses (in the proxy's pod network) rather than the proxy's,
	// and those addresses, sorted and unique.
	direct map[string][]netip.Addr
	// serial is the SOA serial: the snapshot's revision.
	serial uint32
}

// srvRecord is one SRV record's port and target.
type srvRecord struct {
	port   uint16
	target string
}

// New returns a server with no names; it answers once Update gives it some.
func New(cfg Config) (*Server, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("nameserver: no address to answer with")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	s.table.Store(newTable(0))
	return s, nil
}

// Update makes the names of snap's service networks resolve, and only
// those.
func (s *Server) Update(snap *model.Snapshot) {
	s.build.Lock()
	defer s.build.Unlock()
	s.last = snap
	s.update(snap)
}

// SetLapsed replaces the set of clusters whose leases have lapsed, as the
// proxy's lease follow reads it. A lapsed cluster's pods leave the pod
// network's answers at once (its names answer the proxy's addresses,
// whose pick has dropped its targets), and come back with its lease.
func (s *Server) SetLapsed(lapsed map[string]bool) {
	s.build.Lock()
	defer s.build.Unlock()
	if maps.Equal(s.lapsed, lapsed) {
		return
	}
	s.lapsed = maps.Clone(lapsed)
	if s.last != nil {
		s.update(s.last)
	}
}

// update builds snap's table; s.build is held.
func (s *Server) update(snap *model.Snapshot) {
	t := newTable(uint32(snap.Revision))
	inNet := s.podNetwork(snap)
	domains := map[string]string{} // network → fully qualified domain
	for _, n := range snap.Networks {
		if n.Mode != model.ModeServiceNetwork || n.Domain == "" {
			continue
		}
		d := dns.CanonicalName(n.Domain)
		domains[n.Name] = d
		t.zones = append(t.zones, d)
		t.names[d] = true
	}
	for _, svc := range snap.Services {
		d, ok := domains[svc.Network]
		if !ok || svc.DNSName == "" {
			continue
		}
		if name := dns.CanonicalName(svc.DNSName); dns.IsSubDomain(d, name) {
			t.names[name] = true
		}
	}
	t.zones = append(t.zones, ClustersetZone)
	t.empty[ClustersetZone] = true
	served, _ := mcs.Served(&snap.Objects)
	exports := make([]*model.ServiceExport, 0, len(served))
	for _, e := range served {
		if model.ValidLabel(e.Service) && model.ValidLabel(e.Namespace) {
			exports = append(exports, e) // the control plane admits only valid exports
		}
	}
	exported := 0
	for k, group := range mcs.Group(exports) {
		name := dns.CanonicalName(k[1] + "." + k[0] + "." + ClustersetZone)
		t.names[name] = true
		exported++
		t.empty[dns.CanonicalName(k[0]+"."+ClustersetZone)] = true
		// The ports are the import's, as every controller merges them.
		im := mcs.Merge(group)
		var pods []pod
		unnamed := true
		if im.Type == model.ExportHeadless {
			pods, unnamed = t.addPods(group, k[0], k[1], inNet)
			if addrs, ok := podAddresses(group, inNet); ok {
				t.direct[name] = addrs
			}
		}
		for _, p := range im.Ports {
			var records []srvRecord
			if unnamed {
				records = append(records, srvRecord{port: uint16(p.Port), target: name})
			}
			for _, pod := range pods {
				if pod.ports[fmt.Sprint(p.Port)+"/"+p.Protocol] {
					records = append(records, srvRecord{port: uint16(p.Port), target: pod.name})
				}
			}
			for _, r := range records {
				if !slices.Contains(t.srv[name], r) {
					t.srv[name] = append(t.srv[name], r)
				}
			}
			if !model.ValidLabel(p.Name) {
				continue // an unnamed port has no name of its own
			}
			proto := "_" + strings.ToLower(p.Protocol) + "." + name
			t.empty[proto] = true
			t.srv["_"+p.Name+"."+proto] = records
		}
	}
	s.table.Store(t)
	s.log.Info("names updated", "revision", snap.Revision, "zones", len(t.zones), "names", len(t.names), "exported", exported, "pod_addressed", len(t.direct))
}

func newTable(serial uint32) *table {
	return &table{names: map[string]bool{}, empty: map[string]bool{}, srv: map[string][]srvRecord{}, direct: map[string][]netip.Addr{}, serial: serial}
}

// maxPodAddresses bounds the addresses kept for one name: more A records
// than this never fit in a DNS message (64 KiB), which Truncate cuts to
// what fits anyway.
const maxPodAddresses = 4096

// podNetwork returns whether a cluster's pods are in the pod network of
// the proxy's cluster, by the snapshot's admissions: only the operator
// writes them, so no cluster can put itself in another's network.
func (s *Server) podNetwork(snap *model.Snapshot) func(cluster string) bool {
	var own *model.Cluster
	clusters := make(map[string]*model.Cluster, len(snap.Clusters))
	for i := range snap.Clusters {
		c := &snap.Clusters[i]
		clusters[c.Name] = c
		if c.Name == s.cfg.Cluster && s.cfg.Cluster != "" {
			own = c
		}
	}
	return func(cluster string) bool {
		if cluster != s.cfg.Cluster && s.lapsed[cluster] {
			return false
		}
		return model.SamePodNetwork(own, clusters[cluster])
	}
}

// podAddresses returns the ready endpoints' addresses of a Headless
// import's exports, unique and sorted, when every exporting cluster with
// ready endpoints is in the proxy's pod network (inNet), and whether it
// is and there are some. With one cluster outside it the whole name keeps
// the proxy's addresses: a name means one thing, and that cluster's pods
// are reached only through a proxy.
func podAddresses(group []*model.ServiceExport, inNet func(string) bool) ([]netip.Addr, bool) {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, e := range group {
		ready := false
		for _, p := range e.Ports {
			for _, tg := range p.Targets {
				if tg.State != model.TargetActive {
					continue
				}
				a, err := netip.ParseAddr(tg.Address)
				if err != nil || a.Zone() != "" {
					continue // the control plane admits only addresses
				}
				ready = true
				if a = a.Unmap(); !seen[a] && len(out) < maxPodAddresses {
					seen[a] = true
					out = append(out, a)
				}
			}
		}
		if ready && !inNet(e.Owner) {
			return nil, false
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, len(out) > 0
}

// pod is one per-pod name of an import and the ports (number/protocol)
// its cluster's export has.
type pod struct {
	name  string
	ports map[string]bool
}

// addPods makes the per-pod names of a Headless import's exports (its
// pods with hostnames, by cluster) resolve, and the names between them
// and the Service's name exist empty; it returns them, and whether some
// exporting cluster has endpoints without a hostname (or none has any
// hostname), which the SRV records reach by the Service's name. A pod of
// a cluster in the proxy's pod network (inNet) answers with its own
// addresses.
func (t *table) addPods(group []*model.ServiceExport, namespace, service string, inNet func(string) bool) (pods []pod, unnamed bool) {
	svcName := dns.CanonicalName(mcs.ClustersetHost(namespace, service))
	for _, e := range group {
		if e.Type != model.ExportHeadless || len(e.Hostnames) == 0 || !model.ValidClusterName(e.Owner) {
			unnamed = true
			continue
		}
		ports := map[string]bool{}
		named := map[string]bool{}
		for _, h := range e.Hostnames {
			for _, a := range h.Addresses {
				named[a] = true
			}
		}
		for _, p := range e.Ports {
			ports[fmt.Sprint(p.Port)+"/"+p.Protocol] = true
			for _, tg := range p.Targets {
				unnamed = unnamed || tg.State == model.TargetActive && !named[tg.Address]
			}
		}
		// "<cluster>.<service>..." and, for a cluster name with dots,
		// each name between it and the Service's.
		for n := dns.CanonicalName(e.Owner + "." + svcName); n != svcName; {
			t.empty[n] = true
			_, n, _ = strings.Cut(n, ".")
		}
		for _, h := range e.Hostnames {
			if !model.ValidLabel(h.Hostname) {
				continue // the control plane admits only labels
			}
			name := dns.CanonicalName(mcs.PodHost(h.Hostname, e.Owner, namespace, service))
			t.names[name] = true
			if addrs := hostAddresses(h.Addresses); len(addrs) > 0 && inNet(e.Owner) {
				t.direct[name] = addrs
			}
			pods = append(pods, pod{name: name, ports: ports})
		}
	}
	slices.SortFunc(pods, func(x, y pod) int { return strings.Compare(x.name, y.name) })
	return pods, unnamed || len(pods) == 0
}

// hostAddresses parses a pod's addresses (one per family), sorted.
func hostAddresses(list []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Listen serves DNS on addr over UDP and TCP and returns the UDP address it
// listens on (addr may ask for port 0; TCP then listens on the same port).
func (s *Server) Listen(addr string) (string, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return "", fmt.Errorf("nameserver: %w", err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	s.mu.Lock()
	s.servers = append(s.servers, udp, tcp)
	s.mu.Unlock()
	for _, srv := range []*dns.Server{udp, tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("DNS listener stopped", "addr", pc.LocalAddr().String(), "err", err)
			}
		}()
	}
	return pc.LocalAddr().String(), nil
}

// listenBoth listens on addr for UDP and TCP on one port. With port 0 the
// UDP socket picks the port, which another process may hold for TCP: then
// it tries another, a few times.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 9 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// Close stops every listener.
func (s *Server) Close() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	r := s.answer(q)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// An import with many ports makes a long SRV answer: over UDP it is
		// cut to what the client takes, with the TC bit, and the client
		// asks again over TCP.
		size := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil {
			size = max(size, int(o.UDPSize()))
		}
		r.Truncate(size)
	} else {
		// Over TCP too a message has at most 64 KiB: the SRV records of a
		// Headless Service with many pods are cut to what fits.
		r.Truncate(dns.MaxMsgSize)
	}
	w.WriteMsg(r)
}

// answer builds the reply to q from the current table.
func (s *Server) answer(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		return r.SetRcode(q, dns.RcodeNotImplemented)
	}
	r.SetReply(q)
	r.RecursionAvailable = false
	question := q.Question[0]
	name := dns.CanonicalName(question.Name)
	t := s.table.Load()
	zone := t.zoneOf(name)
	if zone == "" || question.Qclass != dns.ClassINET {
		return r.SetRcode(q, dns.RcodeRefused)
	}
	r.Authoritative = true
	srv := t.srv[name]
	if !t.names[name] && len(srv) == 0 {
		if !t.empty[name] {
			r.Rcode = dns.RcodeNameError
		}
		r.Ns = []dns.RR{t.soa(zone)}
		return r
	}
	if t.names[name] {
		r.Answer = s.addresses(t, name, question.Name, question.Qtype)
	}
	if question.Qtype == dns.TypeSRV {
		for _, rec := range srv {
			r.Answer = append(r.Answer, &dns.SRV{
				Hdr:      dns.RR_Header{Name: question.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: TTL},
				Priority: 0, Weight: 100, Port: rec.port, Target: rec.target,
			})
		}
		// The targets' addresses, which the client asks next, as it
		// would get them (a long list is cut by Truncate).
		seen := map[string]bool{}
		for _, rec := range srv {
			if !seen[rec.target] {
				seen[rec.target] = true
				r.Extra = append(r.Extra, s.addresses(t, rec.target, rec.target, dns.TypeA)...)
				r.Extra = append(r.Extra, s.addresses(t, rec.target, rec.target, dns.TypeAAAA)...)
			}
		}
	}
	if len(r.Answer) == 0 {
		// The name exists without records of this type (NODATA).
		r.Ns = []dns.RR{t.soa(zone)}
	}
	return r
}

// addresses are the addresses of type qtype (A or AAAA) that the name
// key (canonical) answers with, as records of owner: the proxy's, or the
// pods' own for a name in t.direct.
func (s *Server) addresses(t *table, key, owner string, qtype uint16) []dns.RR {
	addrs := s.cfg.Addresses
	if d, ok := t.direct[key]; ok {
		addrs = d
	}
	var out []dns.RR
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: owner, Class: dns.ClassINET, Ttl: TTL}
		switch {
		case qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			out = append(out, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			out = append(out, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return out
}

// zoneOf returns the longest zone name is in, or "".
func (t *table) zoneOf(name string) string {
	best := ""
	for _, z := range t.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// soa is the zone's start of authority, which negative answers carry so
// that resolvers cache them for a while (the minimum field).
func (t *table) soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      "ns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  t.serial,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: TTL,
	}
}

// Start serves the service networks' names and the clusterset names on listen, resolving to answer
// (or bind, see Addresses), for a proxy of cluster, and says where on out: the wiring `trellis up`
// and `trellis proxy` share.
func Start(listen, answer, bind, cluster string, log *slog.Logger, out io.Writer) (*Server, error) {
	addrs, err := Addresses(answer, bind)
	if err != nil {
		return nil, fmt.Errorf("DNS: %w", err)
	}
	s, err := New(Config{Addresses: addrs, Cluster: cluster, Logger: log})
	if err != nil {
		return nil, err
	}
	addr, err := s.Listen(listen)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "names: DNS on %s, answering %v for the service networks' names and %s\n", addr, addrs, strings.TrimSuffix(ClustersetZone, "."))
	return s, nil
}

// Addresses returns what names resolve to: answer, a comma-separated list
// of IP addresses, or when it is empty the proxy's bind address, which must
// then be one address rather than every interface.
func Addresses(answer, bind string) ([]netip.Addr, error) {
	if answer != "" {
		return ParseAddresses(answer)
	}
	a, err := netip.ParseAddr(bind)
	if err != nil || a.IsUnspecified() {
		return nil, fmt.Errorf("the proxy binds %q, not one address: say which address names resolve to", bind)
	}
	return []netip.Addr{a.Unmap()}, nil
}

// ParseAddresses parses a comma-separated list of IP addresses, for flags.
func ParseAddresses(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	for f := range strings.SplitSeq(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, a.Unmap())
	}
	if len(out) == 0 {
		return nil, errors.New("no address")
	}
	return out, nil
}
