// Package router compiles a model.Snapshot into an immutable route table and
// matches requests against it.
//
// It owns host, path, method, header and query matching, the Gateway API
// precedence between rules, and the compiled form of each rule's action
// (weighted backends, target groups, targets). A Compiler does all the work
// once per config version; Table.Match only looks up and allocates nothing.
//
// It must not do I/O, forward requests, open listeners or mutate the model:
// those belong to package proxy. A Table is shared by every request in flight
// and is never changed once compiled, apart from the balancers' atomic
// counters. Target health is package health's: Group.Pick reads it.
package router

import (
	"cmp"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/balancer"
	"trellis.dev/trellis/internal/proxy/health"
)

// Bind is where a listener is served: an IP address and a port. Addr is
// an edge network's address (model.ServiceNetwork.Addresses), or "" for the
// proxy's own bind address, where every other network is served.
type Bind struct {
	Addr string
	Port int32
}

// String returns "addr:port", or ":port" for the proxy's own bind address.
func (b Bind) String() string {
	return net.JoinHostPort(b.Addr, strconv.Itoa(int(b.Port)))
}

// CompareBinds orders binds by port, then address.
func CompareBinds(a, b Bind) int {
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return strings.Compare(a.Addr, b.Addr)
}

// ListenerBinds returns the binds of a listener on port of a service in
// network n: one per address of an edge network that has addresses, else
// the proxy's own bind address. n is nil for a network missing from the
// snapshot.
func ListenerBinds(n *model.ServiceNetwork, port int32) []Bind {
	if n == nil || n.Mode != model.ModeEdge || len(n.Addresses) == 0 {
		return []Bind{{Port: port}}
	}
	out := make([]Bind, len(n.Addresses))
	for i, a := range n.Addresses {
		out[i] = Bind{Addr: a, Port: port}
	}
	return out
}

// Table is a compiled route table for one snapshot revision. Its zero value
// is an empty table that matches nothing.
type Table struct {
	revision int64
	// ports are the HTTP and HTTPS binds' host tables; tls the TLS
	// passthrough binds' server-name tables.
	ports, tls map[Bind]*hostTable
	// portHosts are ports' host tables of the binds without an address,
	// by port: looked up for every request, by a key cheaper to hash.
	portHosts map[int32]*hostTable
	protocols map[Bind]model.Protocol
	conflicts []string
	// binds is the sorted list of every bind served.
	binds []Bind
	// services are the snapshot's services by name.
	services map[string]*Service
}

// Revision is the snapshot revision the table was compiled from.
func (t *Table) Revision() int64 { return t.revision }

// Binds returns the binds the table serves, sorted by port, then address.
func (t *Table) Binds() []Bind {
	return slices.Clone(t.binds)
}

// Protocol is the protocol a bind serves: HTTP, HTTPS or TLS_PASSTHROUGH;
// "" when the table does not serve it.
func (t *Table) Protocol(b Bind) model.Protocol { return t.protocols[b] }

// Conflicts lists the listeners left out of the table because their bind
// already serves another protocol, or their protocol is not served.
func (t *Table) Conflicts() []string { return t.conflicts }

// MatchSNI returns the route of a TLS passthrough bind for a client's server
// name, or nil when no service on the bind takes the name. Passthrough
// services have no per-request matches, so the route of the
// highest-precedence service for the name serves every connection.
func (t *Table) MatchSNI(b Bind, serverName string) *Rule {
	ht := t.tls[b]
	if ht == nil {
		return nil
	}
	vh := ht.lookup(requestHost(serverName))
	if vh == nil || len(vh.entries) == 0 {
		return nil
	}
	return vh.entries[0].route
}

// Match returns the route of the highest-precedence rule that matches r on a
// listener at b, or nil when no virtual host or no rule matches.
func (t *Table) Match(b Bind, r *http.Request) *Rule {
	return t.MatchRequest(b, &Request{
		Host: r.Host, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: HTTPHeader(r.Header),
	})
}

// MatchRequest is Match for a request in matching's own terms, which a
// listener that parses requests itself builds without an *http.Request.
func (t *Table) MatchRequest(b Bind, r *Request) *Rule {
	ht := t.hosts(b)
	if ht == nil {
		return nil
	}
	vh := ht.lookup(requestHost(r.Host))
	if vh == nil {
		return nil
	}
	return vh.match(r)
}

// hosts returns the host table of an HTTP or HTTPS bind, nil when none.
func (t *Table) hosts(b Bind) *hostTable {
	if b.Addr == "" {
		return t.portHosts[b.Port]
	}
	return t.ports[b]
}

// Request is what matching reads of a request.
type Request struct {
	// Host is the Host header (or the authority), a port allowed.
	Host   string
	Method string
	// Path is the request path, unescaped (url.URL.Path).
	Path     string
	RawQuery string
	Header   Header
}

// Header gives matching the values of a request's header fields.
type Header interface {
	// Value returns the i-th value (from 0, in the order received) of the
	// header field name, which is in canonical form
	// (http.CanonicalHeaderKey), and whether there is one.
	Value(name string, i int) (string, bool)
}

// HTTPHeader adapts an http.Header to Header.
type HTTPHeader http.Header

func (h HTTPHeader) Value(name string, i int) (string, bool) {
	vs := h[name]
	if i < len(vs) {
		return vs[i], true
	}
	return "", false
}

// Rule is one compiled rule: its matches lead here, and it holds the
// rule's filters, policies and action. Rules are shared by every
// virtual host and listener the rule's service serves, so the rule's weighted
// schedule is one schedule. Callers must not modify a Rule.
type Rule struct {
	// Service and Index name the model rule the rule was compiled from:
	// Service.Rules[Index].
	Service string
	Index   int
	// Status is the code of a fixed response, or 0 when the route forwards.
	Status int
	// MatchedPrefix is the normalized path prefix ("" for "/", never a
	// trailing slash) of the match that selected this route, which a
	// ReplacePrefixMatch path modifier replaces. Empty for other matches,
	// and for a rule with no URL rewrite or redirect (of its own or of a
	// backend), which never reads it.
	MatchedPrefix string
	// Filters run in order before the action.
	Filters []Filter
	// RequestTimeout bounds the whole exchange and BackendTimeout each
	// attempt; zero is no limit of the rule's own.
	RequestTimeout, BackendTimeout time.Duration
	// Retry is nil when failed attempts are not retried.
	Retry *RetryPolicy
	// Session is nil without session persistence.
	Session *Session
	// Auth is nil when auth is off for the route's service and network.
	Auth *Authz
	// ForwardedFor is the X-Forwarded-For mode of the service's network
	// ("" is append).
	ForwardedFor model.ForwardedForMode
	// Annotation is what CompileHooks.Annotate returned for the rule.
	Annotation any

	backends []Backend
	weights  *balancer.Weighted
}

// Pick returns the backend that takes the next request, or nil when every
// backend has a weight of zero. It must only be called on a forwarding
// route, one whose Status is 0.
func (r *Rule) Pick() *Backend {
	i := r.weights.Pick()
	if i < 0 {
		return nil
	}
	return &r.backends[i]
}

// Backend is one weighted share of a forwarding route.
type Backend struct {
	// TargetGroup is the referenced target group's name; empty for an
	// invalid reference.
	TargetGroup string
	// Filters run, after the route's, on requests sent to this backend.
	Filters []Filter
	// Annotation is what CompileHooks.Annotate returned for the backend.
	Annotation any
	group      *Group
}

// Group returns the backend's target group, or nil when the reference is
// invalid or names a target group missing from the snapshot: the Gateway API
// answers that share of requests with 500.
func (b *Backend) Group() *Group { return b.group }

// Group is a compiled target group: the targets that take new requests.
type Group struct {
	Name string
	// Protocol (HTTP, HTTPS, TCP) and Version (HTTP1, HTTP2, GRPC) are how
	// the group's targets are spoken to.
	Protocol model.Protocol
	Version  model.ProtocolVersion
	// targets holds the Active targets only: draining targets take no new
	// requests and their requests in flight hold their own references.
	targets []Target
	// clusters are the clusters of the targets, each once.
	clusters []string
	next     balancer.RoundRobin
	health   *health.Group
	// Export is set for the group of a multi-cluster import backend: its
	// targets are the endpoints of the ServiceExports of Export, each
	// cluster's reached through that cluster's proxy.
	Export *ExportRef
	// byCluster and clusterWeights split the picks of an import group with
	// per-cluster weights: a cluster by weight, then its targets in turn.
	byCluster      []*Group
	clusterWeights *balancer.Weighted
	// reach, set for groups with other clusters' targets, says whether a
	// cluster can be reached now (CompileHooks.Reachable).
	reach func(cluster string) bool
	// local and overflow split the picks of an import group of a
	// LocalFirst rule: local's targets while one is healthy, else
	// overflow's (the other clusters', by weight).
	local, overflow *Group
}

// routable reports whether t may take a request: healthy (or unchecked)
// and in a cluster that can be reached.
func (g *Group) routable(t *Target) bool {
	return t.Health.Routable() && (g.reach == nil || g.reach(t.Cluster))
}

// ExportRef names the exported Service an import group stands for.
type ExportRef struct{ Namespace, Name string }

// OnlyIn reports whether every target of g is in cluster (true for a group
// without targets).
func (g *Group) OnlyIn(cluster string) bool {
	return len(g.clusters) == 0 || len(g.clusters) == 1 && g.clusters[0] == cluster
}

// Pick returns the next routable target by round robin, or nil when the
// group has no active target. A target that is unhealthy, not yet checked
// or ejected is skipped, unless no target of the group is routable: then the
// group fails open, as Lattice does, and every target takes its turn.
//
// An unroutable target skipped uses up its turn of the round robin, so the
// routable targets still share requests evenly. The common case costs one
// atomic add and one atomic load. An import group picks a cluster first
// (pickCluster, pickLocalFirst), then among that cluster's targets.
func (g *Group) Pick() *Target {
	if g.byCluster != nil || g.local != nil {
		if g.local != nil {
			return g.pickLocalFirst()
		}
		return g.pickCluster()
	}
	n := len(g.targets)
	i := g.next.Pick(n)
	if i < 0 {
		return nil
	}
	if t := &g.targets[i]; g.reach == nil && (n == 1 || t.Health.Routable() || g.health.FailOpen()) {
		return t
	}
	if t := &g.targets[i]; g.routable(t) {
		return t
	}
	for range n - 1 {
		if t := &g.targets[g.next.Pick(n)]; g.routable(t) {
			return t
		}
	}
	// The group's routable targets went down while we looked.
	return &g.targets[i]
}

// pickCluster picks by cluster weight, then among the cluster's targets; a
// cluster that cannot be reached passes its turn to the next by weight, so
// its share goes to the others while it is gone.
func (g *Group) pickCluster() *Target {
	var first *Target
	for range len(g.byCluster) {
		sub := g.byCluster[g.clusterWeights.Pick()]
		t := sub.Pick()
		if t == nil {
			continue
		}
		if g.reach == nil || g.reach(t.Cluster) {
			return t
		}
		if first == nil {
			first = t
		}
	}
	if g.reach != nil {
		// The weights kept landing on clusters that cannot be reached
		// (one with most of the weight is down): the first that can be,
		// in order, takes the turn.
		for _, sub := range g.byCluster {
			if t := sub.Pick(); t != nil && g.reach(t.Cluster) {
				return t
			}
		}
	}
	return first
}

// pickLocalFirst picks among the local targets while one of them is
// routable (healthy, or unchecked, and not ejected), else among the
// overflow's in clusters that can be reached; with neither, the local
// targets fail open.
func (g *Group) pickLocalFirst() *Target {
	if len(g.local.targets) > 0 && !g.local.health.FailOpen() {
		return g.local.Pick()
	}
	var t *Target
	for range len(g.overflow.clusters) + 1 {
		// A cluster that cannot be reached passes its turn, as in
		// pickCluster; the weights pick again.
		if t = g.overflow.Pick(); t == nil || g.reach == nil || g.reach(t.Cluster) {
			break
		}
	}
	if t != nil && (g.reach == nil || g.reach(t.Cluster)) {
		return t
	}
	if len(g.local.targets) > 0 {
		return g.local.Pick()
	}
	return t
}

// Target is one endpoint a request may be sent to.
type Target struct {
	// Addr is the "host:port" to dial in the target's own network.
	Addr string
	// Cluster is the cluster whose network Addr belongs to. A proxy of any
	// other cluster reaches it through a peer hop.
	Cluster string
	// Health is the target's live health in its group, nil when the table
	// was compiled without health (then it is always routable). Forwarding
	// reports each request's outcome to it.
	Health *health.Target
	group  *Group
}

// hostTable holds the virtual hosts of one listener bind: those of the
// listeners with no hostname in exact, wildcard and any, and those of each
// listener with a hostname in a hostTable of its own.
type hostTable struct {
	exact map[string]*vhost
	// wildcard is keyed by the suffix of "*.example.com", ".example.com".
	wildcard map[string]*vhost
	// any serves every host that matches no name: the edge-mode services
	// without host names.
	any *vhost
	// exactListeners and wildcardListeners hold the virtual hosts of the
	// listeners with a hostname, keyed like exact and wildcard.
	exactListeners    map[string]*hostTable
	wildcardListeners map[string]*hostTable
}

// lookup finds the virtual host for a normalized host name. First the
// listener: the one whose hostname is the host, else the one with the
// longest wildcard matching it, else those with no hostname. A request is
// served only by the routes of that one listener (the Gateway API's
// listener isolation). Then, among that listener's virtual hosts, an exact
// name, then the wildcard with the longest matching suffix, then the
// catch-all.
func (ht *hostTable) lookup(host string) *vhost {
	return ht.listener(host).vhost(host)
}

// listener returns the host table of the listener that serves a
// normalized host name: the one whose hostname is the host, else the one
// with the longest wildcard matching it, else ht, the listeners with no
// hostname.
func (ht *hostTable) listener(host string) *hostTable {
	if ht.exactListeners != nil || ht.wildcardListeners != nil {
		if l := ht.exactListeners[host]; l != nil {
			return l
		}
		if l := longestSuffix(ht.wildcardListeners, host); l != nil {
			return l
		}
	}
	return ht
}

// Misdirected reports whether a request for host arrived on a TLS
// connection to bind b whose server name (SNI) selected another listener
// than host selects: the client reused a connection (HTTP/2 coalescing)
// that a listener with another certificate and other routes accepted, and
// must be told 421 so that it opens one for host. A connection without a
// server name is never misdirected.
func (t *Table) Misdirected(b Bind, serverName, host string) bool {
	if serverName == "" {
		return false
	}
	ht := t.hosts(b)
	if ht == nil || ht.exactListeners == nil && ht.wildcardListeners == nil {
		// One listener answers every name on the port.
		return false
	}
	if sameHost(serverName, host) {
		// The usual request of a TLS connection: no lowering, no lookup.
		return false
	}
	return ht.listener(requestHost(serverName)) != ht.listener(requestHost(host))
}

// sameHost reports whether host, without its port, names serverName, as
// requestHost compares them, for ASCII names (false for any other, and for
// a bracketed address, which requestHost then compares).
func sameHost(serverName, host string) bool {
	if i := strings.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host, serverName = strings.TrimSuffix(host, "."), strings.TrimSuffix(serverName, ".")
	if len(host) != len(serverName) {
		return false
	}
	for i := 0; i < len(host); i++ {
		a, b := host[i], serverName[i]
		if a >= 0x80 || b >= 0x80 || a == '[' || b == '[' {
			return false
		}
		if a != b && lowerASCII(a) != lowerASCII(b) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// longestSuffix returns the value of m whose key is the longest suffix of
// host starting at a dot after its first character: the most specific
// wildcard ("*.example.com" is keyed ".example.com") matching host.
func longestSuffix[T any](m map[string]*T, host string) *T {
	if len(m) == 0 {
		return nil
	}
	// A wildcard needs at least one label before its suffix, so the first
	// candidate suffix starts at the first dot after index 0.
	for i := 1; i < len(host); i++ {
		if host[i] == '.' {
			if v := m[host[i:]]; v != nil {
				return v
			}
		}
	}
	return nil
}

// vhost finds the virtual host for a normalized host name among ht's own.
func (ht *hostTable) vhost(host string) *vhost {
	if vh := ht.exact[host]; vh != nil {
		return vh
	}
	if vh := longestSuffix(ht.wildcard, host); vh != nil {
		return vh
	}
	return ht.any
}

// requestHost normalizes a Host header for lookup: without port, brackets
// or a trailing dot, in lower case. It allocates only when the host has
// upper-case letters.
func requestHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return lower(h[1:i])
		}
		return lower(h)
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return lower(strings.TrimSuffix(h, "."))
}

// lower is strings.ToLower, which a host name in lower-case ASCII, the
// usual one, passes through after a look at eight bytes at a time: in a
// word x of bytes b, with m the bytes' low seven bits, m + 0x3f carries
// into a byte's high bit exactly when b&0x7f >= 'A' and m + 0x25 when it
// is past 'Z' (never into the next byte: m + 0x3f < 0x100), and x itself
// has it for each byte of 0x80 and more (not ASCII).
func lower(h string) string {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(h); i += 8 {
		w := h[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		m := x &^ highs
		if ((m+(0x80-'A')*ones)&^(m+(0x80-'Z'-1)*ones)|x)&highs != 0 {
			return strings.ToLower(h)
		}
	}
	for ; i < len(h); i++ {
		if c := h[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// vhost is one virtual host: the rules of every service answering to one
// host name on one bind, as entries in precedence order. The entries of each
// exact path and of each path prefix are contiguous, so they are indexed as
// sub-slices of entries; regular-expression entries are scanned.
type vhost struct {
	entries []entry
	exact   map[string][]entry
	regex   []entry
	// prefix is keyed by the normalized prefix: no trailing slash, and ""
	// for "/" (and for matches without a path condition).
	prefix map[string][]entry
	// prefixLens has bit n set when prefix has a key of n bytes, bit 63
	// for every key of 63 bytes or more: a path's prefixes of other
	// lengths are not looked up.
	prefixLens uint64
	// scan: entries are not indexed but scanned whole, in order: the
	// services' own rule order (RulesInOrder), or precedence order for a
	// virtual host of at most scanEntries entries, the usual one (a
	// scan of a few costs what a map lookup does, without the maps).
	scan bool
}

// scanEntries is the most entries a virtual host scans rather than
// indexes.
const scanEntries = 8

// match returns the route of the first entry, in precedence order, that
// matches r. All exact entries precede all regular-expression entries,
// which precede all prefix entries; among prefix entries longer prefixes
// come first, and at most one prefix of each length can match a path, so
// walking the path's own prefixes from the longest visits the matching
// entries in the same order as a scan of entries would.
func (vh *vhost) match(r *Request) *Rule {
	path := r.Path
	if vh.scan {
		for i := range vh.entries {
			if e := &vh.entries[i]; e.matchesPath(path) && e.matchesRest(r) {
				return e.route
			}
		}
		return nil
	}
	if rt := firstMatch(vh.exact[path], r); rt != nil {
		return rt
	}
	for i := range vh.regex {
		if e := &vh.regex[i]; e.pathRE.MatchString(path) && e.matchesRest(r) {
			return e.route
		}
	}
	if len(vh.prefix) > 0 {
		for i := len(path); i >= 0; i-- {
			if i < len(path) && path[i] != '/' || vh.prefixLens&(1<<min(i, 63)) == 0 {
				continue
			}
			if rt := firstMatch(vh.prefix[path[:i]], r); rt != nil {
				return rt
			}
		}
	}
	return nil
}

// pathKind orders path matches by precedence. The Gateway API ranks exact
// paths above prefixes and leaves regular expressions to the
// implementation; like Envoy Gateway and nginx we rank them between the two,
// so that a catch-all prefix "/" does not shadow every regular expression.
type pathKind uint8

const (
	pathExact pathKind = iota
	pathRegex
	pathPrefix
)

// firstMatch returns the route of the first of entries whose conditions
// other than the path hold for r.
func firstMatch(entries []entry, r *Request) *Rule {
	for i := range entries {
		if entries[i].matchesRest(r) {
			return entries[i].route
		}
	}
	return nil
}

// entry is one model match of one rule, compiled.
type entry struct {
	kind pathKind
	// path is the exact path or the normalized prefix.
	path    string
	pathRE  *regexp.Regexp
	method  string
	headers []valueMatch
	query   []valueMatch
	route   *Rule
}

// matchesPath reports whether path satisfies e's path condition, as the
// index of a vhost decides it: a prefix matches whole segments.
func (e *entry) matchesPath(path string) bool {
	switch e.kind {
	case pathExact:
		return path == e.path
	case pathRegex:
		return e.pathRE.MatchString(path)
	}
	return strings.HasPrefix(path, e.path) && (len(path) == len(e.path) || path[len(e.path)] == '/')
}

// matchesRest reports whether r satisfies e's conditions other than the path.
func (e *entry) matchesRest(r *Request) bool {
	if e.method != "" && r.Method != e.method {
		return false
	}
	for i := range e.headers {
		if !e.headers[i].matchHeader(r.Header) {
			return false
		}
	}
	for i := range e.query {
		v, ok := queryValue(r.RawQuery, e.query[i].name)
		if !ok || !e.query[i].matches(v) {
			return false
		}
	}
	return true
}

// valueMatch is one compiled header or query condition.
type valueMatch struct {
	// name is canonical (http.CanonicalHeaderKey) for headers and as
	// written for query parameters.
	name  string
	value string
	re    *regexp.Regexp
}

func (m *valueMatch) matches(v string) bool {
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.value
}

// matchHeader reports whether any value of the header matches.
func (m *valueMatch) matchHeader(h Header) bool {
	for i := 0; ; i++ {
		v, ok := h.Value(m.name, i)
		if !ok {
			return false
		}
		if m.matches(v) {
			return true
		}
	}
}

// queryValue returns the first value of the query parameter name in the raw
// query. It unescapes, and so allocates, only keys and values that are
// escaped; pairs that are not valid escapes are skipped, as url.ParseQuery
// does.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		k, ok := unescapeQuery(k)
		if !ok || k != name {
			continue
		}
		if v, ok = unescapeQuery(v); ok {
			return v, true
		}
	}
	return "", false
}

func unescapeQuery(s string) (string, bool) {
	if !strings.ContainsAny(s, "%+") {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}
