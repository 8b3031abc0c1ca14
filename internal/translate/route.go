package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// attachment is where a route serves in one network: the listeners it
// attached to and the host names it answers on them.
type attachment struct {
	gw *gatewayInfo
	// listeners are where the route is served: one per Gateway listener,
	// carrying the listener's hostname and the host names the route
	// answers on it, except that the listeners without a hostname of a
	// service network make one per port.
	listeners []model.Listener
	// parents are the parentRefs that attached through this network.
	parents []*parentResult
}

// route is what the translator needs of a route of any kind.
type route struct {
	*metav1.ObjectMeta
	kind      gatewayv1.Kind
	spec      *gatewayv1.CommonRouteSpec
	hostnames []gatewayv1.Hostname
	// http, grpc and tls are the route, by its kind: what rules translates.
	http *gatewayv1.HTTPRoute
	grpc *gatewayv1.GRPCRoute
	tls  *gatewayv1.TLSRoute
}

// rules translates the route's rules.
func (t *translator) rules(r *route, src model.SourceRef) []model.Rule {
	switch {
	case r.http != nil:
		return t.httpRules(r, src, r.http.Spec.Rules)
	case r.grpc != nil:
		return t.grpcRules(r, src, r.grpc.Spec.Rules)
	}
	return t.tlsRules(r, src, r.tls.Spec.Rules)
}

// translateRoutes makes one model service per route and network it
// attaches to. Routes are met by kind (HTTPRoute, GRPCRoute, TLSRoute),
// then namespace and name, which decides who keeps a contested name. An
// Incremental that knows what changed translates only the routes that
// read it (patchRoutes).
func (t *translator) translateRoutes() {
	if t.inc != nil && t.inc.fast {
		t.patchRoutes()
		return
	}
	// One allocation for every route's record, not one (and a closure)
	// each.
	routes := make([]route, 0, len(t.in.HTTPRoutes)+len(t.in.GRPCRoutes)+len(t.in.TLSRoutes))
	for _, r := range sortedByName(t.in.HTTPRoutes, func(r *gatewayv1.HTTPRoute) (string, string) { return r.Namespace, r.Name }) {
		routes = append(routes, httpRoute(r))
	}
	for _, r := range sortedByName(t.in.GRPCRoutes, func(r *gatewayv1.GRPCRoute) (string, string) { return r.Namespace, r.Name }) {
		routes = append(routes, grpcRoute(r))
	}
	for _, r := range sortedByName(t.in.TLSRoutes, func(r *gatewayv1.TLSRoute) (string, string) { return r.Namespace, r.Name }) {
		routes = append(routes, tlsRoute(r))
	}
	t.out.Services = slices.Grow(t.out.Services, len(routes))
	t.out.Status.Routes = slices.Grow(t.out.Status.Routes, len(routes))
	for i := range routes {
		t.translateOne(&routes[i], nil)
	}
}

func httpRoute(r *gatewayv1.HTTPRoute) route {
	return route{ObjectMeta: &r.ObjectMeta, kind: kindHTTPRoute, spec: &r.Spec.CommonRouteSpec, hostnames: r.Spec.Hostnames, http: r}
}

func grpcRoute(r *gatewayv1.GRPCRoute) route {
	return route{ObjectMeta: &r.ObjectMeta, kind: kindGRPCRoute, spec: &r.Spec.CommonRouteSpec, hostnames: r.Spec.Hostnames, grpc: r}
}

func tlsRoute(r *gatewayv1.TLSRoute) route {
	return route{ObjectMeta: &r.ObjectMeta, kind: kindTLSRoute, spec: &r.Spec.CommonRouteSpec, hostnames: r.Spec.Hostnames, tls: r}
}

// translateOne translates route r (and records it for an Incremental,
// whose last record of it was old) and returns its record, if any.
func (t *translator) translateOne(r *route, old *record) *record {
	src := ref(string(r.kind), r.Namespace, r.Name)
	t.startRecord(src, old)
	services, statuses := len(t.out.Services), len(t.out.Status.Routes)
	t.cur = &routeState{src: src, generation: r.Generation}
	if t.translateRoute(r, src) {
		t.routeStatus(t.cur)
	}
	t.cur = nil
	return t.endRecord(src, services, statuses)
}

// translateRoute translates one route. It returns false when the route is
// not ours at all (it names only other implementations' parents).
func (t *translator) translateRoute(r *route, src model.SourceRef) bool {
	hostnames, hostsOK := t.routeHostnames(r, src)
	attached, ours := t.attach(r, src, hostnames)
	if !ours {
		return false
	}
	t.checkRouteLists(r, src)
	locality := t.routeLocality(r, src)
	if r.spec.UseDefaultGateways != "" && r.spec.UseDefaultGateways != gatewayv1.GatewayDefaultScopeNone {
		t.problem(src, "spec.useDefaultGateways", string(gatewayv1.RouteReasonUnsupportedValue), "default Gateways are not supported yet")
	}
	// An invalid hostname rejects the whole route: serving it without that
	// name could widen what it matches.
	if !hostsOK || len(attached) == 0 {
		// No service to make, but report the rules' problems too, so that
		// every problem shows at once.
		t.rules(r, src)
		return true
	}
	for _, a := range attached {
		source := src
		svc := model.Service{
			Meta:      model.Meta{Name: fmt.Sprintf("%s-%s.%s", r.Name, r.Namespace, a.gw.network), Owner: t.in.Cluster},
			Network:   a.gw.network,
			Listeners: a.listeners,
			Rules:     t.rules(r, src),
			CreatedAt: r.CreationTimestamp.UTC(),
			Source:    &source,
		}
		for i := range svc.Rules {
			svc.Rules[i].Locality = locality
		}
		if a.gw.mode == model.ModeServiceNetwork {
			svc.DNSName = generatedName(r.Name, r.Namespace, a.gw.domain)
			svc.CustomDomains, svc.Listeners = serviceNetworkNames(svc.DNSName, a.gw.domain, hostnames, a.listeners)
		}
		other, taken := t.holder(svc.Name)
		if t.rec != nil {
			t.rec.claims = append(t.rec.claims, claim{name: svc.Name})
		}
		if taken && other != src {
			a.reject(t.problem(src, "metadata.name", ReasonNameConflict,
				"service name %q is already used by %s %s/%s; rename one of them", svc.Name, other.Kind, other.Namespace, other.Name))
			continue
		}
		if !t.validService(&svc, src) {
			continue
		}
		t.serviceRoutes[svc.Name] = src
		if t.rec != nil {
			t.rec.claims[len(t.rec.claims)-1].took = true
		}
		if svc.DNSName != "" {
			t.cur.dnsNames = append(t.cur.dnsNames, svc.DNSName)
		}
		usedTargetGroups(svc.Rules, func(tg string) { t.tgsUsed[tg] = true })
		for _, l := range svc.Listeners {
			for _, c := range l.Certificates {
				t.certsUsed[c] = true
			}
		}
		t.out.Services = append(t.out.Services, svc)
	}
	return true
}

// reject marks every parentRef that attached through a as failed with p.
func (a *attachment) reject(p Problem) {
	for _, pr := range a.parents {
		if pr.failure == nil {
			pr.failure = &p
		}
	}
}

// validService validates svc. A rule that makes it invalid is dropped, and
// the route served without it, as long as one rule remains; otherwise the
// route is rejected. It reports false when svc cannot be served.
func (t *translator) validService(svc *model.Service, src model.SourceRef) bool {
	err := svc.Validate()
	if err == nil {
		return true
	}
	var fes model.FieldErrors
	bad := map[int]bool{}
	other := !errors.As(err, &fes)
	for _, fe := range fes {
		var i int
		if _, scanErr := fmt.Sscanf(fe.Field, "rules[%d]", &i); scanErr == nil {
			bad[i] = true
		} else {
			other = true
		}
	}
	before := len(t.cur.problems)
	t.invalid(src, err, serviceField)
	reason := func() Problem {
		if len(t.cur.problems) > before {
			return t.cur.problems[before]
		}
		return Problem{Object: src, Reason: string(gatewayv1.RouteReasonUnsupportedValue), Message: err.Error()}
	}
	if other || len(bad) == len(svc.Rules) {
		// Rules are the same on every parent, so the route is rejected on
		// all of them.
		p := reason()
		if t.cur.fatal == nil {
			t.cur.fatal = &p
		}
		return false
	}
	var kept []model.Rule
	for i, r := range svc.Rules {
		if bad[i] {
			if d := fmt.Sprintf("rules[%d]", i); !slices.Contains(t.cur.dropped, d) {
				t.cur.dropped = append(t.cur.dropped, d)
			}
			continue
		}
		kept = append(kept, r)
	}
	svc.Rules = kept
	return true
}

// routeHostnames returns the route's hostnames lower-cased, sorted and
// deduplicated, and false if any is invalid.
func (t *translator) routeHostnames(r *route, src model.SourceRef) ([]string, bool) {
	var out []string
	ok := true
	if r.kind == kindTLSRoute && len(r.hostnames) == 0 {
		// TLSRoute v1 requires them. A route made through v1alpha2,
		// which did not, still takes its listeners' host names.
		t.problem(src, "spec.hostnames", string(gatewayv1.RouteReasonUnsupportedValue), "a TLSRoute of gateway.networking.k8s.io/v1 needs at least one hostname")
	}
	for i, h := range r.hostnames {
		l := strings.ToLower(string(h))
		if !validHostname(l) {
			ok = false
			p := t.problem(src, fmt.Sprintf("spec.hostnames[%d]", i), string(gatewayv1.RouteReasonUnsupportedValue),
				"%q is not a valid host name or wildcard; the route is not accepted", h)
			if t.cur.fatal == nil {
				t.cur.fatal = &p
			}
			continue
		}
		out = append(out, l)
	}
	slices.Sort(out)
	return slices.Compact(out), ok
}

// attach resolves the route's parentRefs to networks, merging the parentRefs
// that reach the same Gateway. ours is false when every parentRef names
// something trellis does not implement (another class's Gateway, or a parent
// kind other than Gateway, such as a mesh Service): such routes are left
// alone without a problem, since they belong to someone else.
func (t *translator) attach(r *route, src model.SourceRef, hostnames []string) (attached []*attachment, ours bool) {
	if len(r.spec.ParentRefs) == 0 {
		t.problem(src, "spec.parentRefs", string(gatewayv1.RouteReasonNoMatchingParent), "the route names no parent Gateway")
		return nil, true
	}
	byNetwork := map[string]*attachment{}
	for i, pr := range r.spec.ParentRefs {
		if deref(pr.Group, gatewayGroup) != gatewayGroup || deref(pr.Kind, "Gateway") != "Gateway" {
			continue
		}
		key := types.NamespacedName{Namespace: string(deref(pr.Namespace, gatewayv1.Namespace(r.Namespace))), Name: string(pr.Name)}
		if t.foreign[key] {
			continue
		}
		ours = true
		field := fmt.Sprintf("spec.parentRefs[%d]", i)
		gw := t.gateways[key]
		res := &parentResult{index: i, ref: pr, controller: ServiceNetworkController}
		t.cur.parents = append(t.cur.parents, res)
		fail := func(reason, format string, args ...any) {
			p := t.problem(src, field, reason, format, args...)
			res.failure = &p
		}
		if gw == nil {
			// No Gateway, so no class says whose it is: trellis reports it
			// under its service-network controller name.
			fail(string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s not found", key)
			continue
		}
		res.controller = gw.controller
		if gw.notAccepted != "" {
			fail(string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s is not accepted: %s", key, gw.notAccepted)
			continue
		}
		if gw.unassigned != "" {
			fail(string(gatewayv1.RouteReasonPending), "Gateway %s is not programmed: %s", key, gw.unassigned)
			continue
		}
		a := byNetwork[gw.network]
		if a == nil {
			a = &attachment{gw: gw}
		}
		if p := t.attachParent(r, src, field, pr, gw, hostnames, a, res); p != nil {
			res.failure = p
			continue
		}
		a.parents = append(a.parents, res)
		if byNetwork[gw.network] == nil {
			byNetwork[gw.network] = a
			attached = append(attached, a)
		}
	}
	// A network reached only through listeners that serve nothing gets no
	// service.
	attached = slices.DeleteFunc(attached, func(a *attachment) bool { return len(a.listeners) == 0 })
	for _, a := range attached {
		slices.SortFunc(a.listeners, func(x, y model.Listener) int {
			return cmp.Or(cmp.Compare(x.Port, y.Port), cmp.Compare(x.Hostname, y.Hostname))
		})
	}
	return attached, ours
}

// attachParent attaches the route to the listeners of gw that parentRef pr
// selects, adding them to a and res. It returns the problem when no listener
// accepts the route.
func (t *translator) attachParent(r *route, src model.SourceRef, field string, pr gatewayv1.ParentReference,
	gw *gatewayInfo, hostnames []string, a *attachment, res *parentResult) *Problem {
	key := types.NamespacedName{Namespace: gw.gw.Namespace, Name: gw.gw.Name}
	var selected, usable, allowed int
	for i := range gw.listeners {
		l := &gw.listeners[i]
		if pr.SectionName != nil && *pr.SectionName != l.spec.Name || pr.Port != nil && *pr.Port != l.spec.Port {
			continue
		}
		selected++
		// A listener whose references do not resolve is still accepted:
		// routes attach to it and count in its attachedRoutes, as the
		// Gateway API requires, but it serves nothing.
		unresolvedOnly := !l.usable && len(l.notAccepted) == 0 && l.conflict == nil
		if !l.usable && !unresolvedOnly {
			continue
		}
		usable++
		if !l.admits(r.kind) || !t.allowsNamespace(l, gw.gw.Namespace, r.Namespace) {
			continue
		}
		allowed++
		hosts, anyHost, ok := listenerHosts(l.hostname, hostnames)
		if !ok {
			continue
		}
		res.listeners = append(res.listeners, l)
		if unresolvedOnly {
			continue
		}
		// Each listener keeps its own hostname and the route's names on it,
		// so that a name is served only where it attached. A service-network
		// listener without a hostname leaves its names to the service
		// (serviceNetworkNames).
		ml := model.Listener{Name: string(l.spec.Name), Port: l.spec.Port, Protocol: l.protocol, Certificates: l.certificates, Hostname: l.hostname}
		if !anyHost && (gw.mode == model.ModeEdge || l.hostname != "") {
			ml.Hostnames = hosts
		}
		if !slices.ContainsFunc(a.listeners, func(o model.Listener) bool { return o.Port == ml.Port && o.Hostname == ml.Hostname }) {
			a.listeners = append(a.listeners, ml)
		}
	}
	var p Problem
	switch {
	case len(res.listeners) > 0:
		return nil
	case selected == 0:
		p = t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s has no listener%s", key, describeSection(pr))
	case usable == 0:
		p = t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent),
			"Gateway %s has no valid listener%s (see the Gateway's problems)", key, describeSection(pr))
	case allowed == 0:
		p = t.problem(src, field, string(gatewayv1.RouteReasonNotAllowedByListeners),
			"no listener of Gateway %s%s allows %ss from namespace %q", key, describeSection(pr), r.kind, r.Namespace)
	default:
		p = t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingListenerHostname),
			"no hostname of the route matches a listener hostname of Gateway %s%s", key, describeSection(pr))
	}
	return &p
}

// describeSection names the listener a parentRef selects, for messages.
func describeSection(pr gatewayv1.ParentReference) string {
	var s string
	if pr.SectionName != nil {
		s += fmt.Sprintf(" named %q", *pr.SectionName)
	}
	if pr.Port != nil {
		s += fmt.Sprintf(" on port %d", *pr.Port)
	}
	return s
}

// allowsNamespace reports whether listener l of a Gateway in gwNamespace
// admits a route in routeNamespace.
func (t *translator) allowsNamespace(l *listenerInfo, gwNamespace, routeNamespace string) bool {
	switch l.from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return gwNamespace == routeNamespace
	case gatewayv1.NamespacesFromSelector:
		ns := t.namespaces[routeNamespace]
		return ns != nil && l.selector != nil && l.selector.Matches(labels.Set(ns.Labels))
	}
	return false
}

// listenerHosts returns the host names a route with the given hostnames
// answers on a listener: they are intersected with the listener hostname.
// anyHost is true when neither names a host, and ok is false when they do
// not intersect. A route without hostnames takes the listener's.
func listenerHosts(listener string, hostnames []string) (hosts []string, anyHost, ok bool) {
	if len(hostnames) == 0 {
		if listener == "" {
			return nil, true, true
		}
		return []string{listener}, false, true
	}
	for _, h := range hostnames {
		if host, ok := intersect(listener, h); ok {
			hosts = append(hosts, host)
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	return hosts, false, len(hosts) > 0
}

// maxLabel is the longest DNS label.
const maxLabel = 63

// generatedName is the DNS name of route namespace/name in the service
// network of domain: "<name>-<namespace>.<domain>". A first label longer
// than a DNS label may be (Kubernetes names may be longer) is cut to 54
// characters and ended with "-" and 8 hex digits of the SHA-256 of
// "namespace/name", so that it stays valid, stable and distinct.
func generatedName(name, namespace, domain string) string {
	label := name + "-" + namespace
	if len(label) > maxLabel {
		sum := sha256.Sum256([]byte(namespace + "/" + name))
		label = strings.TrimRight(label[:maxLabel-9], "-.") + "-" + hex.EncodeToString(sum[:4])
	}
	return label + "." + domain
}

// serviceNetworkNames returns the custom domains and listeners of a
// service-network service whose generated name is dnsName, attached to a
// network whose domain is domain through listeners, with the route's
// hostnames.
//
// A route without hostnames answers on the network's domain too: that
// domain is the Gateway's address (status.addresses), and a Gateway API
// route without hostnames takes every request sent there.
//
// Through listeners without a hostname (the usual case) the service
// answers on its generated name and its custom domains (the route's
// hostnames), and its listeners name no hosts of their own. Once a listener
// with a hostname is involved, every listener lists its names, so that a
// name attached through one listener is never served on another, as in
// edge mode: a listener with a hostname answers the route's hostnames
// intersected with it (listenerHosts), one without answers the generated
// name and the route's hostnames. The generated name stays reachable on
// every port: a port the route reaches only through listeners with
// hostnames gets one more listener, without a hostname, for the generated
// name alone. The custom domains are then every name served besides it.
func serviceNetworkNames(dnsName, domain string, hostnames []string, listeners []model.Listener) ([]string, []model.Listener) {
	own := hostnames
	if len(own) == 0 {
		own = []string{domain}
	}
	if !slices.ContainsFunc(listeners, func(l model.Listener) bool { return l.Hostname != "" }) {
		return slices.Clone(own), listeners
	}
	var out []model.Listener
	var custom []string
	for i, l := range listeners {
		if l.Hostname == "" {
			l.Hostnames = append([]string{dnsName}, own...)
		} else if i == 0 || listeners[i-1].Port != l.Port {
			// The listeners are sorted by port, then hostname, so a port
			// whose first listener has a hostname has none without.
			names := model.Listener{Name: l.Name, Port: l.Port, Protocol: l.Protocol, Hostnames: []string{dnsName}}
			for _, o := range listeners[i:] {
				if o.Port == l.Port {
					names.Certificates = append(names.Certificates, o.Certificates...)
				}
			}
			slices.Sort(names.Certificates)
			names.Certificates = slices.Compact(names.Certificates)
			out = append(out, names)
		}
		out = append(out, l)
		for _, h := range l.Hostnames {
			if h != dnsName {
				custom = append(custom, h)
			}
		}
	}
	slices.Sort(custom)
	return slices.Compact(custom), out
}

// serviceField maps a model Service field to the route field it was
// translated from. Backends are made one per backendRef and rules one per
// rule, so their indexes carry over.
func serviceField(f string) string {
	switch {
	case strings.HasPrefix(f, "rules["):
		return "spec." + ruleField(strings.Replace(f, ".action.forward.backends[", ".backendRefs[", 1))
	case f == "name" || f == "dnsName":
		return "metadata.name"
	case strings.HasPrefix(f, "customDomains"):
		return "spec.hostnames"
	case strings.HasPrefix(f, "listeners"):
		return "spec.parentRefs"
	}
	return ""
}

// LocalityAnnotation on an HTTPRoute, GRPCRoute or TLSRoute says how its
// ServiceImport backends choose a cluster: "local-first" keeps requests on
// the proxy's own cluster's endpoints while any is healthy, overflowing to
// the other exporting clusters (by the import's cluster weights among
// them) only when none is; "spread", the default, picks every exporting
// cluster's endpoints by the weights alone.
const LocalityAnnotation = "trellis.dev/locality"

// routeLocality reads r's LocalityAnnotation. A value it does not know is
// reported on the annotation, and the route served with the default.
func (t *translator) routeLocality(r *route, src model.SourceRef) model.Locality {
	v, ok := r.Annotations[LocalityAnnotation]
	if !ok {
		return ""
	}
	switch v {
	case "local-first":
		return model.LocalityLocalFirst
	case "spread":
		return ""
	}
	t.problem(src, "metadata.annotations["+LocalityAnnotation+"]", string(gatewayv1.RouteReasonUnsupportedValue),
		"%q is not a locality: local-first or spread; the route spreads over every cluster", v)
	return ""
}
