package router

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/balancer"
)

// Compiler compiles snapshots into route tables. It keeps what its last
// successful compilation compiled (target groups, services' rules, virtual
// hosts, regular expressions) and compiles in the next only what changed,
// so that a change of one service costs about what that service does. Its
// zero value is ready. Hooks must be set before the first compilation. A Compiler is not safe for concurrent use;
// the tables it returns are.
type Compiler struct {
	// Hooks link the tables to the proxy's health state and annotations.
	Hooks   CompileHooks
	regexps map[string]*regexp.Regexp
	// st is the state of the last successful compilation, nil before
	// the first and after a failed one; last is its table.
	st   *state
	last *Table
}

// Compile builds the route table of snap.
//
// A listener is served on each of its binds (ListenerBinds): the port on
// each address of an edge network that has addresses, else on the proxy's
// own bind address. Binds are routed apart, so two edge networks on one port
// at different addresses never see each other's routes.
//
// Every service with an HTTP listener contributes its rules to a virtual
// host per host name on each of that listener's binds: the listener's own
// Hostnames, or else the service's. An edge-mode service with neither
// contributes to the catch-all host. A listener with a Hostname keeps its
// virtual hosts apart from the bind's other listeners', and a request is served only by
// the most specific listener whose Hostname matches it. The rules of all
// services sharing a virtual host are merged and ordered by Gateway API
// precedence, one entry per match: exact path, then regular expression, then
// longer path prefix; then a method match; then more header matches; then
// more query matches; then the older service (CreatedAt); then the service's
// source "namespace/name" (its own name when it has no source); then rule
// and match order within the service. A rule without matches matches every
// request, like a match of path prefix "/".
//
// After the snapshot's services, every import's clusterset name is served
// on its HTTP ports at the proxy's own bind address, where no service
// already serves that host (addClustersetHosts).
//
// HTTPS listeners are routed exactly like HTTP ones once TLS is
// terminated. A TLS_PASSTHROUGH listener contributes its services to the
// bind's server-name table instead (MatchSNI). The first listener on a bind
// decides its protocol; a later listener with another protocol is left out
// and reported by Conflicts.
//
// Each compilation returns a new table, equal to what a new Compiler would
// compile from snap; the last table is not changed. Objects of the last
// snapshot with the same name and non-zero revision (the control plane's,
// which every change advances) are taken as unchanged, and objects without
// a revision are compared by content: their compiled rules, groups and
// virtual hosts are reused. A change of the store, a network or an export,
// and one that could move which listener decides a bind's protocol, or
// naming an import, compiles everything again (see compile).
//
// Compile fails, naming the object and field, on anything it cannot turn into
// a table that does what the snapshot says: a regular expression that does
// not parse, an unknown match type or target state, a path that does not
// start with '/', an action that is not exactly one of forward and fixed
// response, a fixed status outside 200-599, a negative weight, a target with
// no port, two target groups or services of one name, or a filter, retry or session it
// cannot honour. Model validation rejects all of
// these before they are stored; Compile checks again because a proxy must
// never serve a table it half understands.
func (c *Compiler) Compile(snap *model.Snapshot) (*Table, error) {
	if snap == nil {
		return nil, errors.New("nil snapshot")
	}
	t, err := c.compile(snap, false)
	if err != nil {
		// The state may be half updated: the next compilation starts
		// over, from the table that still serves.
		c.st = nil
		return nil, err
	}
	return t, nil
}

func compileGroup(tg *model.TargetGroup) (*Group, error) {
	g := &Group{Name: tg.Name, Protocol: tg.Protocol, Version: tg.ProtocolVersion}
	// The targets slice is sized exactly: a proxy holds one per group.
	if n := active(tg.Targets); n > 0 {
		g.targets = make([]Target, 0, n)
	}
	for i, t := range tg.Targets {
		port := t.EffectivePort(tg)
		if port < 1 || port > 65535 {
			return nil, fieldError(fmt.Sprintf("targets[%d].port", i), "%d is not in 1-65535 (nor is the target group's port)", port)
		}
		switch t.State {
		case model.TargetActive:
			g.targets = append(g.targets, Target{
				Addr:    net.JoinHostPort(t.Address, strconv.Itoa(int(port))),
				Cluster: t.Cluster,
			})
			if !slices.Contains(g.clusters, t.Cluster) {
				g.clusters = append(g.clusters, t.Cluster)
			}
		case model.TargetDraining:
		default:
			return nil, fieldError(fmt.Sprintf("targets[%d].state", i), "must be Active or Draining, not %q", t.State)
		}
	}
	return g, nil
}

// active counts the Active targets of ts.
func active(ts []model.Target) int {
	n := 0
	for i := range ts {
		if ts[i].State == model.TargetActive {
			n++
		}
	}
	return n
}

func fieldError(field, format string, args ...any) error {
	return &model.FieldError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// inField places the *model.FieldError err under the field parent. Field
// paths are built only on failure, keeping them off the cost of compiling.
func inField(parent string, err error) error {
	var fe *model.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	sep := "."
	if strings.HasPrefix(fe.Field, "[") {
		sep = ""
	}
	return &model.FieldError{Field: parent + sep + fe.Field, Detail: fe.Detail}
}

// builder holds one compilation's state: the persistent state it updates
// (st), the regular expressions compiled so far (regexps) or last time
// (prev), and the target groups the service being compiled looked up.
type builder struct {
	st      *state
	prev    map[string]*regexp.Regexp
	regexps map[string]*regexp.Regexp
	hooks   CompileHooks
	// sessionSecret keys the session tokens: the control-plane store's
	// identity, the same on every proxy of the control plane and never
	// seen by the clients the tokens are given to.
	sessionSecret []byte
	compiler      *Compiler
	// deps collects the target groups the service being compiled names;
	// owner is that service's owner, foreign the target groups it names
	// of another owner.
	deps    []groupDep
	owner   string
	foreign []string
}

// pending is an entry with the keys it is sorted by.
type pending struct {
	entry
	svc *model.Service
	// source is the service's source "namespace/name", or its name.
	source      string
	rule, match int
}

// lowerUnique returns names lower-cased, without repeats.
func lowerUnique(names []string) []string {
	out := make([]string, 0, len(names))
	for _, h := range names {
		if h = strings.ToLower(h); !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func (b *builder) compileRules(svc *model.Service, authz *Authz, xff model.ForwardedForMode) ([]pending, error) {
	source := svc.Name
	if svc.Source != nil {
		source = svc.Source.Namespace + "/" + svc.Source.Name
	}
	n := 0
	for ri := range svc.Rules {
		n += max(1, len(svc.Rules[ri].Matches))
	}
	out := make([]pending, 0, n)
	for ri := range svc.Rules {
		rule := &svc.Rules[ri]
		route, err := b.compileRule(rule)
		if err != nil {
			return nil, inField(fmt.Sprintf("rules[%d]", ri), err)
		}
		route.Service, route.Index, route.Auth, route.ForwardedFor = svc.Name, ri, authz, xff
		b.annotate(svc, ri, route)
		prefixed := readsPrefix(route)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []model.Match{{}}
		}
		for mi := range matches {
			e, err := b.compileMatch(&matches[mi])
			if err != nil {
				return nil, inField(fmt.Sprintf("rules[%d].matches[%d]", ri, mi), err)
			}
			e.route = route
			if e.kind == pathPrefix && e.path != "" && prefixed {
				// The route of a prefix match knows its prefix, for
				// ReplacePrefixMatch; the copy shares the weighted schedule.
				// Only a rewrite or redirect reads it: other rules are
				// not copied per match.
				rc := *route
				rc.MatchedPrefix = e.path
				e.route = &rc
			}
			out = append(out, pending{entry: e, svc: svc, source: source, rule: ri, match: mi})
		}
	}
	return out, nil
}

// readsPrefix reports whether a filter of route or of one of its backends
// reads the matched prefix: a URL rewrite or a redirect.
func readsPrefix(route *Rule) bool {
	reads := func(fs []Filter) bool {
		return slices.ContainsFunc(fs, func(f Filter) bool { return f.Rewrite != nil || f.Redirect != nil })
	}
	if reads(route.Filters) {
		return true
	}
	return slices.ContainsFunc(route.backends, func(b Backend) bool { return reads(b.Filters) })
}

func (b *builder) compileAction(a *model.Action, locality model.Locality) (*Rule, error) {
	switch {
	case a.Forward != nil && a.FixedResponse != nil:
		return nil, fieldError("action", "exactly one of forward and fixedResponse may be set")
	case a.FixedResponse != nil:
		if c := a.FixedResponse.StatusCode; c < 200 || c > 599 {
			return nil, fieldError("action.fixedResponse.statusCode", "%d is not in 200-599", c)
		}
		return &Rule{Status: a.FixedResponse.StatusCode}, nil
	case a.Forward != nil:
		bs := a.Forward.Backends
		route := &Rule{backends: make([]Backend, len(bs))}
		weights := make([]int32, len(bs))
		for i, wb := range bs {
			if wb.Weight < 0 {
				return nil, fieldError(fmt.Sprintf("action.forward.backends[%d].weight", i), "%d is negative", wb.Weight)
			}
			weights[i] = wb.Weight
			route.backends[i].TargetGroup = wb.TargetGroup
			switch {
			case wb.TargetGroup != "":
				route.backends[i].group = b.group(wb.TargetGroup)
			case wb.Import != nil:
				g := b.importGroup(wb.Import, locality)
				route.backends[i].TargetGroup, route.backends[i].group = g.Name, g
			}
		}
		route.weights = balancer.NewWeighted(weights)
		return route, nil
	}
	return nil, fieldError("action", "one of forward and fixedResponse is required")
}

// compileMatch compiles one match. A match without a path condition is a
// path prefix "/" match, as in the Gateway API.
func (b *builder) compileMatch(m *model.Match) (entry, error) {
	e := entry{kind: pathPrefix, method: m.Method}
	if m.Path != nil {
		v := m.Path.Value
		switch m.Path.Type {
		case model.PathExact, model.PathPrefix:
			if !strings.HasPrefix(v, "/") {
				return e, fieldError("path.value", "%q must start with '/'", v)
			}
			e.path = v
			if m.Path.Type == model.PathExact {
				e.kind = pathExact
			} else {
				e.path = normalizePrefix(v)
			}
		case model.PathRegularExpression:
			re, err := b.regexp(v)
			if err != nil {
				return e, fieldError("path.value", "invalid regular expression: %v", err)
			}
			e.kind, e.pathRE = pathRegex, re
		default:
			return e, fieldError("path.type", "must be Exact, PathPrefix or RegularExpression, not %q", m.Path.Type)
		}
	}
	var err error
	if e.headers, err = b.compileValues(m.Headers, http.CanonicalHeaderKey); err != nil {
		return e, inField("headers", err)
	}
	if e.query, err = b.compileValues(m.QueryParams, func(s string) string { return s }); err != nil {
		return e, inField("queryParams", err)
	}
	return e, nil
}

// normalizePrefix drops a prefix's trailing slash, which the Gateway API
// ignores, so that "/" becomes "" and "/foo/" becomes "/foo".
func normalizePrefix(v string) string {
	if v == "/" {
		return ""
	}
	return strings.TrimSuffix(v, "/")
}

// compileValues compiles header or query conditions, keeping only the first
// condition for each name (after canon) as the Gateway API requires. Error
// fields are relative to the list, as in "[2].value".
func (b *builder) compileValues(ms []model.ValueMatch, canon func(string) string) ([]valueMatch, error) {
	var out []valueMatch
	for i, m := range ms {
		name := canon(m.Name)
		if slices.ContainsFunc(out, func(v valueMatch) bool { return v.name == name }) {
			continue
		}
		vm := valueMatch{name: name}
		switch m.Type {
		case model.ValueExact:
			vm.value = m.Value
		case model.ValueRegularExpression:
			re, err := b.regexp(m.Value)
			if err != nil {
				return nil, fieldError(fmt.Sprintf("[%d].value", i), "invalid regular expression: %v", err)
			}
			vm.re = re
		default:
			return nil, fieldError(fmt.Sprintf("[%d].type", i), "must be Exact or RegularExpression, not %q", m.Type)
		}
		out = append(out, vm)
	}
	return out, nil
}

// regexp returns the RE2 expression expr compiled to match whole inputs,
// reusing this or the previous compilation's. Compiled expressions are safe
// to share between tables.
func (b *builder) regexp(expr string) (*regexp.Regexp, error) {
	if re := b.regexps[expr]; re != nil {
		return re, nil
	}
	re := b.prev[expr]
	if re == nil {
		// Parse expr alone first: wrapped, "a)|(b" would compile.
		if _, err := syntax.Parse(expr, syntax.Perl); err != nil {
			return nil, err
		}
		var err error
		if re, err = regexp.Compile(`^(?:` + expr + `)$`); err != nil {
			return nil, err
		}
	}
	b.regexps[expr] = re
	return re, nil
}

func newVhost(ps []pending) *vhost {
	if slices.ContainsFunc(ps, func(p pending) bool { return p.svc.RulesInOrder }) {
		// A service that ranks its rules itself (VPC Lattice priorities):
		// every entry is scanned in order, service by service.
		slices.SortStableFunc(ps, compareInOrder)
		vh := &vhost{entries: make([]entry, len(ps)), scan: true}
		for i := range ps {
			vh.entries[i] = ps[i].entry
		}
		return vh
	}
	slices.SortStableFunc(ps, comparePrecedence)
	vh := &vhost{entries: make([]entry, len(ps)), scan: len(ps) <= scanEntries}
	for i := range ps {
		vh.entries[i] = ps[i].entry
	}
	if vh.scan {
		// In precedence order, the first entry that matches is the
		// one the index would find (see match).
		return vh
	}
	for start := 0; start < len(vh.entries); {
		e := &vh.entries[start]
		end := start + 1
		for end < len(vh.entries) && vh.entries[end].kind == e.kind &&
			(e.kind == pathRegex || vh.entries[end].path == e.path) {
			end++
		}
		run := vh.entries[start:end:end]
		switch e.kind {
		case pathExact:
			if vh.exact == nil {
				vh.exact = map[string][]entry{}
			}
			vh.exact[e.path] = run
		case pathRegex:
			vh.regex = run
		case pathPrefix:
			if vh.prefix == nil {
				vh.prefix = map[string][]entry{}
			}
			vh.prefix[e.path] = run
			vh.prefixLens |= 1 << min(len(e.path), 63)
		}
		start = end
	}
	return vh
}

// comparePrecedence orders entries by Gateway API precedence, highest first.
// Exact and prefix entries of equal length are grouped by path, which changes
// no outcome (two different paths of one length never match one request) and
// lets the paths be indexed.
func comparePrecedence(a, b pending) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if a.kind != pathRegex {
		if c := cmp.Compare(len(b.path), len(a.path)); c != 0 {
			return c
		}
		if c := strings.Compare(a.path, b.path); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(hasMethod(b), hasMethod(a)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.headers), len(a.headers)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.query), len(a.query)); c != 0 {
		return c
	}
	if c := compareServices(&a, &b); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rule, b.rule); c != 0 {
		return c
	}
	return cmp.Compare(a.match, b.match)
}

// compareServices orders the services of two entries: oldest CreatedAt,
// then source, then name.
func compareServices(a, b *pending) int {
	if c := a.svc.CreatedAt.Compare(b.svc.CreatedAt); c != 0 {
		return c
	}
	if c := strings.Compare(a.source, b.source); c != 0 {
		return c
	}
	return strings.Compare(a.svc.Name, b.svc.Name)
}

// compareInOrder orders the entries of a host name that a service with
// RulesInOrder answers to: by service (oldest CreatedAt, then source, then
// name), then by that service's rule order, or by precedence among the
// rules of a service that does not rank its own.
func compareInOrder(a, b pending) int {
	if c := compareServices(&a, &b); c != 0 {
		return c
	}
	if !a.svc.RulesInOrder {
		return comparePrecedence(a, b)
	}
	if c := cmp.Compare(a.rule, b.rule); c != 0 {
		return c
	}
	return cmp.Compare(a.match, b.match)
}

func hasMethod(p pending) int {
	if p.method != "" {
		return 1
	}
	return 0
}

// importGroup is the group of an import backend: the endpoints, on ref's
// TCP port, of every cluster's export of the Service ref names, split by
// ref's cluster weights when it has any. Backends naming the same import
// alike share one group.
func (b *builder) importGroup(ref *model.ImportRef, locality model.Locality) *Group {
	key := importKey(ref)
	local := b.compiler.Hooks.Cluster
	if locality == model.LocalityLocalFirst && local != "" && (len(ref.ClusterWeights) == 0 || ref.ClusterWeights[local] > 0) {
		return b.localFirstGroup(ref, key, local)
	}
	return b.spreadGroup(ref, key, "")
}

// importKey names an import backend's group: its export, port, protocol,
// cluster weights and hostname.
func importKey(ref *model.ImportRef) string {
	clusters := slices.Sorted(maps.Keys(ref.ClusterWeights))
	key := fmt.Sprintf("%s/%s:%d/%s/%s", ref.Namespace, ref.Name, ref.Port, ref.Protocol, ref.ProtocolVersion)
	for _, c := range clusters {
		key += fmt.Sprintf(";%s=%d", c, ref.ClusterWeights[c])
	}
	if ref.Hostname != "" {
		key += ";hostname=" + ref.Hostname
	}
	return key
}

// spreadGroup is the group of an import backend picking among every
// exporting cluster's targets (but without's), by the import's cluster
// weights.
func (b *builder) spreadGroup(ref *model.ImportRef, key, without string) *Group {
	if without != "" {
		key += ";without=" + without
	}
	if g := b.st.importGroups[key]; g != nil {
		return g
	}
	clusters := slices.Sorted(maps.Keys(ref.ClusterWeights))
	export := &ExportRef{ref.Namespace, ref.Name}
	newGroup := func(targets []Target) *Group {
		g := &Group{Name: "import/" + key, Protocol: ref.Protocol, Version: ref.ProtocolVersion, Export: export, targets: slices.Clone(targets)}
		for _, t := range targets {
			if !slices.Contains(g.clusters, t.Cluster) {
				g.clusters = append(g.clusters, t.Cluster)
			}
		}
		b.compiler.link(g)
		return g
	}
	per := map[string][]Target{}
	var all []Target
	for _, e := range b.exportsOf(ref) {
		if e.Owner == without || ref.Hostname != "" && len(ref.ClusterWeights) > 0 && ref.ClusterWeights[e.Owner] <= 0 {
			continue // a per-pod name's group has its cluster's targets only
		}
		for _, t := range b.exportTargets(e, ref) {
			per[e.Owner] = append(per[e.Owner], t)
			all = append(all, t)
		}
	}
	g := newGroup(all)
	if len(clusters) > 0 {
		var weights []int32
		for _, c := range clusters {
			if w := ref.ClusterWeights[c]; w > 0 && len(per[c]) > 0 {
				g.byCluster = append(g.byCluster, newGroup(per[c]))
				weights = append(weights, w)
			}
		}
		if len(weights) > 0 {
			g.clusterWeights = balancer.NewWeighted(weights)
		} else {
			g.targets, g.byCluster = nil, nil // no weighted cluster exports: no target
		}
	}
	b.st.importGroups[key] = g
	return g
}

// exportsOf is the snapshot's exports of ref's Service, by owner.
func (b *builder) exportsOf(ref *model.ImportRef) []*model.ServiceExport {
	exports := slices.Clone(b.st.exports[ExportRef{ref.Namespace, ref.Name}])
	slices.SortFunc(exports, func(x, y *model.ServiceExport) int { return strings.Compare(x.Owner, y.Owner) })
	return exports
}

// exportTargets are e's active targets of ref's port, in e's owner's
// cluster; with ref's Hostname, only those at that hostname's addresses
// (none when e has no such hostname).
func (b *builder) exportTargets(e *model.ServiceExport, ref *model.ImportRef) []Target {
	if ref.Hostname == "" {
		var out []Target
		for _, t := range exportPortTargets(e, ref.Port) {
			out = append(out, exportTarget(e, t))
		}
		return out
	}
	if e.Type != model.ExportHeadless {
		return nil
	}
	// A per-pod name per hostname asks this of the same export: its
	// hostnames, and its targets by address, are indexed once per state.
	names := b.st.hostnames[e]
	if names == nil {
		names = make(map[string][]string, len(e.Hostnames))
		for _, h := range e.Hostnames {
			names[h.Hostname] = h.Addresses
		}
		if b.st.hostnames == nil {
			b.st.hostnames = map[*model.ServiceExport]map[string][]string{}
		}
		b.st.hostnames[e] = names
	}
	addrs, ok := names[ref.Hostname]
	if !ok {
		return nil
	}
	k := exportPort{e, ref.Port}
	byAddr := b.st.targetsByAddr[k]
	if byAddr == nil {
		byAddr = map[netip.Addr][]Target{}
		for _, t := range exportPortTargets(e, ref.Port) {
			if a, err := netip.ParseAddr(t.Address); err == nil {
				byAddr[a.Unmap()] = append(byAddr[a.Unmap()], exportTarget(e, t))
			}
		}
		if b.st.targetsByAddr == nil {
			b.st.targetsByAddr = map[exportPort]map[netip.Addr][]Target{}
		}
		b.st.targetsByAddr[k] = byAddr
	}
	var out []Target
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, byAddr[a.Unmap()]...)
		}
	}
	return out
}

// exportPort is one port of one export.
type exportPort struct {
	e    *model.ServiceExport
	port int32
}

// exportPortTargets yields e's active targets of port in e's owner's cluster.
func exportPortTargets(e *model.ServiceExport, port int32) func(func(int, model.Target) bool) {
	return func(yield func(int, model.Target) bool) {
		for _, p := range e.Ports {
			if p.Port != port || p.Protocol != "TCP" {
				continue // every import backend is carried over TCP
			}
			for i, t := range p.Targets {
				if t.State == model.TargetActive && t.Cluster == e.Owner && !yield(i, t) {
					return
				}
			}
		}
	}
}

// exportTarget is e's target t as a proxy dials it.
func exportTarget(e *model.ServiceExport, t model.Target) Target {
	return Target{Addr: net.JoinHostPort(t.Address, strconv.Itoa(int(t.Port))), Cluster: e.Owner}
}

// localFirstGroup is the group of an import backend of a LocalFirst rule:
// cluster local's targets while any is healthy, else the other clusters'
// by the import's weights among them (the overflow). The local targets
// have a health group of their own (LocalFirstHealth), checked by this
// proxy.
func (b *builder) localFirstGroup(ref *model.ImportRef, key, local string) *Group {
	name := localFirstName(key, local)
	if g := b.st.importGroups[name]; g != nil {
		return g
	}
	export := &ExportRef{ref.Namespace, ref.Name}
	var targets []Target
	for _, e := range b.exportsOf(ref) {
		if e.Owner == local {
			targets = b.exportTargets(e, ref)
		}
	}
	lg := &Group{Name: name, Protocol: ref.Protocol, Version: ref.ProtocolVersion, Export: export, targets: targets}
	if len(targets) > 0 {
		lg.clusters = []string{local}
	}
	b.compiler.link(lg)
	overflow := b.spreadGroup(ref, key, local)
	g := &Group{Name: name, Protocol: ref.Protocol, Version: ref.ProtocolVersion, Export: export, local: lg, overflow: overflow,
		clusters: slices.Concat(lg.clusters, overflow.clusters)}
	// Targets of the combined group are its parts': it lists all for
	// OnlyIn and reach, and picks through pickLocalFirst.
	g.targets = slices.Concat(lg.targets, overflow.targets)
	if !g.OnlyIn(local) {
		g.reach = b.compiler.Hooks.Reachable
	}
	b.st.importGroups[name] = g
	return g
}

// localFirstName is the name of a LocalFirst import group, and of the
// health group of its local targets.
func localFirstName(key, local string) string {
	return "import/" + key + ";local-first=" + local
}
