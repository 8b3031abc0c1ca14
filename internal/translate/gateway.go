package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// gatewayInfo is one Gateway of our classes.
type gatewayInfo struct {
	gw         *gatewayv1.Gateway
	mode       model.NetworkMode
	controller gatewayv1.GatewayController
	// network is the network the Gateway makes; empty when notAccepted or
	// unassigned. domain is a service network's domain.
	network, domain string
	// notAccepted says why routes cannot attach, and notAcceptedReason is
	// the Gateway API reason; empty when they can.
	notAccepted       string
	notAcceptedReason string
	// unassigned says why an accepted edge Gateway has no address, and so
	// is not programmed; empty when it has one.
	unassigned string
	addresses  []gatewayv1.GatewayStatusAddress
	listeners  []listenerInfo
}

// listenerInfo is one listener of a Gateway, checked.
type listenerInfo struct {
	spec *gatewayv1.Listener
	// usable is false when the listener is invalid, unsupported or in
	// conflict; its problems say why.
	usable bool
	from   gatewayv1.FromNamespaces
	// selector admits route namespaces when from is Selector.
	selector labels.Selector
	// supportedKinds are the route kinds the listener admits.
	supportedKinds []gatewayv1.RouteGroupKind
	// protocol is the model protocol of a usable listener; certificates
	// the certificates an HTTPS listener serves.
	protocol     model.Protocol
	certificates []string
	// hostname is lower-cased; empty matches any host.
	hostname string

	// The problems behind the listener's conditions.
	notAccepted []Problem
	unresolved  []Problem
	conflict    *Problem
	// attached counts the routes accepted on the listener; last is the
	// last one counted.
	attached int32
	last     model.SourceRef
	// ref names the listener, for Incremental's records.
	ref listenerRef
}

// admits reports whether the listener takes routes of kind.
func (l *listenerInfo) admits(kind gatewayv1.Kind) bool {
	return slices.ContainsFunc(l.supportedKinds, func(k gatewayv1.RouteGroupKind) bool { return k.Kind == kind })
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
		info := &classInfo{mode: mode, controller: gc.Spec.ControllerName}
		if gc.Spec.ParametersRef != nil {
			info.rejected = "its parametersRef is not supported"
			t.problem(ref("GatewayClass", "", gc.Name), "spec.parametersRef", string(gatewayv1.GatewayClassReasonInvalidParameters),
				"parameters are not supported; the GatewayClass is not accepted")
		}
		t.classes[gc.Name] = info
		t.classStatus(gc, info)
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
		info := &gatewayInfo{gw: gw, mode: class.mode, controller: class.controller}
		t.gateways[key] = info
		t.gatewayOrder = append(t.gatewayOrder, key)
		info.listeners = t.listeners(gw, src)
		for i := range info.listeners {
			info.listeners[i].ref = listenerRef{key, i}
		}
		addrs, unsupported := t.gatewayAddresses(gw, src, class.mode)
		switch {
		case class.rejected != "":
			info.notAccepted = fmt.Sprintf("its GatewayClass %q is not accepted: %s", gw.Spec.GatewayClassName, class.rejected)
			info.notAcceptedReason = string(gatewayv1.GatewayReasonInvalid)
			continue
		case unsupported != nil:
			info.notAccepted = "it sets unsupported fields: " + problemsMessage(unsupported)
			info.notAcceptedReason = unsupported[0].Reason
			continue
		}
		xff, ok := forwardedFor(gw)
		if !ok {
			info.notAccepted = fmt.Sprintf("its %s annotation is invalid", ForwardedForAnnotation)
			info.notAcceptedReason = string(gatewayv1.GatewayReasonInvalid)
			t.problem(src, "metadata.annotations["+ForwardedForAnnotation+"]", string(gatewayv1.GatewayReasonInvalid),
				"%q is not an X-Forwarded-For mode: append, preserve or remove; the Gateway is not accepted", gw.Annotations[ForwardedForAnnotation])
			continue
		}
		n := model.ServiceNetwork{
			Meta:            model.Meta{Name: gw.Name, Owner: t.in.Cluster},
			Mode:            class.mode,
			ForwardedFor:    xff,
			AllowedClusters: allowedClusters(gw),
			Source:          &src,
		}
		if class.mode == model.ModeServiceNetwork {
			n.Domain = gw.Name + "." + DomainSuffix
		} else {
			n.Name = gw.Name + "-" + gw.Namespace
			n.Addresses = addrs
		}
		if other, taken := t.networks[n.Name]; taken {
			info.notAccepted = fmt.Sprintf("its network name %q is already used by Gateway %s", n.Name, other)
			info.notAcceptedReason = ReasonNameConflict
			t.problem(src, "metadata.name", ReasonNameConflict,
				"network %q is already made by Gateway %s; this Gateway is not accepted", n.Name, other)
			continue
		}
		if err := n.Validate(); err != nil {
			info.notAccepted = "it translates to an invalid network"
			info.notAcceptedReason = string(gatewayv1.GatewayReasonInvalid)
			t.invalid(src, err, func(f string) string {
				if strings.HasPrefix(f, "addresses") {
					return "spec.addresses"
				}
				if strings.HasPrefix(f, "allowedClusters") {
					return "metadata.annotations[" + AllowedClustersAnnotation + "]"
				}
				return "metadata.name"
			})
			continue
		}
		t.networks[n.Name] = key
		if class.mode == model.ModeEdge && len(addrs) == 0 && t.in.GatewayAddresses != nil {
			// The provider assigns addresses and had none for this
			// Gateway: serving it on some other address would publish a
			// wrong one, so it is not programmed.
			info.unassigned = "no address is assigned to this Gateway (is the address pool exhausted?)"
			t.problem(src, "status.addresses", string(gatewayv1.GatewayReasonAddressNotAssigned), "%s", info.unassigned)
			continue
		}
		info.network, info.domain = n.Name, n.Domain
		if n.Domain != "" {
			info.addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr(gatewayv1.HostnameAddressType), Value: n.Domain}}
		}
		for _, a := range n.Addresses {
			info.addresses = append(info.addresses, gatewayv1.GatewayStatusAddress{Type: ptr(gatewayv1.IPAddressType), Value: a})
		}
		t.out.Networks = append(t.out.Networks, n)
	}
}

func ptr[T any](v T) *T { return &v }

// ForwardedForAnnotation on a Gateway sets what its proxies do with a
// client's X-Forwarded-For, with the modes of an AWS Application Load
// Balancer: "append" (the default) adds the client's address, "preserve"
// forwards the field as the client sent it, "remove" drops it.
const ForwardedForAnnotation = "trellis.dev/x-forwarded-for"

// forwardedFor returns the X-Forwarded-For mode gw's annotation asks for,
// "" (append) when it has none; ok is false for an unknown mode.
func forwardedFor(gw *gatewayv1.Gateway) (mode model.ForwardedForMode, ok bool) {
	v, set := gw.Annotations[ForwardedForAnnotation]
	if !set {
		return "", true
	}
	switch m := model.ForwardedForMode(strings.ToLower(strings.TrimSpace(v))); m {
	case model.ForwardedForAppend, model.ForwardedForPreserve, model.ForwardedForRemove:
		return m, true
	}
	return "", false
}

// AllowedClustersAnnotation on a Gateway of class trellis names the other
// clusters that may associate with its service network (a Gateway of the
// same name in their cluster) and add services to it: a comma-separated
// list of cluster names, or "*" for every cluster. Without it only the
// Gateway's own cluster may.
const AllowedClustersAnnotation = "trellis.dev/allowed-clusters"

// allowedClusters is the list gw's annotation gives, nil without one.
func allowedClusters(gw *gatewayv1.Gateway) []string {
	v, ok := gw.Annotations[AllowedClustersAnnotation]
	if !ok {
		return nil
	}
	var out []string
	for c := range strings.SplitSeq(v, ",") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

func (t *translator) classExists(name string) bool {
	for i := range t.in.GatewayClasses {
		if t.in.GatewayClasses[i].Name == name {
			return true
		}
	}
	return false
}

// gatewayAddresses returns the addresses an edge Gateway is served on:
// those it requests in spec.addresses, else those the provider assigned.
// It also reports the Gateway-level fields trellis does not implement yet.
// Each would change where or how the Gateway is served, so a Gateway that
// sets one is not accepted rather than served differently from what it
// asks; unsupported lists the problems, nil when there are none.
func (t *translator) gatewayAddresses(gw *gatewayv1.Gateway, src model.SourceRef, mode model.NetworkMode) (addrs []string, unsupported []Problem) {
	report := func(field, reason, format string, args ...any) {
		unsupported = append(unsupported, t.problem(src, field, reason, format, args...))
	}
	if len(gw.Spec.Addresses) > 0 {
		if mode == model.ModeServiceNetwork {
			report("spec.addresses", string(gatewayv1.GatewayReasonUnsupportedAddress),
				"a service network is reached by its DNS names, not at requested addresses")
		} else {
			for i, a := range gw.Spec.Addresses {
				field := fmt.Sprintf("spec.addresses[%d]", i)
				if typ := deref(a.Type, gatewayv1.IPAddressType); typ != gatewayv1.IPAddressType {
					report(field+".type", string(gatewayv1.GatewayReasonUnsupportedAddress), "address type %q is not supported; only IPAddress is", typ)
					continue
				}
				ip, err := netip.ParseAddr(a.Value)
				if err != nil || ip.Zone() != "" {
					report(field+".value", string(gatewayv1.GatewayReasonUnsupportedAddress), "%q is not an IP address", a.Value)
					continue
				}
				addrs = append(addrs, ip.String())
			}
		}
	} else if mode == model.ModeEdge {
		addrs = t.in.GatewayAddresses[gw.Namespace+"/"+gw.Name]
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
	return slices.Compact(addrs), unsupported
}

// The route kinds.
const (
	kindHTTPRoute gatewayv1.Kind = "HTTPRoute"
	kindGRPCRoute gatewayv1.Kind = "GRPCRoute"
	kindTLSRoute  gatewayv1.Kind = "TLSRoute"
)

// httpRouteKinds are the route kinds HTTP and HTTPS listeners admit;
// tlsRouteKinds those TLS passthrough listeners admit.
var (
	httpRouteKinds = []gatewayv1.RouteGroupKind{{Group: ptr(gatewayGroup), Kind: kindHTTPRoute}, {Group: ptr(gatewayGroup), Kind: kindGRPCRoute}}
	tlsRouteKinds  = []gatewayv1.RouteGroupKind{{Group: ptr(gatewayGroup), Kind: kindTLSRoute}}
)

// listenerProtocol checks a listener's protocol and TLS settings, setting
// li's model protocol, route kinds and certificates. fail marks the
// listener not accepted. Certificate references that do not resolve leave
// it accepted but unresolved, and so not served.
func (t *translator) listenerProtocol(gw *gatewayv1.Gateway, src model.SourceRef, p string, li *listenerInfo,
	fail func(field, reason, format string, args ...any)) {
	l := li.spec
	unsupported := string(gatewayv1.ListenerReasonUnsupportedValue)
	switch l.Protocol {
	case gatewayv1.HTTPProtocolType:
		li.protocol = model.ProtocolHTTP
		li.supportedKinds = slices.Clone(httpRouteKinds)
		if l.TLS != nil {
			fail(".tls", unsupported, "tls must not be set on an HTTP listener")
		}
	case gatewayv1.HTTPSProtocolType:
		li.protocol = model.ProtocolHTTPS
		li.supportedKinds = slices.Clone(httpRouteKinds)
		switch {
		case l.TLS == nil:
			fail(".tls", unsupported, "an HTTPS listener needs tls with certificateRefs")
			return
		case deref(l.TLS.Mode, gatewayv1.TLSModeTerminate) != gatewayv1.TLSModeTerminate:
			fail(".tls.mode", unsupported, "an HTTPS listener terminates TLS; for %s use a TLS listener", *l.TLS.Mode)
			return
		case len(l.TLS.Options) > 0:
			fail(".tls.options", unsupported, "trellis defines no TLS options")
		}
		names, problems := t.certificates(gw, src, p+".tls.certificateRefs", l.TLS.CertificateRefs)
		if len(problems) > 0 {
			li.usable = false
			li.unresolved = append(li.unresolved, problems...)
			return
		}
		li.certificates = names
	case gatewayv1.TLSProtocolType:
		// supportedKinds stays empty unless the listener is one trellis
		// serves: a TLS listener in Terminate mode takes no route kind.
		if l.TLS == nil {
			fail(".tls", unsupported, "a TLS listener needs tls with mode Passthrough")
			return
		}
		if mode := deref(l.TLS.Mode, gatewayv1.TLSModeTerminate); mode != gatewayv1.TLSModePassthrough {
			fail(".tls.mode", unsupported, "TLS listeners with mode %s are not supported; use Passthrough, or an HTTPS listener to terminate TLS", mode)
			return
		}
		li.protocol = model.ProtocolTLSPassthrough
		li.supportedKinds = slices.Clone(tlsRouteKinds)
	default:
		fail(".protocol", string(gatewayv1.ListenerReasonUnsupportedProtocol), "protocol %q is not supported; HTTP, HTTPS and TLS are", l.Protocol)
	}
}

// listeners checks every listener of gw. An invalid or unsupported listener is
// reported and left unusable; the others still serve.
func (t *translator) listeners(gw *gatewayv1.Gateway, src model.SourceRef) []listenerInfo {
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
	protocols := map[int32]int{} // port → the first usable listener on it
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		p := fmt.Sprintf("spec.listeners[%d]", i)
		li := listenerInfo{spec: l, usable: true, from: gatewayv1.NamespacesFromSame}
		fail := func(field, reason, format string, args ...any) {
			li.usable = false
			li.notAccepted = append(li.notAccepted, t.problem(src, p+field, reason, format, args...))
		}
		if j, dup := names[l.Name]; dup {
			fail(".name", string(gatewayv1.ListenerReasonUnsupportedValue), "listener name %q is already used by spec.listeners[%d]", l.Name, j)
		} else if len(l.Name) > 253 || !sectionNameRE.MatchString(string(l.Name)) {
			fail(".name", string(gatewayv1.ListenerReasonUnsupportedValue), "%q is not a listener name: lower-case DNS labels joined by dots", l.Name)
		} else {
			names[l.Name] = i
		}
		t.listenerProtocol(gw, src, p, &li, fail)
		if l.Port < 1 || l.Port > 65535 {
			fail(".port", string(gatewayv1.ListenerReasonUnsupportedValue), "%d is not in 1-65535", l.Port)
		}
		if l.Hostname != nil {
			h := strings.ToLower(string(*l.Hostname))
			if validHostname(h) {
				li.hostname = h
			} else {
				fail(".hostname", string(gatewayv1.ListenerReasonUnsupportedValue), "%q is not a valid host name or wildcard", *l.Hostname)
			}
		}
		if ar := l.AllowedRoutes; ar != nil {
			if ar.Namespaces != nil && ar.Namespaces.From != nil {
				switch from := *ar.Namespaces.From; from {
				case gatewayv1.NamespacesFromSame, gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromNone:
					li.from = from
				case gatewayv1.NamespacesFromSelector:
					li.from = from
					sel, err := selector(ar.Namespaces.Selector)
					if err != nil {
						fail(".allowedRoutes.namespaces.selector", string(gatewayv1.ListenerReasonUnsupportedValue), "%v", err)
					}
					li.selector = sel
				default:
					fail(".allowedRoutes.namespaces.from", string(gatewayv1.ListenerReasonUnsupportedValue), "%q is not Same, All, Selector or None", from)
				}
			}
			if len(ar.Kinds) > 0 {
				var kinds []gatewayv1.RouteGroupKind
				for j, k := range ar.Kinds {
					g := deref(k.Group, gatewayGroup)
					if g == gatewayGroup && slices.ContainsFunc(li.supportedKinds, func(s gatewayv1.RouteGroupKind) bool { return s.Kind == k.Kind }) {
						kinds = append(kinds, gatewayv1.RouteGroupKind{Group: ptr(g), Kind: k.Kind})
						continue
					}
					li.unresolved = append(li.unresolved, t.problem(src, fmt.Sprintf("%s.allowedRoutes.kinds[%d]", p, j), string(gatewayv1.ListenerReasonInvalidRouteKinds),
						"route kind %s is not supported on %s listener, which takes %s", groupKind(g, k.Kind), describeProtocol(l.Protocol), describeKinds(li.supportedKinds)))
				}
				li.supportedKinds = kinds
			}
		}
		if li.usable {
			ph := portHost{l.Port, li.hostname}
			if j, ok := protocols[l.Port]; ok && gw.Spec.Listeners[j].Protocol != l.Protocol {
				li.usable = false
				c := t.problem(src, p+".protocol", string(gatewayv1.ListenerReasonProtocolConflict), "port %d is %s in spec.listeners[%d]; one port serves one protocol",
					l.Port, gw.Spec.Listeners[j].Protocol, j)
				li.conflict = &c
				li.notAccepted = append(li.notAccepted, c)
			} else if j, dup := taken[ph]; dup {
				li.usable = false
				c := t.problem(src, p, string(gatewayv1.ListenerReasonHostnameConflict), "port %d with %s is already served by spec.listeners[%d]", l.Port, describeHost(li.hostname), j)
				li.conflict = &c
				li.notAccepted = append(li.notAccepted, c)
			} else {
				taken[ph] = i
				if _, ok := protocols[l.Port]; !ok {
					protocols[l.Port] = i
				}
			}
		}
		out[i] = li
	}
	return out
}

// selector parses a listener's namespace selector.
func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return nil, errors.New("from Selector needs a selector")
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return nil, fmt.Errorf("invalid selector: %w", err)
	}
	return sel, nil
}

// describeProtocol names a listener protocol with its article, for messages.
func describeProtocol(p gatewayv1.ProtocolType) string {
	if p == gatewayv1.HTTPProtocolType || p == gatewayv1.HTTPSProtocolType {
		return "an " + string(p)
	}
	return "a " + string(p)
}

// describeKinds lists route kinds for messages.
func describeKinds(kinds []gatewayv1.RouteGroupKind) string {
	if len(kinds) == 0 {
		return "no route kind"
	}
	var names []string
	for _, k := range kinds {
		names = append(names, string(k.Kind))
	}
	return strings.Join(names, " and ")
}
