package backend

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// startDNS stands in for CoreDNS: it answers on UDP port 53 of the pod IP
// for the zones that the Corefile (the file after -conf, default
// ./Corefile) serves with the whoami plugin. Every other name is refused:
// the stand-in never forwards a query anywhere, whatever the Corefile says.
// Without a Corefile it answers whoami for every name.
func startDNS(in *Instance, c Container) error {
	var zones []string
	if conf, ok := c.Files[corefilePath(c)]; ok {
		zones = whoamiZones(conf)
	} else {
		zones = []string{"."}
	}
	conn, err := c.Network.ListenPacket("udp", c.addr("53"))
	if err != nil {
		return err
	}
	srv := &dns.Server{PacketConn: conn, Handler: whoami{c: c, zones: zones}}
	in.serve(func() { srv.ActivateAndServe() }, func() { srv.Shutdown() })
	c.printf(".:53 on %s (whoami for %s)\n", c.IP, strings.Join(zones, " "))
	return nil
}

// corefilePath is the -conf argument of the container, or CoreDNS's
// default, the Corefile in its working directory "/".
func corefilePath(c Container) string {
	for i, a := range c.Args {
		switch {
		case (a == "-conf" || a == "--conf") && i+1 < len(c.Args):
			return c.Args[i+1]
		case strings.HasPrefix(a, "-conf="), strings.HasPrefix(a, "--conf="):
			return a[strings.Index(a, "=")+1:]
		}
	}
	return "/Corefile"
}

// whoamiZones returns the zones of the server blocks that use the whoami
// plugin, e.g. "foo.bar.com." for "foo.bar.com:53 { whoami }".
func whoamiZones(corefile []byte) []string {
	var zones, block []string
	depth := 0
	lines := bufio.NewScanner(bytes.NewReader(corefile))
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if depth == 0 && strings.HasSuffix(line, "{") {
			block = nil
			for _, key := range strings.Fields(strings.TrimSuffix(line, "{")) {
				block = append(block, zoneOf(key))
			}
		}
		if depth == 1 && strings.Fields(line)[0] == "whoami" {
			zones = append(zones, block...)
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
	}
	return zones
}

// zoneOf turns a server block key ("dns://foo.bar.com:53") into a zone.
func zoneOf(key string) string {
	key = strings.TrimPrefix(key, "dns://")
	if h, _, err := net.SplitHostPort(key); err == nil {
		key = h
	} else if strings.HasPrefix(key, ":") {
		key = "."
	}
	return dns.Fqdn(key)
}

// whoami answers like CoreDNS's whoami plugin: an empty answer section, and
// in the additional section the client's address (A or AAAA) and an SRV
// record with its port and transport.
type whoami struct {
	c     Container
	zones []string
}

func (h whoami) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	if len(r.Question) != 1 || !h.serves(r.Question[0].Name) {
		m.SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	h.c.printf("[INFO] %s - %d \"%s IN %s udp\" NOERROR\n", w.RemoteAddr(), r.Id, dns.TypeToString[q.Qtype], q.Name)
	m.SetReply(r)
	m.Authoritative = true
	host, port, _ := net.SplitHostPort(w.RemoteAddr().String())
	ip := net.ParseIP(host)
	if ip4 := ip.To4(); ip4 != nil {
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: q.Qclass}, A: ip4})
	} else {
		m.Extra = append(m.Extra, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: q.Qclass}, AAAA: ip})
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	srvName := "_udp." + q.Name
	if q.Name == "." {
		srvName = "_udp."
	}
	m.Extra = append(m.Extra, &dns.SRV{Hdr: dns.RR_Header{Name: srvName, Rrtype: dns.TypeSRV, Class: q.Qclass}, Port: uint16(p), Target: "."})
	w.WriteMsg(m)
}

// serves reports whether name is in one of the whoami zones.
func (h whoami) serves(name string) bool {
	for _, z := range h.zones {
		if dns.IsSubDomain(z, name) {
			return true
		}
	}
	return false
}
