package conformance_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// serviceNetworkAddress is where `trellis up` binds the listeners of
// service networks (its --bind), inside the cluster's namespace.
var serviceNetworkAddress = netip.MustParseAddr("198.18.254.1")

// serviceNetworkZone is the DNS zone of every service network: a `trellis`
// Gateway's address is its domain, <gateway>.trellis.internal, and its
// services are named under it.
const serviceNetworkZone = "trellis.internal."

// resolveServiceNetworks makes every name in serviceNetworkZone resolve to
// serviceNetworkAddress in this process, as Trellis's DNS server does for
// clients pointed at it (docs/reference/dns.md). The suite dials a Gateway at its
// status address, which for a service network is a host name. Every lookup
// of the process goes through net.DefaultResolver (the suite's HTTP, TLS,
// gRPC and WebSocket clients alike), so that resolver is pointed at a DNS
// server of the process's own, which answers the zone and nothing else. It
// is stopped when the test ends.
func resolveServiceNetworks(t *testing.T) {
	t.Helper()
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = serveZone(t, zoneHandler{zone: serviceNetworkZone, addr: serviceNetworkAddress})
}

// serveZone starts a DNS server for h on loopback, UDP and TCP, until the
// test ends, and returns a net.Resolver Dial function that reaches it
// whatever name server the resolver meant.
func serveZone(t *testing.T, h dns.Handler) func(ctx context.Context, network, address string) (net.Conn, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("DNS stand-in: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatalf("DNS stand-in: %v", err)
	}
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	for _, s := range servers {
		go s.ActivateAndServe()
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	udp, tcp := pc.LocalAddr().String(), ln.Addr().String()
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		to := udp
		if strings.HasPrefix(network, "tcp") {
			to = tcp
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}
}

// zoneHandler answers A queries for names in zone with addr, other queries
// in zone with no records, and every name outside it with NXDOMAIN.
type zoneHandler struct {
	zone string
	addr netip.Addr
}

func (h zoneHandler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, q := range req.Question {
		if !dns.IsSubDomain(h.zone, strings.ToLower(q.Name)) {
			m.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A:   h.addr.AsSlice(),
			})
		}
	}
	w.WriteMsg(m)
}

func TestZoneHandler(t *testing.T) {
	r := &net.Resolver{PreferGo: true, Dial: serveZone(t, zoneHandler{zone: serviceNetworkZone, addr: serviceNetworkAddress})}
	ctx := context.Background()
	for _, name := range []string{"same-namespace.trellis.internal", "Web-NS.Net.Trellis.Internal", "trellis.internal"} {
		addrs, err := r.LookupHost(ctx, name)
		if err != nil || len(addrs) != 1 || addrs[0] != serviceNetworkAddress.String() {
			t.Errorf("LookupHost(%q) = %v, %v; want [%s]", name, addrs, err, serviceNetworkAddress)
		}
	}
	for _, name := range []string{"example.com", "trellis.internal.example.com"} {
		var dnsErr *net.DNSError
		if addrs, err := r.LookupHost(ctx, name); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("LookupHost(%q) = %v, %v; want not found", name, addrs, err)
		}
	}
}
