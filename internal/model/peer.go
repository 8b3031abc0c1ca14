package model

import (
	"net/netip"
	"strings"
)

// Peer is one proxy's address for peer hops: where proxies of other
// clusters send requests for this cluster's targets (package peer). A
// proxy publishes it when it starts serving peers and removes it when it
// stops; several proxies of one cluster share the load. Its owner is the
// proxy's cluster.
type Peer struct {
	Meta
	// Address is host:port with a literal IP.
	Address string `json:"address"`
}

// MaxClusterPeers is the most Peers one cluster may publish (the control
// plane refuses more; a proxy uses the first so many by name). Every proxy
// of every other cluster dials them for its requests and probes each every
// 5 s (its peer reports), so a cluster's Peers bound what it makes the
// others' proxies do; 256 is also the most peers a report carries.
const MaxClusterPeers = 256

// PeerName is the name of proxy id's Peer in cluster.
func PeerName(cluster, id string) string { return id + "." + cluster }

// ObjectMeta implements Object.
func (p *Peer) ObjectMeta() *Meta { return &p.Meta }

// ObjectKind implements Object.
func (*Peer) ObjectKind() Kind { return KindPeer }

// Validate checks the name ends with the owner and the address is a
// literal IP and port.
func (p *Peer) Validate() error {
	var f fieldErrs
	validateMeta(&f, &p.Meta)
	if p.Owner != "" && !strings.HasSuffix(p.Name, "."+p.Owner) {
		f.add("name", "must be <proxy>.%s, ending with the owner", p.Owner)
	}
	if ap, err := netip.ParseAddrPort(p.Address); err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() {
		f.add("address", "%q is not an IP address and port", p.Address)
	}
	return f.list.err()
}
