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
// counters.
package router

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/proxy/balancer"
)

// Table is a compiled route table for one snapshot revision. Its zero value
// is an empty table that matches nothing.
type Table struct {
	revision int64
	ports    map[int32]*hostTable
	// portList is the sorted list of the keys of ports.
	portList []int32
}

// Revision is the snapshot revision the table was compiled from.
func (t *Table) Revision() int64 { return t.revision }

// Ports returns the sorted listener ports the table serves, each of which
// needs an HTTP listener.
func (t *Table) Ports() []int32 {
	return slices.Clone(t.portList)
}

// Match returns the route of the highest-precedence rule that matches r on a
// listener at port, or nil when no virtual host or no rule matches.
func (t *Table) Match(port int32, r *http.Request) *Route {
	ht := t.ports[port]
	if ht == nil {
		return nil
	}
	vh := ht.lookup(requestHost(r.Host))
	if vh == nil {
		return nil
	}
	return vh.match(r)
}

// Route is the compiled action of one rule. Routes are shared by every
// virtual host and listener the rule's service serves, so the rule's weighted
// schedule is one schedule. Callers must not modify a Route.
type Route struct {
	// Service and Rule name the model rule the route was compiled from:
	// Service.Rules[Rule].
	Service string
	Rule    int
	// Status is the code of a fixed response, or 0 when the route forwards.
	Status int

	backends []Backend
	weights  *balancer.Weighted
}

// Pick returns the backend that takes the next request, or nil when every
// backend has a weight of zero. It must only be called on a forwarding
// route, one whose Status is 0.
func (r *Route) Pick() *Backend {
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
	group       *Group
}

// Group returns the backend's target group, or nil when the reference is
// invalid or names a target group missing from the snapshot: the Gateway API
// answers that share of requests with 500.
func (b *Backend) Group() *Group { return b.group }

// Group is a compiled target group: the targets that take new requests.
type Group struct {
	Name string
	// targets holds the Active targets only: draining targets take no new
	// requests and their requests in flight hold their own references.
	targets []Target
	next    balancer.RoundRobin
}

// Pick returns the next target by round robin, or nil when the group has no
// active target.
func (g *Group) Pick() *Target {
	i := g.next.Pick(len(g.targets))
	if i < 0 {
		return nil
	}
	return &g.targets[i]
}

// Target is one endpoint a request may be sent to.
type Target struct {
	// Addr is the "host:port" to dial in the target's own network.
	Addr string
	// Cluster is the cluster whose network Addr belongs to. A proxy of any
	// other cluster reaches it through a peer hop.
	Cluster string
}

// hostTable holds the virtual hosts of one listener port.
type hostTable struct {
	exact map[string]*vhost
	// wildcard is keyed by the suffix of "*.example.com", ".example.com".
	wildcard map[string]*vhost
	// any serves every host that matches no name: the edge-mode services
	// without host names.
	any *vhost
}

// lookup finds the virtual host for a normalized host name: an exact name,
// then the wildcard with the longest matching suffix, then the catch-all.
func (ht *hostTable) lookup(host string) *vhost {
	if vh := ht.exact[host]; vh != nil {
		return vh
	}
	if len(ht.wildcard) > 0 {
		// A wildcard needs at least one label before its suffix, so the
		// first candidate suffix starts at the first dot after index 0.
		for i := 1; i < len(host); i++ {
			if host[i] == '.' {
				if vh := ht.wildcard[host[i:]]; vh != nil {
					return vh
				}
			}
		}
	}
	return ht.any
}

// requestHost normalizes a Host header for lookup: without port, brackets
// or a trailing dot, in lower case. It allocates only when the host has
// upper-case letters.
func requestHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return strings.ToLower(h[1:i])
		}
		return strings.ToLower(h)
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// vhost is one virtual host: the rules of every service answering to one
// host name on one port, as entries in precedence order. The entries of each
// exact path and of each path prefix are contiguous, so they are indexed as
// sub-slices of entries; regular-expression entries are scanned.
type vhost struct {
	entries []entry
	exact   map[string][]entry
	regex   []entry
	// prefix is keyed by the normalized prefix: no trailing slash, and ""
	// for "/" (and for matches without a path condition).
	prefix map[string][]entry
}

// match returns the route of the first entry, in precedence order, that
// matches r. All exact entries precede all regular-expression entries,
// which precede all prefix entries; among prefix entries longer prefixes
// come first, and at most one prefix of each length can match a path, so
// walking the path's own prefixes from the longest visits the matching
// entries in the same order as a scan of entries would.
func (vh *vhost) match(r *http.Request) *Route {
	path := r.URL.Path
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
			if i < len(path) && path[i] != '/' {
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
func firstMatch(entries []entry, r *http.Request) *Route {
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
	route   *Route
}

// matchesRest reports whether r satisfies e's conditions other than the path.
func (e *entry) matchesRest(r *http.Request) bool {
	if e.method != "" && r.Method != e.method {
		return false
	}
	for i := range e.headers {
		if !e.headers[i].matchHeader(r.Header) {
			return false
		}
	}
	for i := range e.query {
		v, ok := queryValue(r.URL.RawQuery, e.query[i].name)
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
func (m *valueMatch) matchHeader(h http.Header) bool {
	for _, v := range h[m.name] {
		if m.matches(v) {
			return true
		}
	}
	return false
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
