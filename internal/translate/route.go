package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// attachment is where a route serves in one network: the listeners it
// attached to and the host names it answers on them.
type attachment struct {
	gw        *gatewayInfo
	listeners []model.Listener
	// hosts are the custom domains; anyHost means every Host matches (an
	// edge listener and route that both name no host).
	hosts   []string
	anyHost bool
}

// translateRoutes makes one model service per route and network it attaches to.
func (t *translator) translateRoutes() {
	for _, r := range sortedByName(t.in.HTTPRoutes, func(r *gatewayv1.HTTPRoute) (string, string) { return r.Namespace, r.Name }) {
		t.httpRoute(r)
	}
}

func (t *translator) httpRoute(r *gatewayv1.HTTPRoute) {
	src := ref("HTTPRoute", r.Namespace, r.Name)
	hostnames, hostsOK := t.routeHostnames(r, src)
	attached, ours := t.attach(r, src, hostnames)
	if !ours {
		return // attached only to other implementations' parents
	}
	if r.Spec.UseDefaultGateways != "" && r.Spec.UseDefaultGateways != gatewayv1.GatewayDefaultScopeNone {
		t.problem(src, "spec.useDefaultGateways", string(gatewayv1.RouteReasonUnsupportedValue), "default Gateways are not supported yet")
	}
	// An invalid hostname rejects the whole route: serving it without that
	// name could widen what it matches.
	if !hostsOK || len(attached) == 0 {
		// No service to make, but report the rules' problems too, so that
		// every problem shows at once.
		t.rules(r, src)
		return
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
		if a.gw.mode == model.ModeServiceNetwork {
			svc.DNSName = fmt.Sprintf("%s-%s.%s.%s", r.Name, r.Namespace, a.gw.network, DomainSuffix)
			svc.CustomDomains = slices.Clone(hostnames)
		} else if !a.anyHost {
			svc.CustomDomains = a.hosts
		}
		key := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
		if other, taken := t.serviceRoutes[svc.Name]; taken && other != key {
			t.problem(src, "metadata.name", ReasonNameConflict,
				"service name %q is already used by HTTPRoute %s; rename one of them", svc.Name, other)
			continue
		}
		if err := svc.Validate(); err != nil {
			t.invalid(src, err, serviceField)
			continue
		}
		t.serviceRoutes[svc.Name] = key
		for _, rule := range svc.Rules {
			if rule.Action.Forward != nil {
				for _, b := range rule.Action.Forward.Backends {
					if b.TargetGroup != "" {
						t.tgsUsed[b.TargetGroup] = true
					}
				}
			}
		}
		t.out.Services = append(t.out.Services, svc)
	}
}

// routeHostnames returns the route's hostnames lower-cased, sorted and
// deduplicated, and false if any is invalid.
func (t *translator) routeHostnames(r *gatewayv1.HTTPRoute, src model.SourceRef) ([]string, bool) {
	var out []string
	ok := true
	for i, h := range r.Spec.Hostnames {
		l := strings.ToLower(string(h))
		if !validHostname(l) {
			ok = false
			t.problem(src, fmt.Sprintf("spec.hostnames[%d]", i), string(gatewayv1.RouteReasonUnsupportedValue),
				"%q is not a valid host name or wildcard; the route is not accepted", h)
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
func (t *translator) attach(r *gatewayv1.HTTPRoute, src model.SourceRef, hostnames []string) (attached []*attachment, ours bool) {
	if len(r.Spec.ParentRefs) == 0 {
		t.problem(src, "spec.parentRefs", string(gatewayv1.RouteReasonNoMatchingParent), "the route names no parent Gateway")
		return nil, true
	}
	byNetwork := map[string]*attachment{}
	for i, pr := range r.Spec.ParentRefs {
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
		if gw == nil {
			t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s not found", key)
			continue
		}
		if gw.notAccepted != "" {
			t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s is not accepted: %s", key, gw.notAccepted)
			continue
		}
		a := byNetwork[gw.network]
		if a == nil {
			a = &attachment{gw: gw}
		}
		if !t.attachParent(r, src, field, pr, gw, hostnames, a) {
			continue
		}
		if byNetwork[gw.network] == nil {
			byNetwork[gw.network] = a
			attached = append(attached, a)
		}
	}
	for _, a := range attached {
		slices.SortFunc(a.listeners, func(x, y model.Listener) int { return cmp.Compare(x.Port, y.Port) })
		slices.Sort(a.hosts)
		a.hosts = slices.Compact(a.hosts)
	}
	return attached, ours
}

// attachParent attaches the route to the listeners of gw that parentRef pr
// selects, adding them to a. It reports why when none accepts the route.
func (t *translator) attachParent(r *gatewayv1.HTTPRoute, src model.SourceRef, field string, pr gatewayv1.ParentReference,
	gw *gatewayInfo, hostnames []string, a *attachment) bool {
	key := types.NamespacedName{Namespace: gw.gw.Namespace, Name: gw.gw.Name}
	var selected, usable, allowed int
	attached := false
	for _, l := range gw.listeners {
		if pr.SectionName != nil && *pr.SectionName != l.spec.Name || pr.Port != nil && *pr.Port != l.spec.Port {
			continue
		}
		selected++
		if !l.usable {
			continue
		}
		usable++
		if !l.allowsHTTPRoute || !allowsNamespace(l.from, gw.gw.Namespace, r.Namespace) {
			continue
		}
		allowed++
		hosts, anyHost, ok := listenerHosts(gw.mode, l.hostname, hostnames)
		if !ok {
			continue
		}
		attached = true
		a.hosts = append(a.hosts, hosts...)
		a.anyHost = a.anyHost || anyHost
		if !slices.ContainsFunc(a.listeners, func(ml model.Listener) bool { return ml.Port == l.spec.Port }) {
			a.listeners = append(a.listeners, model.Listener{Name: string(l.spec.Name), Port: l.spec.Port, Protocol: model.ProtocolHTTP})
		}
	}
	switch {
	case attached:
	case selected == 0:
		t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent), "Gateway %s has no listener%s", key, describeSection(pr))
	case usable == 0:
		t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingParent),
			"Gateway %s has no valid listener%s (see the Gateway's problems)", key, describeSection(pr))
	case allowed == 0:
		t.problem(src, field, string(gatewayv1.RouteReasonNotAllowedByListeners),
			"no listener of Gateway %s%s allows HTTPRoutes from namespace %q", key, describeSection(pr), r.Namespace)
	default:
		t.problem(src, field, string(gatewayv1.RouteReasonNoMatchingListenerHostname),
			"no hostname of the route matches a listener hostname of Gateway %s%s", key, describeSection(pr))
	}
	return attached
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

// allowsNamespace reports whether a listener admitting routes from `from`
// on a Gateway in gwNamespace admits a route in routeNamespace.
func allowsNamespace(from gatewayv1.FromNamespaces, gwNamespace, routeNamespace string) bool {
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return gwNamespace == routeNamespace
	}
	return false
}

// listenerHosts returns the host names a route with the given hostnames
// answers on a listener. In service-network mode hostnames are custom
// domains, not a filter, so every route matches. In edge mode they are
// intersected with the listener hostname; anyHost is true when neither names
// a host, and ok is false when they do not intersect.
func listenerHosts(mode model.NetworkMode, listener string, hostnames []string) (hosts []string, anyHost, ok bool) {
	if mode == model.ModeServiceNetwork {
		return nil, false, true
	}
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
	return hosts, false, len(hosts) > 0
}

// serviceField maps a model Service field to the HTTPRoute field it was
// translated from. Backends are made one per backendRef and rules one per
// rule, so their indexes carry over.
func serviceField(f string) string {
	switch {
	case strings.HasPrefix(f, "rules["):
		return "spec." + strings.Replace(f, ".action.forward.backends[", ".backendRefs[", 1)
	case f == "name" || f == "dnsName":
		return "metadata.name"
	case strings.HasPrefix(f, "customDomains"):
		return "spec.hostnames"
	case strings.HasPrefix(f, "listeners"):
		return "spec.parentRefs"
	}
	return ""
}
