package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/model"
)

// targetGroupEntry is a target group made for one Service port.
type targetGroupEntry struct {
	svc  types.NamespacedName
	port int32
	// tg is nil when the target group failed validation.
	tg *model.TargetGroup
}

// backend translates one backendRef to a weighted target group. An invalid
// reference becomes a backend with no target group, whose share of requests
// the proxy answers with 500, as the Gateway API requires.
func (t *translator) backend(r *route, src model.SourceRef, p string, b *gatewayv1.HTTPBackendRef) model.WeightedTargetGroup {
	out := model.WeightedTargetGroup{Weight: deref(b.Weight, 1)}
	fail := func(field string, reason gatewayv1.RouteConditionReason, format string, args ...any) model.WeightedTargetGroup {
		t.problem(src, p+field, string(reason), format, args...)
		return out
	}
	filters, ok := t.filters(r, src, p+".filters", b.Filters)
	if !ok {
		return out // a filter that cannot be honoured: this backend's share answers 500
	}
	out.Filters = filters
	switch g, k := deref(b.Group, ""), deref(b.Kind, "Service"); {
	case g == mcsv1beta1.GroupName && k == kindServiceImport:
		return t.importBackend(r, src, p, b, out)
	case (g != "" && g != "core") || k != "Service":
		return fail(".kind", gatewayv1.RouteReasonInvalidKind, "backend kind %s is not supported; only Service and %s are",
			groupKind(g, k), groupKind(mcsv1beta1.GroupName, kindServiceImport))
	}
	ns := string(deref(b.Namespace, gatewayv1.Namespace(r.Namespace)))
	key := types.NamespacedName{Namespace: ns, Name: string(b.Name)}
	t.read(dep{"Service", key.Namespace, key.Name})
	t.read(dep{depSlices, key.Namespace, key.Name})
	if ns != r.Namespace && !t.granted(r.kind, r.Namespace, "", "Service", key) {
		return fail(".namespace", gatewayv1.RouteReasonRefNotPermitted,
			"Service %s is in another namespace and no ReferenceGrant there allows %ss from namespace %q to use it", key, r.kind, r.Namespace)
	}
	if b.Port == nil {
		return fail(".port", gatewayv1.RouteReasonUnsupportedValue, "port is required when referring to a Service")
	}
	svc := t.kubeService(key)
	if svc == nil {
		return fail(".name", gatewayv1.RouteReasonBackendNotFound, "Service %s not found", key)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return fail(".name", gatewayv1.RouteReasonUnsupportedValue, "Service %s is of type ExternalName, which is not supported", key)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == *b.Port })
	if i < 0 {
		return fail(".port", gatewayv1.RouteReasonBackendNotFound, "Service %s has no port %d", key, *b.Port)
	}
	sp := &svc.Spec.Ports[i]
	protocol, version, suffix, err := backendProtocol(r.kind, sp.Protocol, sp.AppProtocol)
	if err != nil {
		return fail(".port", gatewayv1.RouteReasonUnsupportedProtocol, "Service %s port %d %v", key, sp.Port, err)
	}
	name := fmt.Sprintf("%s-%s-%d%s", svc.Name, svc.Namespace, sp.Port, suffix)
	e := t.tgEntry(name)
	var created *targetGroupEntry
	if e == nil {
		e = &targetGroupEntry{svc: key, port: sp.Port, tg: t.targetGroup(name, svc, sp, protocol, version)}
		t.tgs[name] = e
		created = e
		if t.inc != nil {
			t.inc.changed[model.Key(model.KindTargetGroup, name)] = true
		}
	}
	if t.rec != nil {
		t.rec.tgs = append(t.rec.tgs, tgUse{name: name, created: created, svc: e.svc, port: e.port, valid: e.tg != nil})
	}
	if e.svc != key || e.port != sp.Port {
		return fail("", ReasonNameConflict, "target group name %q is already used by Service %s port %d; rename one of the Services", name, e.svc, e.port)
	}
	if e.tg == nil {
		return fail("", gatewayv1.RouteReasonBackendNotFound, "Service %s port %d does not translate to a valid target group (see the Service's problems)", key, sp.Port)
	}
	out.TargetGroup = name
	return out
}

// groupKind formats a group and kind as the Gateway API writes them.
func groupKind(group gatewayv1.Group, kind gatewayv1.Kind) string {
	if group == "" {
		return string(kind)
	}
	return string(kind) + "." + string(group)
}

// backendProtocol chooses how the proxy speaks to the targets of a port of
// protocol (TCP when empty) and appProtocol, for a route of kind kind, and
// the suffix that tells a Service port's target groups of each flavour
// apart. The error says why the port cannot serve the route.
func backendProtocol(kind gatewayv1.Kind, protocol corev1.Protocol, appProtocolRef *string) (model.Protocol, model.ProtocolVersion, string, error) {
	if protocol != "" && protocol != corev1.ProtocolTCP {
		return "", "", "", fmt.Errorf("is %s; %ss need TCP", protocol, kind)
	}
	appProtocol := deref(appProtocolRef, "")
	switch kind {
	case kindTLSRoute:
		// The proxy splices the TLS stream through; what the target
		// speaks inside it is its own business.
		return model.ProtocolTCP, model.HTTP1, "-tls", nil
	case kindGRPCRoute:
		// A Service used by HTTPRoutes too gets a target group of each
		// flavour.
		switch appProtocol {
		case "", "grpc", "kubernetes.io/h2c":
			return model.ProtocolHTTP, model.GRPC, "-grpc", nil
		}
		return "", "", "", fmt.Errorf("has appProtocol %q; gRPC needs none, grpc or kubernetes.io/h2c", appProtocol)
	}
	version, ok := protocolVersion(appProtocol)
	if !ok {
		return "", "", "", fmt.Errorf("has appProtocol %q, which is not supported", appProtocol)
	}
	return model.ProtocolHTTP, version, "", nil
}

// protocolVersion maps a Service port's appProtocol to the HTTP version the
// proxy speaks to its targets.
func protocolVersion(appProtocol string) (model.ProtocolVersion, bool) {
	switch appProtocol {
	case "", "http", "kubernetes.io/ws":
		return model.HTTP1, true
	case "kubernetes.io/h2c":
		return model.HTTP2, true
	case "grpc":
		return model.GRPC, true
	}
	return "", false
}

// targetGroup makes the target group of one Service port from the Service's
// EndpointSlices, or returns nil (with problems) if it is invalid.
func (t *translator) targetGroup(name string, svc *corev1.Service, sp *corev1.ServicePort, protocol model.Protocol, version model.ProtocolVersion) *model.TargetGroup {
	src := ref("Service", svc.Namespace, svc.Name)
	tg := &model.TargetGroup{
		Meta:            model.Meta{Name: name, Owner: t.in.Cluster},
		Protocol:        protocol,
		ProtocolVersion: version,
		Source:          &src,
	}
	if p := t.tgPolicies[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]; p != nil {
		tg.HealthCheck = p.hc
	}
	set := TargetSet{}
	for _, es := range t.slicesOf(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}) {
		esSrc := ref("EndpointSlice", es.Namespace, es.Name)
		port, ok := t.slicePort(es, esSrc, sp)
		if !ok {
			continue
		}
		set.AddSlice(es, port, func(field, addr string) {
			t.problem(esSrc, field, string(gatewayv1.RouteReasonUnsupportedValue), "%q is not an IP address", addr)
		})
	}
	tg.Targets = set.Targets(t.in.Cluster)
	if err := tg.Validate(); err != nil {
		t.invalid(src, err, func(f string) string {
			if f == "name" {
				return "metadata.name"
			}
			return ""
		})
		return nil
	}
	return tg
}

// slicePort returns the port number an EndpointSlice gives the Service port
// sp, matched by name (an unnamed Service port matches the unnamed slice
// port). ok is false when the slice does not carry the port or cannot be used.
func (t *translator) slicePort(es *discoveryv1.EndpointSlice, esSrc model.SourceRef, sp *corev1.ServicePort) (int32, bool) {
	if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
		t.problem(esSrc, "addressType", string(gatewayv1.RouteReasonUnsupportedValue), "address type %q is not supported; only IPv4 and IPv6 are", es.AddressType)
		return 0, false
	}
	for k, p := range es.Ports {
		if deref(p.Name, "") != sp.Name || deref(p.Protocol, corev1.ProtocolTCP) != cmp.Or(sp.Protocol, corev1.ProtocolTCP) {
			continue
		}
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			t.problem(esSrc, fmt.Sprintf("ports[%d].port", k), string(gatewayv1.RouteReasonUnsupportedValue), "a port in 1-65535 is required")
			return 0, false
		}
		return *p.Port, true
	}
	return 0, false
}

// TargetSet gathers the targets of one Service port from its EndpointSlices:
// one per address and port, active when any endpoint at it is. The zero
// value is not usable; make one with TargetSet{}.
type TargetSet map[endpoint]model.TargetState

type endpoint struct {
	addr netip.Addr
	port int32
}

// AddSlice adds every address of es's usable endpoints (targetState) at
// port. An address that is not an IP is left out; bad, when not nil, hears
// of it with its field path in the slice.
func (s TargetSet) AddSlice(es *discoveryv1.EndpointSlice, port int32, bad func(field, addr string)) {
	for i, ep := range es.Endpoints {
		state, ok := targetState(ep.Conditions)
		if !ok {
			continue
		}
		for j, a := range ep.Addresses {
			addr, err := netip.ParseAddr(a)
			if err != nil || addr.Zone() != "" {
				if bad != nil {
					bad(fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), a)
				}
				continue
			}
			k := endpoint{addr.Unmap(), port}
			if s[k] != model.TargetActive {
				s[k] = state
			}
		}
	}
}

// Targets are the set's targets in cluster, by address then port; nil when
// there are none.
func (s TargetSet) Targets(cluster string) []model.Target {
	var targets []model.Target
	for k, state := range s {
		targets = append(targets, model.Target{Address: k.addr.String(), Port: k.port, Cluster: cluster, State: state})
	}
	slices.SortFunc(targets, func(a, b model.Target) int {
		return cmp.Or(netip.MustParseAddr(a.Address).Compare(netip.MustParseAddr(b.Address)), cmp.Compare(a.Port, b.Port))
	})
	return targets
}

// targetState maps EndpointSlice conditions to a target state. Ready
// endpoints (an unset ready counts as ready) are active; endpoints that are
// terminating but still serving drain, so rolling updates do not drop
// requests; the rest are left out.
func targetState(c discoveryv1.EndpointConditions) (model.TargetState, bool) {
	switch {
	case deref(c.Ready, true):
		return model.TargetActive, true
	case deref(c.Serving, false) && deref(c.Terminating, false):
		return model.TargetDraining, true
	}
	return "", false
}

// granted reports whether a ReferenceGrant in the target's namespace lets
// objects of fromKind (in the Gateway API group) in fromNamespace refer to
// the object of toGroup and toKind named target.
func (t *translator) granted(fromKind gatewayv1.Kind, fromNamespace string, toGroup gatewayv1.Group, toKind gatewayv1.Kind, target types.NamespacedName) bool {
	switch {
	case t.rec != nil:
		t.read(dep{depGrants, target.Namespace, ""})
	case t.inc != nil:
		t.inc.gatewayGrants[target.Namespace] = true
	}
	for _, g := range t.grants[target.Namespace] {
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == gatewayGroup && f.Kind == fromKind && string(f.Namespace) == fromNamespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(to gatewayv1.ReferenceGrantTo) bool {
			return normalGroup(to.Group) == normalGroup(toGroup) && to.Kind == toKind && (to.Name == nil || string(*to.Name) == target.Name)
		})
		if from && to {
			return true
		}
	}
	return false
}

// normalGroup maps the core group's two spellings ("" and "core") to "".
func normalGroup(g gatewayv1.Group) gatewayv1.Group {
	if g == "core" {
		return ""
	}
	return g
}
