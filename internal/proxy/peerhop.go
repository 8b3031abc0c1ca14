package proxy

// The peer hop, both ends. Sending: a target of another cluster is reached
// through a proxy of that cluster (package peer's client), chosen round
// robin among the peers that cluster's proxies publish (model.Peer).
// Receiving: a request a peer hands over is delivered to the target it
// names only if that target is this cluster's, in the target group or
// export it names, in the configuration this proxy serves now.

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/router"
)

// peerSet is what one snapshot says about peers: the addresses of every
// other cluster's proxies, and what this proxy delivers for them.
type peerSet struct {
	// byCluster lists, for each other cluster, its proxies' addresses.
	byCluster map[string][]string
	// deliver indexes this cluster's deliverable targets by peer group
	// key (peerGroupKey) and address.
	deliver map[string]map[string]deliverable
	// admitted are the clusters admitted to the control plane: peer hops
	// go to and come from these alone.
	admitted map[string]bool
}

// deliverable is how to speak to a target delivered for a peer. An
// export's version comes from the sender (zero here).
type deliverable struct {
	protocol model.Protocol
	version  model.ProtocolVersion
}

// Peer group keys name what a target belongs to in a peer request.
const (
	peerTargetGroup = "TargetGroup/"
	peerExport      = "ServiceExport/"
)

// peerGroupKey is the peer request's name of what t belongs to: its
// target group, or, for an import's target, its cluster's export.
func peerGroupKey(t *router.Target) string {
	g := t.Group()
	if g.Export != nil {
		return peerExport + model.ExportName(t.Cluster, g.Export.Namespace, g.Export.Name)
	}
	return peerTargetGroup + g.Name
}

func compilePeers(snap *model.Snapshot, cluster string) *peerSet {
	ps := &peerSet{byCluster: map[string][]string{}, deliver: map[string]map[string]deliverable{}, admitted: map[string]bool{}}
	for _, c := range snap.Clusters {
		ps.admitted[c.Name] = true
	}
	for _, p := range snap.Peers {
		if p.Owner != cluster && ps.admitted[p.Owner] {
			ps.byCluster[p.Owner] = append(ps.byCluster[p.Owner], p.Address)
		}
	}
	add := func(key, addr string, d deliverable) {
		m := ps.deliver[key]
		if m == nil {
			m = map[string]deliverable{}
			ps.deliver[key] = m
		}
		m[addr] = d
	}
	for i := range snap.TargetGroups {
		tg := &snap.TargetGroups[i]
		if tg.Owner != cluster {
			continue
		}
		for _, t := range tg.Targets {
			if t.Cluster == cluster {
				add(peerTargetGroup+tg.Name, net.JoinHostPort(t.Address, itoa(t.EffectivePort(tg))), deliverable{tg.Protocol, tg.ProtocolVersion})
			}
		}
	}
	for i := range snap.Exports {
		e := &snap.Exports[i]
		if e.Owner != cluster {
			continue
		}
		for _, p := range e.Ports {
			for _, t := range p.Targets {
				add(peerExport+e.Name, net.JoinHostPort(t.Address, itoa(t.Port)), deliverable{protocol: model.ProtocolHTTP})
			}
		}
	}
	return ps
}

// peerAddrs are the addresses of cluster's proxies in sv, none for a
// cluster that is not admitted.
func (sv *served) peerAddrs(cluster string) []string {
	if sv.peers == nil {
		return nil
	}
	return sv.peers.byCluster[cluster]
}

// clusterReachable reports whether cluster's targets can be reached now:
// this proxy's own always; another's while the hop is configured and a
// proxy of that cluster is up (no connection to it failed just now).
func (p *Proxy) clusterReachable(cluster string) bool {
	if cluster == p.cluster {
		return true
	}
	if p.peer == nil {
		return false
	}
	for _, a := range p.served.Load().peerAddrs(cluster) {
		if p.peer.Up(a) {
			return true
		}
	}
	return false
}

// reachable is the local-or-peer decision: it reports whether this proxy
// can send to t, itself (t is in this proxy's cluster) or through the peer
// hop (a proxy of t's cluster is known and the hop is configured).
func (p *Proxy) reachable(t *router.Target) bool {
	return t.Cluster == p.cluster || p.peer != nil && len(p.served.Load().peerAddrs(t.Cluster)) > 0
}

// peerUnavailable logs, with attrs, that no proxy of t's cluster can be
// reached.
func (p *Proxy) peerUnavailable(t *router.Target, attrs ...any) {
	msg := "no proxy of cluster " + t.Cluster + " to hop to"
	if p.peer == nil {
		msg = "target in cluster " + t.Cluster + " needs the peer hop, which this proxy is not configured for"
	}
	p.log.Error(msg, append([]any{"cluster", t.Cluster, "target", t.Addr}, attrs...)...)
}

// peerRoundTrip sends req, bound for t in another cluster, through a proxy
// of t's cluster. The caller's identity is the one this proxy gave the
// request (X-Trellis-Identity, which no client can set).
func (p *Proxy) peerRoundTrip(req *http.Request, t *router.Target) (*http.Response, error) {
	pr, err := p.peerRequest(t, principalOf(req.Header.Get(headerIdentity)))
	if err != nil {
		return nil, &hopUnsent{err}
	}
	var resp *http.Response
	if req.Header.Get("Upgrade") != "" {
		resp, err = p.peerUpgrade(req, pr)
	} else {
		resp, err = p.peer.RoundTrip(req, pr)
	}
	if err == nil {
		if refused := peer.Refused(resp); refused != nil {
			// Not the target's answer: the request reached none.
			return nil, &hopUnsent{refused}
		}
		return resp, nil
	}
	if peer.Unsent(err) {
		return nil, &hopUnsent{err}
	}
	return nil, err
}

// hopUnsent is the error of a request the peer hop delivered to no target:
// no connection to a proxy of the target's cluster, or its refusal. The
// request may go to another pick (retryingTransport); it says nothing
// about the target.
type hopUnsent struct{ err error }

func (e *hopUnsent) Error() string { return "peer hop: " + e.err.Error() }
func (e *hopUnsent) Unwrap() error { return e.err }

// unsentByHop reports whether err is a hopUnsent.
func unsentByHop(err error) bool {
	var u *hopUnsent
	return errors.As(err, &u)
}

// peerRequest says where a request or tunnel for t, in another cluster,
// goes: to one of the proxies of t's cluster, round robin, passing over
// those that just failed (when all did, one anyway).
func (p *Proxy) peerRequest(t *router.Target, identity string) (peer.Request, error) {
	addrs := p.served.Load().peerAddrs(t.Cluster)
	if len(addrs) == 0 {
		return peer.Request{}, &net.OpError{Op: "peer", Net: "tcp", Err: errNoPeer}
	}
	n := int(p.peerNext.Add(1) - 1)
	addr := addrs[n%len(addrs)]
	for i := range addrs {
		if a := addrs[(n+i)%len(addrs)]; p.peer.Up(a) {
			addr = a
			break
		}
	}
	return peer.Request{
		Cluster: t.Cluster, Addr: addr, TargetGroup: peerGroupKey(t), Target: t.Addr,
		Identity: identity, Version: string(t.Group().Version),
	}, nil
}

type peerError string

func (e peerError) Error() string { return string(e) }

const errNoPeer = peerError("no proxy of the target's cluster is known")

// principalOf is the principal in an X-Trellis-Identity value, "" for an
// anonymous caller.
func principalOf(identity string) string {
	rest, ok := strings.CutPrefix(identity, "Principal=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ";")
	return id
}

// PeerHandler serves requests other clusters' proxies hand over (the peer
// listener's handler; see package peer for the checks made before).
func (p *Proxy) PeerHandler() http.Handler {
	return &peer.Server{Deliver: p.deliver, Refused: p.peerRefused, Admitted: func(cluster string) bool {
		ps := p.served.Load().peers
		return ps != nil && ps.admitted[cluster]
	}}
}

func (p *Proxy) peerRefused(cluster, reason string) {
	p.metrics.peerRefused(cluster, reason)
	p.log.Warn("peer request refused", "peer_cluster", cluster, "reason", reason)
}

// deliver serves a request a peer handed over: to the target it names, if
// that is this cluster's target in the group it names now; otherwise 403.
// The identity the peer asserted (checked to be of its own cluster) goes to
// the target in X-Trellis-Identity; the peer's other fields pass as the
// peer sent them, its forwarding headers included.
func (p *Proxy) deliver(w http.ResponseWriter, r *http.Request, d peer.Delivery) {
	sv := p.served.Load()
	var target *router.Target
	if sv.peers != nil {
		if dv, ok := sv.peers.deliver[d.TargetGroup][d.Target]; ok {
			version := dv.version
			if version == "" {
				switch v := model.ProtocolVersion(d.Version); v {
				case model.HTTP1, model.HTTP2, model.GRPC:
					version = v
				default:
					version = model.HTTP1
				}
			}
			target = router.NewTarget(d.Target, p.cluster, d.TargetGroup, dv.protocol, version)
		}
	}
	if target == nil {
		p.peerRefused(d.PeerCluster, "NotDeliverable")
		w.Header().Set(peer.HeaderRefused, "NotDeliverable")
		http.Error(w, "not a target of cluster "+p.cluster+" in "+d.TargetGroup, http.StatusForbidden)
		return
	}
	if d.Tunnel != "" {
		p.deliverTunnel(w, r, d, target)
		return
	}
	r.Header.Set(headerIdentity, deliveredIdentity(d))
	p.metrics.peerDelivered(d.PeerCluster)
	p.delivery.forward(w, r, target)
}

// deliveredIdentity is the X-Trellis-Identity a delivery's target gets: the
// identity the peer asserted (checked to be of its own cluster), or
// anonymous.
func deliveredIdentity(d peer.Delivery) string {
	if d.Identity != "" {
		return "Principal=" + d.Identity + "; Type=Workload"
	}
	return anonymousIdentity
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
