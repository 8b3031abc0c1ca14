package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/features"

	"trellis.dev/trellis/internal/model"
)

// Status is what the translator concluded about every object of ours it
// considered, in the shape of the Gateway API status it becomes. It is
// derived from the same checks as Output.Problems and agrees with them: a
// condition that is not True names the problems behind it.
//
// Conditions carry no timestamps (the translator has no clock) and the
// object's generation as it was read; a provider that writes them adds the
// transition times.
type Status struct {
	GatewayClasses []GatewayClassStatus `json:"gatewayClasses,omitempty"`
	Gateways       []GatewayStatus      `json:"gateways,omitempty"`
	Routes         []RouteStatus        `json:"routes,omitempty"`
	Policies       []PolicyStatus       `json:"policies,omitempty"`
	// TargetGroupPolicies are the TargetGroupPolicies' statuses, one
	// ancestor per target Service.
	TargetGroupPolicies []PolicyStatus `json:"targetGroupPolicies,omitempty"`
}

// Condition is a status condition without its transition time.
type Condition struct {
	Type    string `json:"type"`
	Status  bool   `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// GatewayClassStatus is the status of one GatewayClass naming one of our
// controllers.
type GatewayClassStatus struct {
	Name       string      `json:"name"`
	Generation int64       `json:"generation,omitempty"`
	Conditions []Condition `json:"conditions"`
	// SupportedFeatures is sorted by name.
	SupportedFeatures []gatewayv1.FeatureName `json:"supportedFeatures,omitempty"`
}

// GatewayStatus is the status of one Gateway of our classes.
type GatewayStatus struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Generation int64       `json:"generation,omitempty"`
	Conditions []Condition `json:"conditions"`
	// Addresses are where the Gateway is served: the network's domain (a
	// Hostname) for a service network, the proxy's IP addresses for an edge
	// Gateway.
	Addresses []gatewayv1.GatewayStatusAddress `json:"addresses,omitempty"`
	Listeners []ListenerStatus                 `json:"listeners,omitempty"`
}

// ListenerStatus is the status of one listener, in spec order.
type ListenerStatus struct {
	Name           gatewayv1.SectionName      `json:"name"`
	SupportedKinds []gatewayv1.RouteGroupKind `json:"supportedKinds"`
	AttachedRoutes int32                      `json:"attachedRoutes"`
	Conditions     []Condition                `json:"conditions"`
}

// RouteStatus is the status of one route with at least one parentRef to a
// Gateway that is not another implementation's.
type RouteStatus struct {
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Generation int64  `json:"generation,omitempty"`
	// Parents holds one entry per distinct parentRef of ours, in spec order.
	Parents []RouteParentStatus `json:"parents"`
	// DNSNames are the generated names of the services the route became in
	// service networks, sorted; empty for edge routes.
	DNSNames []string `json:"dnsNames,omitempty"`
}

// RouteParentStatus is the route's status for one parentRef.
type RouteParentStatus struct {
	ParentRef      gatewayv1.ParentReference   `json:"parentRef"`
	ControllerName gatewayv1.GatewayController `json:"controllerName"`
	Conditions     []Condition                 `json:"conditions"`
}

// SupportedFeatures lists the Gateway API features both classes implement,
// published in GatewayClass status. It grows with the translator and proxy;
// a feature belongs here only once it is served, not merely accepted, and
// once the conformance suite's tests of it pass for both classes
// (docs/conformance/README.md).
var SupportedFeatures = sortedFeatures(
	features.SupportGateway,
	features.SupportGatewayPort8080,
	features.SupportHTTPRoute,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportHTTPRouteDestinationPortMatching,
	features.SupportHTTPRouteRetry,
	features.SupportHTTPRouteCORS,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportGatewayHTTPSListenerDetectMisdirectedRequests,
	features.SupportReferenceGrant,
	features.SupportGRPCRoute,
	features.SupportGRPCRouteNamedRouteRule,
	features.SupportTLSRoute,
)

func sortedFeatures(fs ...features.FeatureName) []gatewayv1.FeatureName {
	out := make([]gatewayv1.FeatureName, len(fs))
	for i, f := range fs {
		out[i] = gatewayv1.FeatureName(f)
	}
	slices.Sort(out)
	return out
}

// SupportedBundleVersion is the Gateway API CRD bundle (major.minor) the
// translator is written against; GatewayClasses report SupportedVersion
// False when the installed CRDs are of another minor version.
const SupportedBundleVersion = "v1.6"

// maxMessageProblems bounds how many problems one condition message lists.
const maxMessageProblems = 8

// problemsMessage joins the messages of ps, each prefixed by its field.
func problemsMessage(ps []Problem) string {
	var parts []string
	for i, p := range ps {
		if i == maxMessageProblems {
			parts = append(parts, fmt.Sprintf("and %d more", len(ps)-i))
			break
		}
		if p.Field != "" {
			parts = append(parts, p.Field+": "+p.Message)
		} else {
			parts = append(parts, p.Message)
		}
	}
	return strings.Join(parts, "; ")
}

func condTrue(typ, reason, message string) Condition {
	return Condition{Type: typ, Status: true, Reason: reason, Message: message}
}

func condFalse(typ, reason, message string) Condition {
	return Condition{Type: typ, Status: false, Reason: reason, Message: message}
}

// classStatus computes a class's status.
func (t *translator) classStatus(gc *gatewayv1.GatewayClass, info *classInfo) {
	st := GatewayClassStatus{Name: gc.Name, Generation: gc.Generation, SupportedFeatures: SupportedFeatures}
	if info.rejected != "" {
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.GatewayClassConditionStatusAccepted),
			string(gatewayv1.GatewayClassReasonInvalidParameters), info.rejected))
	} else {
		st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.GatewayClassConditionStatusAccepted),
			string(gatewayv1.GatewayClassReasonAccepted), fmt.Sprintf("handled by %s", gc.Spec.ControllerName)))
	}
	if v := t.in.GatewayAPIVersion; v != "" {
		if bundleMinor(v) == SupportedBundleVersion {
			st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.GatewayClassConditionStatusSupportedVersion),
				string(gatewayv1.GatewayClassReasonSupportedVersion), fmt.Sprintf("Gateway API %s is supported", v)))
		} else {
			st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.GatewayClassConditionStatusSupportedVersion),
				string(gatewayv1.GatewayClassReasonUnsupportedVersion),
				fmt.Sprintf("the installed Gateway API CRDs are %s; trellis supports %s.x", v, SupportedBundleVersion)))
		}
	}
	t.out.Status.GatewayClasses = append(t.out.Status.GatewayClasses, st)
}

// bundleMinor returns "vX.Y" of a bundle version "vX.Y.Z".
func bundleMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// gatewayStatus computes a Gateway's status once every route has attached.
func (t *translator) gatewayStatus(gw *gatewayInfo) GatewayStatus {
	st := GatewayStatus{Namespace: gw.gw.Namespace, Name: gw.gw.Name, Generation: gw.gw.Generation, Addresses: gw.addresses}
	valid := 0
	for i := range gw.listeners {
		l := &gw.listeners[i]
		if l.usable {
			valid++
		}
		st.Listeners = append(st.Listeners, l.status(gw.notAccepted == ""))
	}
	accepted := string(gatewayv1.GatewayConditionAccepted)
	programmed := string(gatewayv1.GatewayConditionProgrammed)
	switch {
	case gw.notAccepted != "":
		st.Conditions = append(st.Conditions,
			condFalse(accepted, gw.notAcceptedReason, gw.notAccepted),
			condFalse(programmed, string(gatewayv1.GatewayReasonInvalid), "the Gateway is not accepted"))
	case valid == 0:
		st.Conditions = append(st.Conditions,
			condFalse(accepted, string(gatewayv1.GatewayReasonListenersNotValid), "no listener is valid"),
			condFalse(programmed, string(gatewayv1.GatewayReasonInvalid), "no listener is valid"))
	default:
		if valid < len(gw.listeners) {
			st.Conditions = append(st.Conditions, condTrue(accepted, string(gatewayv1.GatewayReasonListenersNotValid),
				fmt.Sprintf("%d of %d listeners are not valid (see their conditions)", len(gw.listeners)-valid, len(gw.listeners))))
		} else {
			st.Conditions = append(st.Conditions, condTrue(accepted, string(gatewayv1.GatewayReasonAccepted), ""))
		}
		if gw.unassigned != "" {
			st.Conditions = append(st.Conditions, condFalse(programmed, string(gatewayv1.GatewayReasonAddressNotAssigned), gw.unassigned))
		} else {
			st.Conditions = append(st.Conditions, condTrue(programmed, string(gatewayv1.GatewayReasonProgrammed),
				fmt.Sprintf("served as network %q", gw.network)))
		}
	}
	return st
}

// status computes one listener's conditions. gatewayOK is false when the
// whole Gateway is not accepted.
func (l *listenerInfo) status(gatewayOK bool) ListenerStatus {
	st := ListenerStatus{Name: l.spec.Name, SupportedKinds: l.supportedKinds, AttachedRoutes: l.attached}
	if st.SupportedKinds == nil {
		st.SupportedKinds = []gatewayv1.RouteGroupKind{}
	}
	if l.conflict != nil {
		st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.ListenerConditionConflicted), l.conflict.Reason, problemsMessage([]Problem{*l.conflict})))
	} else {
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionConflicted), string(gatewayv1.ListenerReasonNoConflicts), ""))
	}
	if len(l.notAccepted) > 0 {
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionAccepted), l.notAccepted[0].Reason, problemsMessage(l.notAccepted)))
	} else {
		st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.ListenerConditionAccepted), string(gatewayv1.ListenerReasonAccepted), ""))
	}
	if len(l.unresolved) > 0 {
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionResolvedRefs), l.unresolved[0].Reason, problemsMessage(l.unresolved)))
	} else {
		st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.ListenerConditionResolvedRefs), string(gatewayv1.ListenerReasonResolvedRefs), ""))
	}
	switch {
	case !gatewayOK:
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonInvalid), "the Gateway is not accepted"))
	case !l.usable && len(l.notAccepted) == 0:
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonInvalid), "its references are not resolved"))
	case !l.usable:
		st.Conditions = append(st.Conditions, condFalse(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonInvalid), "the listener is not valid"))
	default:
		st.Conditions = append(st.Conditions, condTrue(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonProgrammed), ""))
	}
	return st
}

// backendReasons are the problem reasons that make a route's ResolvedRefs False.
var backendReasons = map[string]bool{
	string(gatewayv1.RouteReasonBackendNotFound):     true,
	string(gatewayv1.RouteReasonInvalidKind):         true,
	string(gatewayv1.RouteReasonRefNotPermitted):     true,
	string(gatewayv1.RouteReasonUnsupportedProtocol): true,
}

// routeState collects what the translator found about one route, from
// which its status is computed.
type routeState struct {
	src        model.SourceRef
	generation int64
	// parents are the route's parentRefs to Gateways that are not another
	// implementation's, in spec order.
	parents []*parentResult
	// problems are the route's own problems, in the order found.
	problems []Problem
	// unresolved are problems whose reason alone would not say that a
	// reference does not resolve (an import whose cluster weights are
	// malformed), which make ResolvedRefs False all the same.
	unresolved []Problem
	// fatal rejects the route on every parent it attached to: an invalid
	// hostname, or a route every rule of which is invalid.
	fatal *Problem
	// dropped names the rules left out because they are invalid, e.g.
	// "rules[2]"; the rest of the route is served.
	dropped  []string
	dnsNames []string
}

// parentResult is the outcome of one parentRef.
type parentResult struct {
	index      int
	ref        gatewayv1.ParentReference
	controller gatewayv1.GatewayController
	// failure says why the route did not attach; nil when it did.
	failure *Problem
	// listeners are the listeners the route attached to through this parentRef.
	listeners []*listenerInfo
}

// routeStatus turns a route's state into its status and counts its
// attachments on the listeners it is accepted on.
func (t *translator) routeStatus(rs *routeState) {
	var resolved, rest []Problem
	for _, p := range rs.problems {
		switch {
		case strings.HasPrefix(p.Field, "spec.parentRefs"):
			// Reported on the parent it concerns.
		case backendReasons[p.Reason] || slices.Contains(rs.unresolved, p):
			resolved = append(resolved, p)
		case rs.fatal != nil && p == *rs.fatal:
		default:
			rest = append(rest, p)
		}
	}
	st := RouteStatus{Kind: rs.src.Kind, Namespace: rs.src.Namespace, Name: rs.src.Name, Generation: rs.generation, DNSNames: rs.dnsNames}
	slices.Sort(st.DNSNames)
	st.DNSNames = slices.Compact(st.DNSNames)
	accepted := string(gatewayv1.RouteConditionAccepted)
	seen := map[string]bool{}
	for _, pr := range rs.parents {
		// Two identical parentRefs get one status entry, as the API's
		// list-map keys require.
		key := parentKey(pr.ref)
		if seen[key] {
			continue
		}
		seen[key] = true
		ps := RouteParentStatus{ParentRef: pr.ref, ControllerName: pr.controller}
		switch {
		case pr.failure != nil:
			ps.Conditions = append(ps.Conditions, condFalse(accepted, pr.failure.Reason, problemsMessage([]Problem{*pr.failure})))
		case rs.fatal != nil:
			ps.Conditions = append(ps.Conditions, condFalse(accepted, rs.fatal.Reason, problemsMessage(append([]Problem{*rs.fatal}, rest...))))
		default:
			ps.Conditions = append(ps.Conditions, condTrue(accepted, string(gatewayv1.RouteReasonAccepted), ""))
			for _, l := range pr.listeners {
				l.count(rs.src)
				if t.rec != nil {
					t.rec.attached = append(t.rec.attached, l.ref)
				}
			}
		}
		if len(resolved) > 0 {
			ps.Conditions = append(ps.Conditions, condFalse(string(gatewayv1.RouteConditionResolvedRefs), resolved[0].Reason, problemsMessage(resolved)))
		} else {
			ps.Conditions = append(ps.Conditions, condTrue(string(gatewayv1.RouteConditionResolvedRefs), string(gatewayv1.RouteReasonResolvedRefs), ""))
		}
		if len(rest) > 0 && pr.failure == nil && rs.fatal == nil {
			ps.Conditions = append(ps.Conditions, condTrue(string(gatewayv1.RouteConditionPartiallyInvalid),
				string(gatewayv1.RouteReasonUnsupportedValue), partialMessage(rs.dropped, rest)))
		}
		st.Parents = append(st.Parents, ps)
	}
	if len(st.Parents) > 0 {
		t.out.Status.Routes = append(t.out.Status.Routes, st)
	}
}

// partialMessage describes a route's non-fatal problems. Rules that were
// dropped are named first, with the "Dropped Rule" prefix the Gateway API
// asks for.
func partialMessage(dropped []string, ps []Problem) string {
	msg := problemsMessage(ps)
	if len(dropped) > 0 {
		return fmt.Sprintf("Dropped Rule(s) %s: %s", strings.Join(dropped, ", "), msg)
	}
	return "served with these problems: " + msg
}

// parentKey identifies a parentRef for deduplication.
func parentKey(p gatewayv1.ParentReference) string {
	return fmt.Sprintf("%s/%s/%s/%s/%s/%d", deref(p.Group, gatewayGroup), deref(p.Kind, "Gateway"),
		deref(p.Namespace, ""), p.Name, deref(p.SectionName, ""), deref(p.Port, 0))
}

// sort orders the status lists by kind, namespace and name; the routes'
// only when routes is true (patchRoutes keeps them in order).
func (s *Status) sort(routes bool) {
	slices.SortFunc(s.GatewayClasses, func(a, b GatewayClassStatus) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Gateways, func(a, b GatewayStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if routes {
		slices.SortFunc(s.Routes, compareRouteStatus)
	}
	// The Policies are made sorted (translateAuthPolicies).
}
