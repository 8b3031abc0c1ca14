package translate

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// gatewayInfo is one Gateway of our classes.
type gatewayInfo struct {
	gw   *gatewayv1.Gateway
	mode model.NetworkMode
	// network is the network the Gateway makes; empty when notAccepted.
	network string
	// notAccepted says why routes cannot attach; empty when they can.
	notAccepted string
	listeners   []listenerInfo
}

// listenerInfo is one listener of a Gateway, checked.
type listenerInfo struct {
	spec *gatewayv1.Listener
	// usable is false when the listener is invalid or unsupported; the
	// Gateway's problems say why.
	usable bool
	from   gatewayv1.FromNamespaces
	// allowsHTTPRoute is false when allowedRoutes.kinds leaves HTTPRoute out.
	allowsHTTPRoute bool
	// hostname is lower-cased; empty matches any host.
	hostname string
}

const gatewayGroup = gatewayv1.Group(gatewayv1.GroupName)

// translateClasses indexes the GatewayClasses that name one of our controllers.
func (t *translator) translateClasses() {
	for _, gc := range sortedByName(t.in.GatewayClasses, func(c *gatewayv1.GatewayClass) (string, string) { return "", c.Name }) {
		if t.classes[gc.Name] != nil {
			continue
		}
		var mode model.NetworkMode
		switch gc.Spec.ControllerName {
		case ServiceNetworkController:
			mode = model.ModeServiceNetwork
		case EdgeController:
			mode = model.ModeEdge
		default:
			continue
		}
		info := &classInfo{mode: mode}
		if gc.Spec.ParametersRef != nil {
			info.rejected = "its parametersRef is not supported"
			t.problem(ref("GatewayClass", "", gc.Name), "spec.parametersRef", string(gatewayv1.GatewayClassReasonInvalidParameters),
				"parameters are not supported; the GatewayClass is not accepted")
		}
		t.classes[gc.Name] = info
	}
}

// translateGateways checks the Gateways of our classes and makes a network of each
// accepted one. Gateways of other classes are left alone.
func (t *translator) translateGateways() {
	for _, gw := range sortedByName(t.in.Gateways, func(g *gatewayv1.Gateway) (string, string) { return g.Namespace, g.Name }) {
		key := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		if t.gateways[key] != nil || t.foreign[key] {
			continue
		}
		src := ref("Gateway", gw.Namespace, gw.Name)
		class, ok := t.classes[string(gw.Spec.GatewayClassName)]
		if !ok {
			t.foreign[key] = true
			if !t.classExists(string(gw.Spec.GatewayClassName)) {
				// Nobody will program this Gateway; say so, since a typo in
				// the class name is the likely cause.
				t.problem(src, "spec.gatewayClassName", string(gatewayv1.GatewayReasonPending),
					"GatewayClass %q not found; no controller will program this Gateway", gw.Spec.GatewayClassName)
			}
			continue
		}
		info := &gatewayInfo{gw: gw, mode: class.mode}
		t.gateways[key] = info
		info.listeners = t.listeners(gw, src, class.mode)
		unsupported := t.unsupportedGatewayFields(gw, src)
		switch {
		case class.rejected != "":
			info.notAccepted = fmt.Sprintf("its GatewayClass %q is not accepted: %s", gw.Spec.GatewayClassName, class.rejected)
			continue
		case unsupported != "":
			info.notAccepted = unsupported
			continue
		}
		n := model.ServiceNetwork{
			Meta:   model.Meta{Name: gw.Name, Owner: t.in.Cluster},
			Mode:   class.mode,
			Source: &src,
		}
		if class.mode == model.ModeServiceNetwork {
			n.Domain = gw.Name + "." + DomainSuffix
		} else {
			n.Name = gw.Name + "-" + gw.Namespace
		}
		if other, taken := t.networks[n.Name]; taken {
			info.notAccepted = fmt.Sprintf("its network name %q is already used by Gateway %s", n.Name, other)
			t.problem(src, "metadata.name", ReasonNameConflict,
				"network %q is already made by Gateway %s; this Gateway is not accepted", n.Name, other)
			continue
		}
		if err := n.Validate(); err != nil {
			info.notAccepted = "it translates to an invalid network"
			t.invalid(src, err, func(string) string { return "metadata.name" })
			continue
		}
		t.networks[n.Name] = key
		info.network = n.Name
		t.out.Networks = append(t.out.Networks, n)
	}
}

func (t *translator) classExists(name string) bool {
	for i := range t.in.GatewayClasses {
		if t.in.GatewayClasses[i].Name == name {
			return true
		}
	}
	return false
}

// unsupportedGatewayFields reports the Gateway-level fields trellis does not
// implement yet. Each would change where or how the Gateway is served, so a
// Gateway that sets one is not accepted rather than served differently from
// what it asks. It returns why, or "" when none is set.
func (t *translator) unsupportedGatewayFields(gw *gatewayv1.Gateway, src model.SourceRef) string {
	var bad []string
	report := func(field, reason, format string, args ...any) {
		bad = append(bad, field)
		t.problem(src, field, reason, format, args...)
	}
	if len(gw.Spec.Addresses) > 0 {
		report("spec.addresses", string(gatewayv1.GatewayReasonUnsupportedAddress), "requested addresses are not supported yet")
	}
	if gw.Spec.Infrastructure != nil {
		report("spec.infrastructure", string(gatewayv1.GatewayReasonInvalidParameters), "infrastructure is not supported yet")
	}
	if gw.Spec.AllowedListeners != nil {
		report("spec.allowedListeners", string(gatewayv1.RouteReasonUnsupportedValue), "ListenerSets are not supported yet")
	}
	if gw.Spec.TLS != nil {
		report("spec.tls", string(gatewayv1.RouteReasonUnsupportedValue), "Gateway TLS settings are not supported yet")
	}
	if gw.Spec.DefaultScope != "" && gw.Spec.DefaultScope != gatewayv1.GatewayDefaultScopeNone {
		report("spec.defaultScope", string(gatewayv1.RouteReasonUnsupportedValue), "default Gateways are not supported yet")
	}
	if len(bad) == 0 {
		return ""
	}
	return "it sets unsupported fields: " + strings.Join(bad, ", ")
}

// listeners checks every listener of gw. An invalid or unsupported listener is
// reported and left unusable; the others still serve.
func (t *translator) listeners(gw *gatewayv1.Gateway, src model.SourceRef, mode model.NetworkMode) []listenerInfo {
	if len(gw.Spec.Listeners) == 0 {
		t.problem(src, "spec.listeners", string(gatewayv1.RouteReasonUnsupportedValue), "at least one listener is required")
	}
	out := make([]listenerInfo, len(gw.Spec.Listeners))
	names := map[gatewayv1.SectionName]int{}
	type portHost struct {
		port int32
		host string
	}
	taken := map[portHost]int{}
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		p := fmt.Sprintf("spec.listeners[%d]", i)
		li := listenerInfo{spec: l, usable: true, allowsHTTPRoute: true, from: gatewayv1.NamespacesFromSame}
		fail := func(field, reason, format string, args ...any) {
			li.usable = false
			t.problem(src, p+field, reason, format, args...)
		}
		if j, dup := names[l.Name]; dup {
			fail(".name", string(gatewayv1.RouteReasonUnsupportedValue), "listener name %q is already used by spec.listeners[%d]", l.Name, j)
		} else {
			names[l.Name] = i
		}
		if l.Protocol != gatewayv1.HTTPProtocolType {
			fail(".protocol", string(gatewayv1.ListenerReasonUnsupportedProtocol), "protocol %q is not supported yet; only HTTP is", l.Protocol)
		}
		if l.Port < 1 || l.Port > 65535 {
			fail(".port", string(gatewayv1.RouteReasonUnsupportedValue), "%d is not in 1-65535", l.Port)
		}
		if l.TLS != nil && l.Protocol == gatewayv1.HTTPProtocolType {
			fail(".tls", string(gatewayv1.RouteReasonUnsupportedValue), "tls must not be set on an HTTP listener")
		}
		if l.Hostname != nil {
			h := strings.ToLower(string(*l.Hostname))
			switch {
			case mode == model.ModeServiceNetwork:
				fail(".hostname", string(gatewayv1.RouteReasonUnsupportedValue),
					"a service-network listener takes no hostname: every route is reachable by its generated name and its own hostnames")
			case !validHostname(h):
				fail(".hostname", string(gatewayv1.RouteReasonUnsupportedValue), "%q is not a valid host name or wildcard", *l.Hostname)
			default:
				li.hostname = h
			}
		}
		if ar := l.AllowedRoutes; ar != nil {
			if ar.Namespaces != nil && ar.Namespaces.From != nil {
				switch from := *ar.Namespaces.From; from {
				case gatewayv1.NamespacesFromSame, gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromNone:
					li.from = from
				case gatewayv1.NamespacesFromSelector:
					fail(".allowedRoutes.namespaces.from", string(gatewayv1.RouteReasonUnsupportedValue), "namespace selectors are not supported yet; use Same or All")
				default:
					fail(".allowedRoutes.namespaces.from", string(gatewayv1.RouteReasonUnsupportedValue), "%q is not Same, All, Selector or None", from)
				}
			}
			if len(ar.Kinds) > 0 {
				li.allowsHTTPRoute = false
				for j, k := range ar.Kinds {
					if deref(k.Group, gatewayGroup) == gatewayGroup && k.Kind == "HTTPRoute" {
						li.allowsHTTPRoute = true
						continue
					}
					t.problem(src, fmt.Sprintf("%s.allowedRoutes.kinds[%d]", p, j), string(gatewayv1.ListenerReasonInvalidRouteKinds),
						"route kind %s is not supported on an HTTP listener, which takes HTTPRoute", groupKind(deref(k.Group, gatewayGroup), k.Kind))
				}
			}
		}
		if li.usable {
			ph := portHost{l.Port, li.hostname}
			if j, dup := taken[ph]; dup {
				fail("", string(gatewayv1.ListenerReasonHostnameConflict), "port %d with %s is already served by spec.listeners[%d]", l.Port, describeHost(li.hostname), j)
			} else {
				taken[ph] = i
			}
		}
		out[i] = li
	}
	return out
}
