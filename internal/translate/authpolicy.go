package translate

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// authRecord is what attaching one AuthPolicy made: an Incremental keeps
// it until an input of the policy changes (authIndex).
type authRecord struct {
	key objectKey
	// created is the policy's creationTimestamp: of the policies that
	// claim one target, the oldest (then the first by namespace and name)
	// holds it.
	created metav1.Time
	// targets are the Gateways and routes its targetRefs claim (of the
	// Gateway API group and a kind it attaches to), each once.
	targets []objectKey
	auth    *model.Auth
	status  PolicyStatus
	// problems are the problems it reported, in order.
	problems []Problem
}

// olderPolicy orders policies as attachment meets them: oldest first, then
// by namespace and name.
func olderPolicy(a, b *authRecord) int {
	return cmp.Or(a.created.Compare(b.created.Time), cmp.Compare(a.key.namespace, b.key.namespace), cmp.Compare(a.key.name, b.key.name))
}

// authIndex is the attachment of every AuthPolicy: who claims each target,
// and what each policy made, kept by an Incremental between calls so that
// a call attaches again only the policies whose inputs changed
// (patchAuthPolicies).
type authIndex struct {
	recs map[objectKey]*authRecord
	// claimants are, by target, the policies claiming it, oldest first:
	// the first holds it when it exists.
	claimants map[objectKey][]*authRecord
	// statuses are every policy's status, in name order.
	statuses []PolicyStatus
	// problems are the records of the policies that reported any.
	problems map[objectKey]*authRecord
}

// holder returns the policy that holds target k when k exists, or nil.
func (ax *authIndex) holder(k objectKey) *authRecord {
	if l := ax.claimants[k]; len(l) > 0 {
		return l[0]
	}
	return nil
}

// claim adds r's claims to the index, in age order.
func (ax *authIndex) claim(r *authRecord) {
	ax.recs[r.key] = r
	for _, k := range r.targets {
		l := ax.claimants[k]
		i, _ := slices.BinarySearchFunc(l, r, olderPolicy)
		ax.claimants[k] = slices.Insert(l, i, r)
	}
}

// unclaim removes what claim added for r, and its problems.
func (ax *authIndex) unclaim(r *authRecord) {
	delete(ax.recs, r.key)
	delete(ax.problems, r.key)
	for _, k := range r.targets {
		removeFromList(ax.claimants, k, r)
	}
}

// newAuthRecord makes the record of p, with its claims but nothing
// attached yet.
func newAuthRecord(p *v1alpha1.AuthPolicy) *authRecord {
	r := &authRecord{key: objectKey{kindAuthPolicy, p.Namespace, p.Name}, created: p.CreationTimestamp}
	for _, tr := range p.Spec.TargetRefs {
		if tr.Group != gatewayv1.GroupName {
			continue
		}
		switch tr.Kind {
		case "Gateway", kindHTTPRoute, kindGRPCRoute, kindTLSRoute:
			r.targets = append(r.targets, objectKey{string(tr.Kind), p.Namespace, string(tr.Name)})
		}
	}
	// Each once, in O(n log n) however many targetRefs a file gives.
	slices.SortFunc(r.targets, func(a, b objectKey) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.name, b.name))
	})
	r.targets = slices.Clip(slices.Compact(r.targets))
	return r
}

// translateAuthPolicies attaches the AuthPolicies to the networks and
// services already translated. A target claimed by several policies is
// held by the oldest, and the others are Conflicted there. A policy whose
// document is invalid is attached as one that denies everything, and
// reported Invalid. An Incremental that attached them before attaches
// again only those whose inputs changed (patchAuthPolicies).
func (t *translator) translateAuthPolicies() {
	if t.inc != nil && t.inc.fast && t.inc.x.auth != nil {
		if at := t.inc.x.authPositions(t.in); len(at) == len(t.in.AuthPolicies) {
			t.patchAuthPolicies(at)
			return
		}
	}
	t.attachAuthPolicies()
}

// attachAuthPolicies attaches every AuthPolicy, and makes the index an
// Incremental keeps.
func (t *translator) attachAuthPolicies() {
	fast := t.inc != nil && t.inc.fast
	if t.inc != nil {
		t.inc.x.auth = nil
	}
	if fast {
		// The index's services, which may hold the last call's auth.
		for i := range t.out.Services {
			if s := &t.out.Services[i]; s.Auth != nil {
				s.Auth = nil
				t.inc.changed[model.Key(model.KindService, s.Name)] = true
			}
		}
	}
	ax := &authIndex{
		recs:      make(map[objectKey]*authRecord, len(t.in.AuthPolicies)),
		claimants: make(map[objectKey][]*authRecord, len(t.in.AuthPolicies)),
		problems:  map[objectKey]*authRecord{},
	}
	if len(t.in.AuthPolicies) > 0 {
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
		recs := make([]*authRecord, len(named))
		for _, i := range order {
			r := newAuthRecord(named[i])
			recs[i] = r
			ax.recs[r.key] = r
			for _, k := range r.targets {
				ax.claimants[k] = append(ax.claimants[k], r)
			}
		}
		services := map[model.SourceRef][]*model.Service{}
		for i := range t.out.Services {
			if s := &t.out.Services[i]; s.Source != nil {
				services[*s.Source] = append(services[*s.Source], s)
			}
		}
		servicesOf := func(k objectKey) []*model.Service { return services[ref(k.kind, k.namespace, k.name)] }
		networks := t.networksByName()
		for _, i := range order {
			t.attachAuthPolicy(ax, recs[i], named[i], networks, servicesOf)
		}
		ax.statuses = make([]PolicyStatus, len(named))
		for i, r := range recs {
			ax.statuses[i] = r.status
		}
		slices.SortFunc(ax.statuses, comparePolicyStatus)
		for k := range ax.claimants {
			if isRouteKind(k.kind) {
				h := ax.holder(k)
				for _, s := range servicesOf(k) {
					s.Auth = h.auth
					if fast {
						t.inc.changed[model.Key(model.KindService, s.Name)] = true
					}
				}
			}
		}
		t.authNetworks(ax, networks)
		t.out.Status.Policies = ax.statuses
	}
	if t.inc == nil {
		return
	}
	if fast {
		t.inc.authRemade = t.inc.x.authRemade(t.out.Status.Policies)
	}
	if len(ax.recs) == len(t.in.AuthPolicies) { // else two of a key: attached in full every time
		ax.statuses = slices.Clone(ax.statuses)
		t.inc.x.auth = ax
	}
}

// networksByName returns the output's networks by name.
func (t *translator) networksByName() map[string]*model.ServiceNetwork {
	networks := make(map[string]*model.ServiceNetwork, len(t.out.Networks))
	for i := range t.out.Networks {
		networks[t.out.Networks[i].Name] = &t.out.Networks[i]
	}
	return networks
}

// authNetworks gives each network whose Gateway a policy holds that
// policy's auth (the networks are made again on every call).
func (t *translator) authNetworks(ax *authIndex, networks map[string]*model.ServiceNetwork) {
	for key, gw := range t.gateways {
		if gw.network == "" {
			continue
		}
		if h := ax.holder(objectKey{"Gateway", key.Namespace, key.Name}); h != nil {
			if n := networks[gw.network]; n != nil {
				n.Auth = h.auth
			}
		}
	}
}

// patchAuthPolicies attaches again the policies whose inputs changed
// since the last call: the policy itself, or a target it claims, whose
// holder (a policy claiming it added, removed or changed) or whose
// services and parents (a route translated again) may differ. Gateways
// do not change here (a change to one translates everything). Every other
// policy's status and problems are the last call's. at is where each
// policy is in the Input.
func (t *translator) patchAuthPolicies(at map[objectKey]int) {
	c := t.inc
	x := c.x
	ax := x.auth
	if len(ax.recs) == 0 && len(c.authChanged) == 0 {
		return // no policy, then or now
	}
	// targets are those whose holder, services or parents may have
	// changed; again the policies to attach again.
	targets := map[objectKey]bool{}
	again := map[objectKey]bool{}
	slices.SortFunc(c.authChanged, func(a, b objectKey) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	c.authChanged = slices.Compact(c.authChanged)
	var drop []PolicyStatus
	for _, k := range c.authChanged {
		if old := ax.recs[k]; old != nil {
			ax.unclaim(old)
			for _, tk := range old.targets {
				targets[tk] = true
			}
		}
		i, ok := at[k]
		if !ok {
			drop = append(drop, PolicyStatus{Namespace: k.namespace, Name: k.name})
			delete(x.authParsed, k)
			continue
		}
		r := newAuthRecord(&t.in.AuthPolicies[i])
		ax.claim(r)
		for _, tk := range r.targets {
			targets[tk] = true
		}
		again[k] = true
	}
	for _, k := range c.patched {
		targets[k] = true
	}
	for k := range targets {
		for _, r := range ax.claimants[k] {
			again[r.key] = true
		}
	}
	networks := t.networksByName()
	servicesOf := t.indexedServices
	var put []PolicyStatus
	for _, k := range slices.SortedFunc(maps.Keys(again), func(a, b objectKey) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	}) {
		r := ax.recs[k]
		problems := len(t.out.Problems)
		t.attachAuthPolicy(ax, r, &t.in.AuthPolicies[at[k]], networks, servicesOf)
		// Its problems go to the output with every policy's, below.
		for _, p := range t.out.Problems[problems:] {
			delete(t.seen, p)
		}
		t.out.Problems = t.out.Problems[:problems]
		j, found := slices.BinarySearchFunc(ax.statuses, &r.status, func(e PolicyStatus, st *PolicyStatus) int { return comparePolicyStatus(e, *st) })
		if !found || !reflect.DeepEqual(ax.statuses[j], r.status) {
			c.authRemade = append(c.authRemade, ref(kindAuthPolicy, k.namespace, k.name))
		}
		put = append(put, r.status)
	}
	ax.statuses = patchList(ax.statuses, drop, put, func(a, b *PolicyStatus) int { return comparePolicyStatus(*a, *b) }, func(_, _ *PolicyStatus) bool { return true })
	for k := range targets {
		if !isRouteKind(k.kind) {
			continue
		}
		var auth *model.Auth
		if h := ax.holder(k); h != nil {
			auth = h.auth
		}
		for _, s := range servicesOf(k) {
			if s.Auth != auth {
				s.Auth = auth
				c.changed[model.Key(model.KindService, s.Name)] = true
			}
		}
	}
	t.authNetworks(ax, networks)
	for _, r := range ax.problems {
		for _, p := range r.problems {
			t.addProblem(p)
		}
	}
	if len(ax.statuses) > 0 {
		t.out.Status.Policies = nonNil(ax.statuses)
	}
}

// indexedServices returns the services route k made, as the index's list
// holds them (an Incremental's call that patches the routes).
func (t *translator) indexedServices(k objectKey) []*model.Service {
	ix := t.inc.x.index
	r := ix.recs[k]
	if r == nil {
		return nil
	}
	var out []*model.Service
	for i := range r.services {
		j, found := slices.BinarySearchFunc(ix.services, r.services[i].Name, func(s model.Service, name string) int { return cmp.Compare(s.Name, name) })
		if found && sameSource(&ix.services[j], &r.services[i]) {
			out = append(out, &ix.services[j])
		}
	}
	return out
}

func comparePolicyStatus(a, b PolicyStatus) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// maxTargetRefs is the AuthPolicy CRD's bound on spec.targetRefs
// (api/v1alpha1).
const maxTargetRefs = 16

// attachAuthPolicy attaches p (whose record, claims made, is r) where it
// holds its targets, and makes its status and problems in r. servicesOf
// gives the services a route made.
func (t *translator) attachAuthPolicy(ax *authIndex, r *authRecord, p *v1alpha1.AuthPolicy, networks map[string]*model.ServiceNetwork, servicesOf func(objectKey) []*model.Service) {
	problems := len(t.out.Problems)
	src := ref(kindAuthPolicy, p.Namespace, p.Name)
	st := PolicyStatus{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation}
	doc, invalid := t.authDocument(p, src)
	if r.auth == nil {
		r.auth = &model.Auth{Policy: doc, Source: &src}
	}

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
	// many indexes outcomes by key once there are more than the CRD
	// allows targetRefs (a file is not bounded): one look-up each rather
	// than a walk, so that 40,000 targetRefs cost seconds less than 10^9
	// steps.
	var many map[string]int
	find := func(key string) int {
		if many != nil {
			if i, ok := many[key]; ok {
				return i
			}
			return -1
		}
		return slices.IndexFunc(outcomes, func(o outcome) bool { return o.key == key })
	}
	note := func(anc gatewayv1.ParentReference, controller gatewayv1.GatewayController, reason, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		key := string(*anc.Kind) + "/" + string(*anc.Namespace) + "/" + string(anc.Name)
		if i := find(key); i >= 0 {
			if outcomes[i].reason == string(gatewayv1.PolicyReasonAccepted) && reason != outcomes[i].reason {
				outcomes[i].reason, outcomes[i].message = reason, msg
			}
			return
		}
		outcomes = append(outcomes, outcome{key, anc, controller, reason, msg})
		switch {
		case many != nil:
			many[key] = len(outcomes) - 1
		case len(outcomes) > maxTargetRefs:
			many = make(map[string]int, 2*len(outcomes))
			for i := range outcomes {
				many[outcomes[i].key] = i
			}
		}
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
	// held are the targets this policy holds and has attached to: a
	// second targetRef to one finds it taken, by this policy.
	held := map[objectKey]bool{}
	// holds reports whether the policy holds k and attaches to it now;
	// else by is the policy whose it is.
	holds := func(k objectKey) (by string, ok bool) {
		h := ax.holder(k)
		if h == r && !held[k] {
			held[k] = true
			return "", true
		}
		return h.key.name, false
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
		k := objectKey{kind, p.Namespace, string(tr.Name)}
		switch tr.Kind {
		case "Gateway":
			gw := t.gateways[types.NamespacedName{Namespace: p.Namespace, Name: string(tr.Name)}]
			if gw == nil || gw.network == "" {
				missing(field, kind, string(tr.Name), "Gateway %s/%s is not one of trellis's accepted Gateways", p.Namespace, tr.Name)
				continue
			}
			if networks[gw.network] == nil {
				missing(field, kind, string(tr.Name), "Gateway %s/%s makes no network", p.Namespace, tr.Name)
				continue
			}
			if by, ok := holds(k); !ok {
				t.problem(src, field, string(gatewayv1.PolicyReasonConflicted), "Gateway %s/%s already has AuthPolicy %s, which is older", p.Namespace, tr.Name, by)
				note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonConflicted), "the Gateway already has AuthPolicy %s, which is older", by)
				continue
			}
			accepted(gw)
		case kindHTTPRoute, kindGRPCRoute, kindTLSRoute:
			if len(servicesOf(k)) == 0 {
				missing(field, kind, string(tr.Name), "%s %s/%s is not served by any trellis Gateway", kind, p.Namespace, tr.Name)
				continue
			}
			parents := t.routeGateways(ref(kind, p.Namespace, string(tr.Name)))
			if by, ok := holds(k); !ok {
				t.problem(src, field, string(gatewayv1.PolicyReasonConflicted), "%s %s/%s already has AuthPolicy %s, which is older", kind, p.Namespace, tr.Name, by)
				for _, gw := range parents {
					note(gateway(gw), gw.controller, string(gatewayv1.PolicyReasonConflicted), "%s %s already has AuthPolicy %s, which is older", kind, tr.Name, by)
				}
				continue
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
	r.status = st
	r.problems = slices.Clone(t.out.Problems[problems:])
	if len(r.problems) > 0 {
		ax.problems[r.key] = r
	} else {
		delete(ax.problems, r.key)
	}
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
	if t.inc != nil && t.inc.fast {
		// The route by its position (findRoutes).
		if r, ok := t.inc.x.route(t.in, objectKey{route.Kind, route.Namespace, route.Name}); ok {
			refs = r.spec.ParentRefs
		}
	} else if t.routeParents == nil {
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
	if t.routeParents != nil {
		refs = t.routeParents[route]
	}
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
