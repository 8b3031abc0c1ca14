package proxy

// The peer hop, both ends. Sending: a target of another cluster is reached
// through a proxy of that cluster (package peer's client), chosen round
// robin among the peers that cluster's proxies publish (model.Peer).
// Receiving: a request a peer hands over is delivered to the target it
// names only if that target is this cluster's, in the target group or
// export it names, the service it names routes there, and that service's
// auth policies allow it, all in the configuration this proxy serves now.

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// peerSet is what one snapshot says about peers: the addresses of every
// other cluster's proxies, and what this proxy delivers for them.
type peerSet struct {
	// byCluster lists, for each other cluster, its proxies' addresses.
	byCluster map[string][]string
	// deliver holds this cluster's deliverable targets by peer group key
	// (peerGroupKey).
	deliver map[string]*deliverSet
	// admitted are the clusters admitted to the control plane: peer hops
	// go to and come from these alone.
	admitted map[string]bool
	// fromGroups and fromExports are what is kept of the target groups
	// and exports of this cluster deliver was made from, for the next
	// compilePeers.
	fromGroups  map[string]model.Seen[model.TargetGroup, *model.TargetGroup]
	fromExports map[string]model.Seen[model.ServiceExport, *model.ServiceExport]
	// groupList and exportList are the snapshot's lists they were made
	// from.
	groupList  []model.TargetGroup
	exportList []model.ServiceExport
	// exportNamespaces are the namespaces this cluster could export from
	// when they were made (model.Cluster.ExportNamespaces).
	exportNamespaces []string
}

// deliverable is how to speak to a target delivered for a peer. An
// export's version comes from the sender (zero here).
type deliverable struct {
	protocol model.Protocol
	version  model.ProtocolVersion
}

// deliverSet is what this proxy delivers of one target group or export:
// the object's own lists of targets, shared with the snapshot it came from.
// A proxy holds one per target group, so a set of at most
// deliverScanTargets targets makes no index of their addresses: a delivery
// looks through them. A larger one has an index, so that a peer's request
// costs the same whatever the size of the group it names.
type deliverSet struct {
	dv deliverable
	// targets are a target group's targets, port its port and cluster
	// this proxy's: those of cluster are delivered. ports are an
	// export's: all their targets are.
	targets []model.Target
	port    int32
	cluster string
	ports   []model.ExportPort
	// index holds the addresses of a set of more than
	// deliverScanTargets targets.
	index map[string]bool
}

// deliverScanTargets is the most targets a deliver set looks through
// rather than indexes.
const deliverScanTargets = 32

// indexed returns ds, with an index of its addresses if it has more than
// deliverScanTargets targets; nil for a set with no target.
func (ds *deliverSet) indexed() *deliverSet {
	n := 0
	for _, t := range ds.targets {
		if t.Cluster == ds.cluster {
			n++
		}
	}
	for _, p := range ds.ports {
		n += len(p.Targets)
	}
	if n == 0 {
		return nil
	}
	if n > deliverScanTargets {
		ds.index = make(map[string]bool, n)
		for _, t := range ds.targets {
			if t.Cluster == ds.cluster {
				ds.index[net.JoinHostPort(t.Address, itoa(t.EffectivePort(&model.TargetGroup{Port: ds.port})))] = true
			}
		}
		for _, p := range ds.ports {
			for _, t := range p.Targets {
				ds.index[net.JoinHostPort(t.Address, itoa(t.Port))] = true
			}
		}
	}
	return ds
}

// target reports whether addr ("host:port") is one of the set's targets.
func (ds *deliverSet) target(addr string) bool {
	if ds == nil {
		return false
	}
	if ds.index != nil {
		return ds.index[addr]
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return false
	}
	for _, t := range ds.targets {
		tp := t.Port
		if tp == 0 {
			tp = ds.port // model.Target.EffectivePort
		}
		if t.Cluster == ds.cluster && t.Address == host && int64(tp) == int64(port) {
			return true
		}
	}
	for _, ep := range ds.ports {
		for _, t := range ep.Targets {
			if t.Address == host && int64(t.Port) == int64(port) {
				return true
			}
		}
	}
	return false
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

// syncFrom brings from, this proxy's objects of one kind by name, up to
// list, of which own says which are this proxy's to deliver, and sets
// changed[prefix+name] to the targets (deliver entries) of each object
// added or changed since, and to nil for each gone. same says list is the
// one from was last brought up to: nothing to do but count.
func syncFrom[T any, P interface {
	*T
	model.Object
}](list []T, same bool, from map[string]model.Seen[T, P], prefix string, changed map[string]*deliverSet,
	own func(P) bool, targets func(P) *deliverSet) {
	n := len(from)
	if !same {
		n = 0
		for i := range list {
			v := P(&list[i])
			if !own(v) {
				continue
			}
			n++
			name := v.ObjectMeta().Name
			if old, ok := from[name]; ok && old.Unchanged(&list[i]) {
				continue
			}
			from[name] = model.See[T, P](&list[i])
			changed[prefix+name] = targets(v)
		}
	}
	if n == len(from) {
		return
	}
	in := map[string]bool{}
	for i := range list {
		if v := P(&list[i]); own(v) {
			in[v.ObjectMeta().Name] = true
		}
	}
	for name := range from {
		if !in[name] {
			delete(from, name)
			changed[prefix+name] = nil
		}
	}
}

// compilePeers makes the peer set of snap for a proxy of cluster. What
// this proxy delivers it takes from prev for the target groups and exports
// unchanged since (model.Unchanged), and makes again only for the others,
// so that a change of one target group costs about what that group does.
// The set prev serves (nil at first) is not modified.
func compilePeers(snap *model.Snapshot, cluster string, prev *peerSet) *peerSet {
	ps := &peerSet{byCluster: map[string][]string{}, admitted: map[string]bool{}}
	for _, c := range snap.Clusters {
		ps.admitted[c.Name] = true
	}
	for _, p := range snap.Peers {
		// A cluster's first model.MaxClusterPeers by name (the snapshot's
		// order): the control plane refuses more, and a store written
		// before it did must not have this proxy dial and probe them all.
		if p.Owner != cluster && ps.admitted[p.Owner] && len(ps.byCluster[p.Owner]) < model.MaxClusterPeers {
			ps.byCluster[p.Owner] = append(ps.byCluster[p.Owner], p.Address)
		}
	}
	if prev == nil {
		prev = &peerSet{}
	}
	// changed holds the deliver entries made again, nil for those gone.
	// The from maps pass from prev to ps: only compilePeers reads them.
	changed := map[string]*deliverSet{}
	ps.fromGroups, ps.fromExports = prev.fromGroups, prev.fromExports
	if ps.fromGroups == nil {
		ps.fromGroups, ps.fromExports = map[string]model.Seen[model.TargetGroup, *model.TargetGroup]{}, map[string]model.Seen[model.ServiceExport, *model.ServiceExport]{}
	}
	// The namespaces this cluster may export from (mcs.Served): an export
	// outside them is not delivered. When they change, every export is
	// judged again.
	var self *model.Cluster
	for i := range snap.Clusters {
		if snap.Clusters[i].Name == cluster {
			self = &snap.Clusters[i]
		}
	}
	exportable := func(e *model.ServiceExport) bool { return self == nil || self.AllowsExport(e.Namespace) }
	if self != nil {
		ps.exportNamespaces = self.ExportNamespaces
	}
	sameNamespaces := slices.Equal(prev.exportNamespaces, ps.exportNamespaces)
	if !sameNamespaces {
		for name := range ps.fromExports {
			changed[peerExport+name] = nil
		}
		ps.fromExports = map[string]model.Seen[model.ServiceExport, *model.ServiceExport]{}
	}
	// Lists the last snapshot had too are unchanged (model.SameList).
	sameGroups, sameExports := model.SameList(prev.groupList, snap.TargetGroups), sameNamespaces && model.SameList(prev.exportList, snap.Exports)
	ps.groupList, ps.exportList = snap.TargetGroups, snap.Exports
	syncFrom(snap.TargetGroups, sameGroups, ps.fromGroups, peerTargetGroup, changed,
		func(tg *model.TargetGroup) bool { return tg.Owner == cluster },
		func(tg *model.TargetGroup) *deliverSet {
			return (&deliverSet{dv: deliverable{tg.Protocol, tg.ProtocolVersion}, targets: tg.Targets, port: tg.Port, cluster: cluster}).indexed()
		})
	syncFrom(snap.Exports, sameExports, ps.fromExports, peerExport, changed,
		func(e *model.ServiceExport) bool { return e.Owner == cluster && exportable(e) },
		func(e *model.ServiceExport) *deliverSet {
			return (&deliverSet{dv: deliverable{protocol: model.ProtocolHTTP}, ports: e.Ports}).indexed()
		})
	ps.deliver = prev.deliver
	if len(changed) > 0 || ps.deliver == nil {
		ps.deliver = maps.Clone(prev.deliver)
		if ps.deliver == nil {
			ps.deliver = map[string]*deliverSet{}
		}
		for key, m := range changed {
			if m == nil {
				delete(ps.deliver, key)
			} else {
				ps.deliver[key] = m
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
// this proxy's own always (whatever its own lease); another's while the
// hop is configured, its lease has not lapsed (SetLapsed) and a proxy of
// that cluster is up (no connection to it failed just now).
func (p *Proxy) clusterReachable(cluster string) bool {
	if cluster == p.cluster {
		return true
	}
	if p.peer == nil {
		return false
	}
	if l := p.lapsed.Load(); l != nil && (*l)[cluster] {
		return false
	}
	for _, a := range p.served.Load().peerAddrs(cluster) {
		if p.peer.Up(a) {
			return true
		}
	}
	return false
}

// SetLapsed replaces the set of clusters whose leases have lapsed, as the
// control plane last said: their targets leave every pick at once, as an
// unreachable cluster's do, and come back when the set no longer names
// them. The caller keeps the last set while the control plane cannot be
// reached (nothing lapses for want of news); before the first call no
// cluster has lapsed. The proxy's own cluster never leaves its picks.
func (p *Proxy) SetLapsed(clusters map[string]bool) {
	m := make(map[string]bool, len(clusters))
	for c, lapsed := range clusters {
		if lapsed && c != p.cluster {
			m[c] = true
		}
	}
	p.lapsed.Store(&m)
}

// Lapsed reports whether cluster's lease has lapsed, as SetLapsed last said.
func (p *Proxy) Lapsed(cluster string) bool {
	l := p.lapsed.Load()
	return l != nil && (*l)[cluster]
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
	return p.peerSend(req, t, exchangeOf(req))
}

// peerSend is peerRoundTrip for req of exchange x (nil: none).
func (p *Proxy) peerSend(req *http.Request, t *router.Target, x *exchange) (*http.Response, error) {
	if p.peer == nil {
		return nil, errNoPeer
	}
	pr, err := p.peerRequest(t, principalOf(req.Header.Get(headerIdentity)))
	if err != nil {
		return nil, &hopUnsent{err}
	}
	// The receiver checks that the route's service routes to the target
	// group, and judges the request by that service's policies itself.
	if x != nil && x.route != nil {
		pr.Service, pr.Port = x.route.Service, x.port
		if svc := x.served.table.Service(x.route.Service); svc != nil {
			pr.Network = svc.Network
		}
	}
	var resp *http.Response
	if req.Header.Get("Upgrade") != "" {
		resp, err = p.peerUpgrade(req, pr)
	} else {
		resp, err = p.peer.RoundTrip(req, pr)
	}
	code := 0
	if err == nil {
		code = resp.StatusCode
	}
	p.metrics.hop(hopSent, p.cluster, t.Cluster, code)
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
// that is this cluster's target in the group it names now, the service it
// names routes to that group, and the service's policies allow the
// request; otherwise 403.
// The identity the peer asserted (checked to be of its own cluster) goes to
// the target in X-Trellis-Identity, and the other identity fields are the
// receiver's (deliveredFields); the peer's other fields pass as the peer
// sent them, its forwarding headers included.
func (p *Proxy) deliver(w http.ResponseWriter, r *http.Request, d peer.Delivery) {
	sv := p.served.Load()
	var target *router.Target
	if sv.peers != nil {
		if ds := sv.peers.deliver[d.TargetGroup]; ds.target(d.Target) {
			dv := ds.dv
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
	if target != nil && d.Tunnel != "" {
		p.deliverTunnel(w, r, d, target)
		return
	}
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	var body *countedBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countedBody{ReadCloser: r.Body}
		if idle := p.limits.bodyIdle; idle > 0 {
			// As for a client of the proxy's own listeners: a peer that
			// stalls mid-body holds the stream, its goroutine and a
			// target connection no longer than the body idle timeout.
			body.idle, body.rc = idle, http.NewResponseController(w)
		}
		r.Body = body
	}
	// refusal is the access log's failure reason when the request is not
	// delivered, deniedBy the policy level that denied it.
	var refusal accesslog.FailureReason
	var deniedBy string
	svc, port := (*router.Service)(nil), int32(0)
	switch {
	case target == nil:
		p.peerRefused(d.PeerCluster, peerNotDeliverable)
		rec.Header().Set(peer.HeaderRefused, peerNotDeliverable)
		http.Error(rec, "not a target of cluster "+p.cluster+" in "+d.TargetGroup, http.StatusForbidden)
		refusal = accesslog.PeerNotDeliverable
	default:
		if svc, port = p.routedOrRefused(rec, sv, d); svc == nil {
			refusal = accesslog.PeerNotDeliverable
			break
		}
		deliveredFields(r.Header, d, svc)
		var allowed bool
		if deniedBy, allowed = p.authorizeDelivery(rec, r, d, svc, port); !allowed {
			refusal = accesslog.ClientAccessDenied
			if deniedBy == "" {
				refusal = accesslog.MalformedRequest // an ambiguous path
			}
			break
		}
		r.Header.Set(headerIdentity, deliveredIdentity(d))
		p.metrics.peerDelivered(d.PeerCluster)
		p.delivery.forward(rec, r, target)
	}
	code := cmp.Or(rec.status, http.StatusOK)
	p.metrics.hop(hopReceived, d.PeerCluster, p.cluster, code)
	p.logDelivery(r, d, start, rec, body, delivered{svc: svc, port: port, refusal: refusal, deniedBy: deniedBy})
}

// countedBody counts the bytes read from a request body, for the access
// log; the transport reads it on a goroutine of its own. With idle set,
// each read must return within it (the stream's read deadline, through
// rc), else it fails as a timeout (408, RequestBodyTimeout). A read's
// failure is the peer's (clientBodyError).
type countedBody struct {
	io.ReadCloser
	n    atomic.Int64
	idle time.Duration
	rc   *http.ResponseController
}

func (b *countedBody) Read(p []byte) (int, error) {
	if b.idle > 0 {
		b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		// The peer's fault (stalled, cut short), never the target's: it
		// must not count against the target's health.
		err = &clientBodyError{err}
	}
	return n, err
}

// delivered is what deliver decided about a request a peer handed over:
// the service it was routed for (nil if none here routes it), the listener
// port, and, when it was refused, the access log's failure reason and the
// policy level that denied it.
type delivered struct {
	svc      *router.Service
	port     int32
	refusal  accesslog.FailureReason
	deniedBy string
}

// logDelivery writes the access-log entry of a request a peer handed
// over: its source cluster is the sending proxy's (as its certificate
// names it), its destination this proxy's, its source address the sending
// proxy's and its target group the peer request's.
func (p *Proxy) logDelivery(r *http.Request, d peer.Delivery, start time.Time, rec *recorder, body *countedBody, how delivered) {
	if p.accessLog == nil {
		return
	}
	e := accesslog.Entry{
		StartTime: start, Duration: time.Since(start),
		TargetGroup:   d.TargetGroup,
		SourceCluster: d.PeerCluster, DestinationCluster: p.cluster,
		SourceIPPort: r.RemoteAddr, TargetIPPort: d.Target,
		Method: r.Method, Path: r.URL.EscapedPath(), Protocol: r.Proto, ResponseCode: cmp.Or(rec.status, http.StatusOK),
		BytesSent: rec.bytes, UserAgent: r.UserAgent(), Host: r.Host, RequestID: r.Header.Get(headerRequestID),
		FailureReason: how.refusal, AuthDeniedReason: how.deniedBy,
	}
	if how.svc != nil {
		e.ServiceNetwork, e.Service, e.ListenerPort = how.svc.Network, how.svc.Name, how.port
	}
	e.Destination, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if body != nil {
		e.BytesReceived = body.n.Load()
	}
	p.accessLog.Log(&e)
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

// authorizeConnect judges a passthrough tunnel a peer handed over by the
// auth policies of svc and its network (trellis:Connect, as a local
// passthrough connection is judged), the caller being the identity the
// peer asserted (of its own cluster) or anonymous, the source cluster the
// one its certificate names; it answers 403 when they deny it.
func (p *Proxy) authorizeConnect(w http.ResponseWriter, d peer.Delivery, svc *router.Service, port int32) bool {
	if svc.Auth == nil {
		return true
	}
	principal := auth.Principal{Type: auth.PrincipalAnonymous}
	if d.Identity != "" {
		principal = auth.Principal{Type: auth.PrincipalWorkload, ID: d.Identity}
	}
	req := &auth.Request{Action: auth.ActionConnect, Principal: principal, Port: int(port), SourceCluster: d.PeerCluster}
	res := svc.Auth.Authorize(req)
	if res.Allowed {
		return true
	}
	p.metrics.peerRefused(d.PeerCluster, peerPolicyDenied)
	p.log.Warn("peer tunnel denied by auth policy", "peer_cluster", d.PeerCluster, "service", svc.Name,
		"network", svc.Network, "denied_by", res.DeniedBy, "principal", principal.ID)
	http.Error(w, res.Message(req), http.StatusForbidden)
	return false
}

// deliveredFields makes h, a delivery's header, carry only the identity
// fields the receiver can vouch for: the sending proxy is trusted for what
// its certificate names, not for what it writes. Every field that starts
// with x-trellis- or x-amzn-lattice- (in any case, '_' for '-') goes but
// one X-Trellis-Request-Id and an X-Trellis-Target that names the service
// and network the receiver checked (routedFor); X-Trellis-Network is the
// certificate's cluster and the service's network, and deliver sets
// X-Trellis-Identity. An honest sender's fields arrive as it wrote them.
func deliveredFields(h http.Header, d peer.Delivery, svc *router.Service) {
	for k, vs := range h {
		if !hasFieldPrefix(k, trellisPrefix) && !hasFieldPrefix(k, latticePrefix) {
			continue
		}
		switch {
		case k == headerIdentity: // deliver sets it
			continue
		case k == headerRequestID && len(vs) == 1 && vs[0] != "":
			continue
		case k == headerTarget && len(vs) == 1 && deliveredTarget(vs[0], svc):
			continue
		case k == headerNetwork && len(vs) == 1 && deliveredNetwork(vs[0], d.PeerCluster, svc.Network):
			continue
		}
		delete(h, k)
	}
	if _, ok := h[headerTarget]; !ok {
		_, group, _ := strings.Cut(d.TargetGroup, "/")
		h[headerTarget] = []string{"Service=" + svc.Name + "; Network=" + svc.Network + "; TargetGroup=" + group}
	}
	if _, ok := h[headerNetwork]; !ok {
		h[headerNetwork] = []string{"SourceCluster=" + d.PeerCluster + "; Network=" + svc.Network}
	}
}

// deliveredTarget reports whether v is "Service=<svc>; Network=<its
// network>; TargetGroup=<a name>".
func deliveredTarget(v string, svc *router.Service) bool {
	rest, ok := cutPrefixes(v, "Service=", svc.Name, "; Network=", svc.Network, "; TargetGroup=")
	return ok && rest != "" && !strings.ContainsAny(rest, "; ,\t")
}

// deliveredNetwork reports whether v is "SourceCluster=<cluster>;
// Network=<network>".
func deliveredNetwork(v, cluster, network string) bool {
	rest, ok := cutPrefixes(v, "SourceCluster=", cluster, "; Network=", network)
	return ok && rest == ""
}

// cutPrefixes cuts each of prefixes from s in turn, reporting whether s
// starts with all of them.
func cutPrefixes(s string, prefixes ...string) (string, bool) {
	for _, p := range prefixes {
		var ok bool
		if s, ok = strings.CutPrefix(s, p); !ok {
			return "", false
		}
	}
	return s, true
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// Outcomes of trellis_peer_requests_total for requests this proxy refuses
// after package peer's checks.
const (
	// peerNotDeliverable: the target is not this cluster's in the group
	// named.
	peerNotDeliverable = "NotDeliverable"
	// peerNotRouted: the service named does not exist here, is not in the
	// network named, has no listener on the port named, or does not route
	// to the group named.
	peerNotRouted = "NotRouted"
	// peerPolicyDenied: the service's or its network's auth policy refused
	// the request.
	peerPolicyDenied = "PolicyDenied"
)

// routedOrRefused is routedFor, answering the peer 403 (NotRouted) and
// counting the refusal when the service named does not route to the group.
func (p *Proxy) routedOrRefused(w http.ResponseWriter, sv *served, d peer.Delivery) (*router.Service, int32) {
	svc, port := routedFor(sv, d, p.cluster)
	if svc == nil {
		p.peerRefused(d.PeerCluster, peerNotRouted)
		w.Header().Set(peer.HeaderRefused, peerNotRouted)
		http.Error(w, fmt.Sprintf("service %q of network %q on port %q does not route to %s", d.Service, d.Network, d.Port, d.TargetGroup), http.StatusForbidden)
	}
	return svc, port
}

// routedFor returns the service the peer says the request was routed for,
// and the listener port, when sv (this proxy's configuration now) agrees
// that the service is in the network named, listens on the port named and
// forwards to the target group (or this cluster's export) named; otherwise
// nil. A target group is this cluster's, so the service must be too: only
// its own services, judged by its own policies, send to its target groups
// (any cluster's service may send to its exports, which it published).
func routedFor(sv *served, d peer.Delivery, cluster string) (*router.Service, int32) {
	svc := sv.table.Service(d.Service)
	if svc == nil || svc.Network != d.Network {
		return nil, 0
	}
	port, err := strconv.ParseInt(d.Port, 10, 32)
	if err != nil || !slices.Contains(svc.Ports, int32(port)) {
		return nil, 0
	}
	switch {
	case strings.HasPrefix(d.TargetGroup, peerTargetGroup):
		if svc.Owner == cluster && slices.Contains(svc.TargetGroups, d.TargetGroup[len(peerTargetGroup):]) {
			return svc, int32(port)
		}
	case strings.HasPrefix(d.TargetGroup, peerExport):
		for _, ref := range svc.Imports {
			if peerExport+model.ExportName(cluster, ref.Namespace, ref.Name) == d.TargetGroup {
				return svc, int32(port)
			}
		}
	}
	return nil, 0
}

// authorizeDelivery judges a delivery by the auth policies of svc and its
// network, as this proxy's configuration has them, and answers 403 when
// they deny it, and 400 (deniedBy "") when the path is ambiguous (see
// ambiguousPath). The caller is the identity the peer asserted (package peer
// checked it is of the peer's cluster), or anonymous; the source cluster is
// the one the peer's certificate names; the request is the one delivered.
// The source address is absent: the sender's word on its client's address
// cannot be checked, and an address in another cluster's network means
// nothing here (the sender judges it absent too, see authorize).
func (p *Proxy) authorizeDelivery(w http.ResponseWriter, r *http.Request, d peer.Delivery, svc *router.Service, port int32) (deniedBy string, allowed bool) {
	if svc.Auth == nil {
		return "", true
	}
	if ambiguousPath(r.URL.Path) {
		// The sending proxy refuses such paths from its clients; a peer
		// that sends one anyway is not judged on a reading the target may
		// not share.
		p.metrics.peerRefused(d.PeerCluster, peerPolicyDenied)
		p.log.Warn("peer request refused: ambiguous path", "peer_cluster", d.PeerCluster, "service", svc.Name, "path", r.URL.Path)
		http.Error(w, "ambiguous request path", http.StatusBadRequest)
		return "", false
	}
	principal := auth.Principal{Type: auth.PrincipalAnonymous}
	if d.Identity != "" {
		principal = auth.Principal{Type: auth.PrincipalWorkload, ID: d.Identity}
	}
	var query url.Values
	req := &auth.Request{
		Action:    auth.ActionInvoke,
		Principal: principal,
		Port:      int(port),
		Method:    r.Method,
		Path:      authPath(r.URL.Path),
		Header:    r.Header.Values,
		Query: func(key string) []string {
			if query == nil {
				query, _ = url.ParseQuery(r.URL.RawQuery)
			}
			return query[key]
		},
		SourceCluster: d.PeerCluster,
	}
	res := svc.Auth.Authorize(req)
	if res.Allowed {
		return "", true
	}
	p.metrics.peerRefused(d.PeerCluster, peerPolicyDenied)
	p.log.Warn("peer request denied by auth policy", "peer_cluster", d.PeerCluster, "service", svc.Name,
		"network", svc.Network, "denied_by", res.DeniedBy, "principal", principal.ID, "method", r.Method, "path", r.URL.Path)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, res.Message(req)+"\n")
	return res.DeniedBy, false
}
