package translate

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/model"
)

// kindAuthPolicy is the kind of trellis.dev AuthPolicies in source refs.
const kindAuthPolicy = "AuthPolicy"

// denyAll is the policy that stands in for an invalid one: a user who
// attached a policy asked for auth, so a policy that cannot be read refuses
// every request rather than leaving its targets open.
var denyAll = json.RawMessage(`{"Statement":[{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}`)

// PolicyStatus is the status of one AuthPolicy: one entry per Gateway of
// ours that it reaches (its target, or its target route's parents), as
// GEP-713 policy attachment reports it.
type PolicyStatus struct {
	Namespace  string                 `json:"namespace"`
	Name       string                 `json:"name"`
	Generation int64                  `json:"generation,omitempty"`
	Ancestors  []PolicyAncestorStatus `json:"ancestors"`
}

// PolicyAncestorStatus is a policy's status for one Gateway.
type PolicyAncestorStatus struct {
	AncestorRef    gatewayv1.ParentReference   `json:"ancestorRef"`
	ControllerName gatewayv1.GatewayController `json:"controllerName"`
	Conditions     []Condition                 `json:"conditions"`
}

// translateAuthPolicies attaches the AuthPolicies to the networks and
// services already translated, oldest policy first: an object targeted by
// several gets the oldest, and the others are Conflicted there. A policy
// whose document is invalid is attached as one that denies everything, and
// reported Invalid.
func (t *translator) translateAuthPolicies() {
	if len(t.in.AuthPolicies) == 0 {
		return
	}
	if t.inc != nil && t.inc.fast {
		t.out.Services = slices.Clone(t.out.Services) // the Incremental's, which this must not change
	}
	// The statuses go out in name order (the controller finds one by
	// binary search), the policies are attached oldest first.
	named := sortedByName(t.in.AuthPolicies, func(p *v1alpha1.AuthPolicy) (string, string) { return p.Namespace, p.Name })
	order := make([]int, len(named))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return named[a].CreationTimestamp.Compare(named[b].CreationTimestamp.Time)
	})
	networks := map[string]*model.ServiceNetwork{}
	for i := range t.out.Networks {
		networks[t.out.Networks[i].Name] = &t.out.Networks[i]
	}
	services := map[model.SourceRef][]*model.Service{}
	for i := range t.out.Services {
		if s := &t.out.Services[i]; s.Source != nil {
			services[*s.Source] = append(services[*s.Source], s)
		}
	}
	statuses := make([]PolicyStatus, len(named))
	for _, i := range order {
		statuses[i] = t.translateAuthPolicy(named[i], networks, services)
	}
	t.out.Status.Policies = append(t.out.Status.Policies, statuses...)
}

// maxTargetRefs is the AuthPolicy CRD's bound on spec.targetRefs
// (api/v1alpha1).
const maxTargetRefs = 16

// translateAuthPolicy attaches p and returns its status.
func (t *translator) translateAuthPolicy(p *v1alpha1.AuthPolicy, networks map[string]*model.ServiceNetwork, services map[model.SourceRef][]*model.Service) PolicyStatus {
	src := ref(kindAuthPolicy, p.Namespace, p.Name)
	st := PolicyStatus{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation}
	doc, invalid := t.authDocument(p, src)
	a := &model.Auth{Policy: doc, Source: &src}

	// outcomes collects the outcome per ancestor: each Gateway of ours the
	// policy reaches, or the target itself when it reaches none (so that a
	// policy whose target is missing still says so in its status). The
	// first failure at an ancestor is what its condition says.
	type outcome struct {
		key        string // kind/namespace/name of anc
		anc        gatewayv1.ParentReference
		controller gatewayv1.GatewayController
		reason     string
		message    string
	}
	var outcomes []outcome
	note := func(anc gatewayv1.ParentReference, controller gatewayv1.GatewayController, reason, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		key := string(*anc.Kind) + "/" + string(*anc.Namespace) + "/" + string(anc.Name)
		for i := range outcomes {
			if outcomes[i].key == key {
				if outcomes[i].reason == string(gatewayv1.PolicyReasonAccepted) && reason != outcomes[i].reason {
					outcomes[i].reason, outcomes[i].message = reason, msg
				}
				return
			}
		}
		outcomes = append(outcomes, outcome{key, anc, controller, reason, msg})
	}
	gateway := func(gw *gatewayInfo) gatewayv1.ParentReference {
		return ancestor("Gateway", gw.gw.Namespace, gw.gw.Name)
	}
	accepted := func(gw *gatewayInfo) {
		if invalid != "" {
			note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonInvalid), "%s; every request to its targets is denied until it is fixed", invalid)
			return
		}
		note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonAccepted), "the policy applies")
	}
	missing := func(field, kind, name, format string, args ...any) {
		p := t.problem(src, field, string(gatewayv1.PolicyReasonTargetNotFound), format, args...)
		note(ancestor(kind, src.Namespace, name), ServiceNetworkController, p.Reason, "%s", p.Message)
	}

	if n := len(p.Spec.TargetRefs); n == 0 || n > maxTargetRefs {
		// The CRD's bounds.
		t.problem(src, "spec.targetRefs", string(gatewayv1.PolicyReasonInvalid), "an AuthPolicy needs 1 to %d targetRefs, not %d", maxTargetRefs, n)
	}
	for i, tr := range p.Spec.TargetRefs {
		field := fmt.Sprintf("spec.targetRefs[%d]", i)
		kind := string(tr.Kind)
		if tr.Group != gatewayv1.GroupName {
			pr := t.problem(src, field+".group", string(gatewayv1.PolicyReasonInvalid), "group %q: an AuthPolicy targets Gateways and routes of %s", tr.Group, gatewayv1.GroupName)
			anc := ancestor(kind, p.Namespace, string(tr.Name))
			anc.Group = ptr(tr.Group)
			note(anc, ServiceNetworkController, pr.Reason, "%s", pr.Message)
			continue
		}
		switch tr.Kind {
		case "Gateway":
			gw := t.gateways[types.NamespacedName{Namespace: p.Namespace, Name: string(tr.Name)}]
			if gw == nil || gw.network == "" {
				missing(field, kind, string(tr.Name), "Gateway %s/%s is not one of trellis's accepted Gateways", p.Namespace, tr.Name)
				continue
			}
			n := networks[gw.network]
			switch {
			case n == nil:
				missing(field, kind, string(tr.Name), "Gateway %s/%s makes no network", p.Namespace, tr.Name)
			case n.Auth != nil:
				t.problem(src, field, string(gatewayv1.PolicyReasonConflicted), "Gateway %s/%s already has AuthPolicy %s, which is older", p.Namespace, tr.Name, n.Auth.Source.Name)
				note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonConflicted), "the Gateway already has AuthPolicy %s, which is older", n.Auth.Source.Name)
			default:
				n.Auth = a
				accepted(gw)
			}
		case kindHTTPRoute, kindGRPCRoute, kindTLSRoute:
			route := ref(kind, p.Namespace, string(tr.Name))
			svcs := services[route]
			if len(svcs) == 0 {
				missing(field, kind, string(tr.Name), "%s %s/%s is not served by any trellis Gateway", kind, p.Namespace, tr.Name)
				continue
			}
			parents := t.routeGateways(route)
			if s := svcs[0]; s.Auth != nil {
				t.problem(src, field, string(gatewayv1.PolicyReasonConflicted), "%s %s/%s already has AuthPolicy %s, which is older", kind, p.Namespace, tr.Name, s.Auth.Source.Name)
				for _, gw := range parents {
					note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonConflicted), "%s %s already has AuthPolicy %s, which is older", kind, tr.Name, s.Auth.Source.Name)
				}
				continue
			}
			for _, s := range svcs {
				s.Auth = a
			}
			for _, gw := range parents {
				accepted(gw)
			}
		default:
			pr := t.problem(src, field+".kind", string(gatewayv1.PolicyReasonInvalid), "kind %q: an AuthPolicy targets Gateways, HTTPRoutes, GRPCRoutes and TLSRoutes", kind)
			note(ancestor(kind, p.Namespace, string(tr.Name)), ServiceNetworkController, pr.Reason, "%s", pr.Message)
		}
	}
	for _, o := range outcomes {
		st.Ancestors = append(st.Ancestors, PolicyAncestorStatus{
			AncestorRef:    o.anc,
			ControllerName: o.controller,
			Conditions: []Condition{{
				Type: string(gatewayv1.PolicyConditionAccepted), Status: o.reason == string(gatewayv1.PolicyReasonAccepted),
				Reason: o.reason, Message: o.message,
			}},
		})
	}
	return st
}

// ancestor is a reference to kind namespace/name of the Gateway API group,
// as policy status names its ancestors.
func ancestor(kind, namespace, name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{
		Group: ptr(gatewayv1.Group(gatewayv1.GroupName)), Kind: ptr(gatewayv1.Kind(kind)),
		Namespace: ptr(gatewayv1.Namespace(namespace)), Name: gatewayv1.ObjectName(name),
	}
}

// authDocument returns the policy document to attach and, when the one in
// the spec is invalid, why (reported as problems too) with denyAll in its
// place.
func (t *translator) authDocument(p *v1alpha1.AuthPolicy, src model.SourceRef) (json.RawMessage, string) {
	doc := json.RawMessage(p.Spec.Policy.Raw)
	// An Incremental parses a policy's document again only when the
	// policy changed (an object of one resourceVersion has one content).
	var x *Incremental
	k := objectKey{kindAuthPolicy, p.Namespace, p.Name}
	if t.inc != nil && p.ResourceVersion != "" {
		x = t.inc.x
		if x.authParsed[k] == p.ResourceVersion {
			return doc, ""
		}
	}
	_, err := auth.Parse(doc)
	if err == nil {
		if x != nil {
			if x.authParsed == nil {
				x.authParsed = map[objectKey]string{}
			}
			x.authParsed[k] = p.ResourceVersion
		}
		return doc, ""
	}
	if x != nil {
		delete(x.authParsed, k)
	}
	var errs auth.Errors
	if !errors.As(err, &errs) {
		t.problem(src, "spec.policy", string(gatewayv1.PolicyReasonInvalid), "%v", err)
		return denyAll, "spec.policy: " + err.Error()
	}
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		field := "spec.policy"
		if e.Field != "" {
			field += "." + e.Field
		}
		t.problem(src, field, string(gatewayv1.PolicyReasonInvalid), "%s", e.Detail)
		msgs = append(msgs, field+": "+e.Detail)
	}
	return denyAll, "the policy is invalid: " + strings.Join(msgs, "; ")
}

// routeGateways returns the Gateways of ours that route names as parents.
func (t *translator) routeGateways(route model.SourceRef) []*gatewayInfo {
	var refs []gatewayv1.ParentReference
	if t.routeParents == nil {
		// Found once per call rather than by a walk of every route per
		// policy (10,000 policies on 10,000 routes: 10^8 steps).
		t.routeParents = make(map[model.SourceRef][]gatewayv1.ParentReference, len(t.in.HTTPRoutes)+len(t.in.GRPCRoutes)+len(t.in.TLSRoutes))
		for i := range t.in.HTTPRoutes {
			r := &t.in.HTTPRoutes[i]
			t.routeParents[ref(string(kindHTTPRoute), r.Namespace, r.Name)] = r.Spec.ParentRefs
		}
		for i := range t.in.GRPCRoutes {
			r := &t.in.GRPCRoutes[i]
			t.routeParents[ref(string(kindGRPCRoute), r.Namespace, r.Name)] = r.Spec.ParentRefs
		}
		for i := range t.in.TLSRoutes {
			r := &t.in.TLSRoutes[i]
			t.routeParents[ref(string(kindTLSRoute), r.Namespace, r.Name)] = r.Spec.ParentRefs
		}
	}
	refs = t.routeParents[route]
	var out []*gatewayInfo
	for _, pr := range refs {
		ns := route.Namespace
		if pr.Namespace != nil {
			ns = string(*pr.Namespace)
		}
		if gw := t.gateways[types.NamespacedName{Namespace: ns, Name: string(pr.Name)}]; gw != nil && !slices.Contains(out, gw) {
			out = append(out, gw)
		}
	}
	slices.SortFunc(out, func(a, b *gatewayInfo) int {
		return cmp.Or(cmp.Compare(a.gw.Namespace, b.gw.Namespace), cmp.Compare(a.gw.Name, b.gw.Name))
	})
	return out
}
