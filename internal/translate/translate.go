// Package translate turns Gateway API objects (GatewayClass, Gateway,
// HTTPRoute, GRPCRoute, TLSRoute) and the Services, EndpointSlices,
// ServiceImports and Secrets they point at into the service-network model:
// networks, services, target groups and certificates.
//
// It owns the mapping rules and names every input it cannot honour as a
// Problem (object, field, reason), so that providers can surface it as a
// status condition or a log line. It is pure: no I/O, no clock, and no
// knowledge of where the objects came from (files or a Kubernetes API
// server), so every provider shares it. It must not write status, touch the
// store, or mutate its input.
package translate

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
)

// The controller names that make a GatewayClass ours.
const (
	// ServiceNetworkController marks east-west classes: each Gateway is a
	// service network (Lattice semantics).
	ServiceNetworkController gatewayv1.GatewayController = "trellis.dev/service-network"
	// EdgeController marks north-south classes: each Gateway is a set of
	// listeners at its own address.
	EdgeController gatewayv1.GatewayController = "trellis.dev/gateway"
)

// DomainSuffix ends every service network's domain: the Gateway "my-hotel"
// makes the network domain "my-hotel.trellis.internal".
const DomainSuffix = "trellis.internal"

// Input is every object the translator considers. Objects must be unique by
// kind, namespace and name; order does not matter.
type Input struct {
	// Cluster owns every produced object and every target, e.g. "local".
	Cluster         string
	GatewayClasses  []gatewayv1.GatewayClass
	Gateways        []gatewayv1.Gateway
	HTTPRoutes      []gatewayv1.HTTPRoute
	GRPCRoutes      []gatewayv1.GRPCRoute
	TLSRoutes       []gatewayv1.TLSRoute
	ReferenceGrants []gatewayv1.ReferenceGrant
	// AuthPolicies turn auth on for the Gateways and routes they target.
	AuthPolicies []v1alpha1.AuthPolicy
	// TargetGroupPolicies set the health checks of the target groups made
	// from the Services they target.
	TargetGroupPolicies []v1alpha1.TargetGroupPolicy
	Services            []corev1.Service
	EndpointSlices      []discoveryv1.EndpointSlice
	// ServiceImports are the Multi-Cluster Services imports routes may
	// name as backends (GEP-1748). A backend to one becomes a model
	// backend naming the import; the proxies find its endpoints in the
	// ServiceExports of every cluster, so none are needed here.
	ServiceImports []mcsv1beta1.ServiceImport
	// Secrets are the TLS certificates HTTPS listeners name; a provider may
	// pass only Secrets of type kubernetes.io/tls.
	Secrets []corev1.Secret
	// Pods are the cluster's pods, for the workload identities auth
	// policies match (WorkloadSets). A provider without pods (files)
	// leaves it empty, and every caller is anonymous.
	Pods []corev1.Pod
	// Namespaces are consulted by listeners that admit routes by namespace
	// selector; a route in a namespace not listed matches no selector.
	Namespaces []corev1.Namespace
	// GatewayAddresses are the IP addresses the provider assigned to edge
	// Gateways that request none in spec.addresses, keyed "namespace/name".
	// A provider that assigns addresses (the controller) sets it, even
	// empty: an edge Gateway it assigned nothing is then not programmed. A
	// provider that does not (the file provider, whose proxy binds one
	// configured address) leaves it nil.
	GatewayAddresses map[string][]string
	// GatewayAPIVersion is the bundle version of the installed Gateway API
	// CRDs ("v1.6.3"), when the provider knows it; GatewayClasses then
	// report whether it is supported.
	GatewayAPIVersion string
}

// Output is the model translated from an Input. Every produced object passes
// its model Validate. Each list is sorted by name.
type Output struct {
	// Objects are the model objects. Certificates are those the produced
	// services' listeners name; WorkloadSets name the cluster's pods by
	// address, one set per namespace that has any (from Input.Pods).
	model.Objects
	// Problems lists every input that is invalid or not supported, grouped by
	// object. Objects outside trellis's GatewayClasses produce none.
	Problems []Problem `json:"problems,omitempty"`
	// Status is what a provider that can report back (the controller)
	// writes into the objects' status. It agrees with Problems.
	Status Status `json:"status,omitzero"`
	// Changed is set by Incremental when it knows what changed: the model
	// keys (model.Key) of the objects that may differ from, be new since or
	// be gone since the output it last had acknowledged. Every other object
	// is as it was then. Nil means unknown: any object may have changed.
	Changed map[string]bool `json:"-"`
	// Retranslated is set by Incremental with Changed: the routes this
	// call translated rather than kept from the last call, whose
	// status may therefore differ from the last call's. Every other
	// route's status is the last call's.
	Retranslated []model.SourceRef `json:"-"`
	// RetranslatedPolicies is set by Incremental with Changed: the
	// TargetGroupPolicies whose status this call made again, and the
	// AuthPolicies whose status differs from the last call's. Every other
	// policy's status is the last call's.
	RetranslatedPolicies []model.SourceRef `json:"-"`
}

// Problem is one input the translator could not honour.
type Problem struct {
	// Object is the offending Kubernetes object. Translate leaves File empty;
	// a provider that knows it may fill it in.
	Object model.SourceRef `json:"object"`
	// Field is a path into Object, e.g. "spec.rules[0].backendRefs[1].weight".
	Field string `json:"field,omitempty"`
	// Reason is a Gateway API condition reason where one fits.
	Reason string `json:"reason"`
	// Message says what is wrong for a human.
	Message string `json:"message"`
}

// String formats p as "file: Kind namespace/name: field: message (Reason)".
func (p Problem) String() string {
	var b strings.Builder
	if p.Object.File != "" {
		b.WriteString(p.Object.File + ": ")
	}
	b.WriteString(p.Object.Kind + " ")
	if p.Object.Namespace != "" {
		b.WriteString(p.Object.Namespace + "/")
	}
	b.WriteString(p.Object.Name + ": ")
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	fmt.Fprintf(&b, "%s (%s)", p.Message, p.Reason)
	return b.String()
}

// Reasons for which the Gateway API defines no condition reason.
const (
	// ReasonNameConflict: two inputs translate to the same model name. The
	// first claimant keeps it: Gateways and routes are met in namespace/name
	// order, target groups through the routes that use them.
	ReasonNameConflict = "NameConflict"
)

// Translate maps in to the model. It is deterministic and never fails: what it
// cannot translate it reports in Output.Problems and leaves out (a listener,
// a parent, a route) or answers with 500 (a backend or a rule), as the Gateway
// API requires.
func Translate(in *Input) *Output {
	return translate(newTranslator(in, nil))
}

// translate runs t's translation.
func translate(t *translator) *Output {
	t.translateClasses()
	t.translateGateways()
	t.resolveTargetGroupPolicies()
	t.translateRoutes()
	t.translateAuthPolicies()
	t.translateWorkloadsOnce()
	for _, key := range t.gatewayOrder {
		t.out.Status.Gateways = append(t.out.Status.Gateways, t.gatewayStatus(t.gateways[key]))
	}
	return t.output()
}

// translator holds the indexes and results of one Translate call.
type translator struct {
	in  *Input
	out Output
	// seen dedupes problems: the same rule translated for two networks
	// reports its problems once.
	seen map[Problem]bool

	classes map[string]*classInfo
	// gateways holds the Gateways of our classes; foreign those of any other
	// (or no) class, which belong to someone else.
	gateways     map[types.NamespacedName]*gatewayInfo
	gatewayOrder []types.NamespacedName
	foreign      map[types.NamespacedName]bool
	networks     map[string]types.NamespacedName // network name → Gateway that made it
	namespaces   map[string]*corev1.Namespace
	// grants holds the ReferenceGrants by the namespace they grant access to.
	grants map[string][]*gatewayv1.ReferenceGrant
	// cur is the route being translated; its problems are collected for
	// its status.
	cur *routeState

	// kubeServices and endpointSlices (by Service) are indexed on first
	// use: kubeService, slicesOf.
	kubeServices   map[types.NamespacedName]*corev1.Service
	imports        map[types.NamespacedName]*mcsv1beta1.ServiceImport
	secrets        map[types.NamespacedName]*corev1.Secret
	certs          map[string]*certificateEntry // by name
	certsUsed      map[string]bool
	endpointSlices map[types.NamespacedName][]*discoveryv1.EndpointSlice // by Service
	serviceRoutes  map[string]model.SourceRef                            // model service name → route
	tgs            map[string]*targetGroupEntry                          // by name
	tgsUsed        map[string]bool
	// tgPolicies are the TargetGroupPolicies that apply, by Service.
	tgPolicies map[types.NamespacedName]*tgPolicy
	// routeParents are the parentRefs of each route, by source; nil until
	// an AuthPolicy needs one (routeGateways).
	routeParents map[model.SourceRef][]gatewayv1.ParentReference

	// inc is set when an Incremental translates; rec is then the record
	// of the route (or WorkloadSets) being translated.
	inc *incCall
	rec *record
}

// classInfo is one of our GatewayClasses.
type classInfo struct {
	mode       model.NetworkMode
	controller gatewayv1.GatewayController
	// rejected says why the class is not accepted; empty when it is.
	rejected string
}

// scratch are the maps of a translator that grow with the routes, which an
// Incremental hands, cleared, from one call to the next rather than making
// them again: at 10,000 routes they are a quarter of what a call allocates.
type scratch struct {
	serviceRoutes map[string]model.SourceRef
	tgs           map[string]*targetGroupEntry
	tgsUsed       map[string]bool
}

// newTranslator makes the translator of in, with the maps of s (cleared)
// when s is not nil.
func newTranslator(in *Input, s *scratch) *translator {
	routes := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TLSRoutes)
	if s == nil {
		s = &scratch{
			serviceRoutes: make(map[string]model.SourceRef, routes),
			tgs:           make(map[string]*targetGroupEntry, routes),
			tgsUsed:       make(map[string]bool, routes),
		}
	} else {
		clear(s.serviceRoutes)
		clear(s.tgs)
		clear(s.tgsUsed)
	}
	t := &translator{
		in:            in,
		seen:          map[Problem]bool{},
		classes:       map[string]*classInfo{},
		gateways:      map[types.NamespacedName]*gatewayInfo{},
		foreign:       map[types.NamespacedName]bool{},
		networks:      map[string]types.NamespacedName{},
		imports:       map[types.NamespacedName]*mcsv1beta1.ServiceImport{},
		serviceRoutes: s.serviceRoutes,
		secrets:       map[types.NamespacedName]*corev1.Secret{},
		certs:         map[string]*certificateEntry{},
		certsUsed:     map[string]bool{},
		tgs:           s.tgs,
		tgsUsed:       s.tgsUsed,
		namespaces:    map[string]*corev1.Namespace{},
		grants:        map[string][]*gatewayv1.ReferenceGrant{},
	}
	for i := range in.Namespaces {
		t.namespaces[in.Namespaces[i].Name] = &in.Namespaces[i]
	}
	for _, g := range sortedByName(in.ReferenceGrants, func(g *gatewayv1.ReferenceGrant) (string, string) { return g.Namespace, g.Name }) {
		t.grants[g.Namespace] = append(t.grants[g.Namespace], g)
	}
	for _, si := range sortedByName(in.ServiceImports, func(s *mcsv1beta1.ServiceImport) (string, string) { return s.Namespace, s.Name }) {
		key := types.NamespacedName{Namespace: si.Namespace, Name: si.Name}
		if t.imports[key] == nil {
			t.imports[key] = si
		}
	}
	for _, s := range sortedByName(in.Secrets, func(s *corev1.Secret) (string, string) { return s.Namespace, s.Name }) {
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		if t.secrets[key] == nil {
			t.secrets[key] = s
		}
	}
	return t
}

// kubeService returns the Service key names, or nil. Of two with one key,
// the first in the input is used.
func (t *translator) kubeService(key types.NamespacedName) *corev1.Service {
	if t.inc != nil && t.inc.fast {
		if i, ok := t.inc.x.servicePositions(t.in)[key]; ok {
			return &t.in.Services[i]
		}
		return nil
	}
	if t.kubeServices == nil {
		t.kubeServices = make(map[types.NamespacedName]*corev1.Service, len(t.in.Services))
		for i := range t.in.Services {
			s := &t.in.Services[i]
			key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
			if t.kubeServices[key] == nil {
				t.kubeServices[key] = s
			}
		}
	}
	return t.kubeServices[key]
}

// slicesOf returns the EndpointSlices of the Service key, by name.
func (t *translator) slicesOf(key types.NamespacedName) []*discoveryv1.EndpointSlice {
	of := func(es *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
		svc := es.Labels[discoveryv1.LabelServiceName]
		return types.NamespacedName{Namespace: es.Namespace, Name: svc}, svc != ""
	}
	byName := func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) }
	if t.inc != nil && t.inc.fast {
		var out []*discoveryv1.EndpointSlice
		for _, i := range t.inc.x.slicePositions(t.in)[key] {
			out = append(out, &t.in.EndpointSlices[i])
		}
		return out
	}
	if t.endpointSlices == nil {
		t.endpointSlices = map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
		for i := range t.in.EndpointSlices {
			if k, ok := of(&t.in.EndpointSlices[i]); ok {
				t.endpointSlices[k] = append(t.endpointSlices[k], &t.in.EndpointSlices[i])
			}
		}
		for _, l := range t.endpointSlices {
			slices.SortStableFunc(l, byName)
		}
	}
	return t.endpointSlices[key]
}

// problem records one problem, once, and returns it.
func (t *translator) problem(obj model.SourceRef, field, reason, format string, args ...any) Problem {
	p := Problem{Object: obj, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)}
	if t.rec != nil {
		t.rec.problems = append(t.rec.problems, p)
	}
	if t.addProblem(p) && t.cur != nil && t.cur.src == obj {
		t.cur.problems = append(t.cur.problems, p)
	}
	return p
}

// addProblem adds p to the output unless it is there already, and reports
// whether it added it.
func (t *translator) addProblem(p Problem) bool {
	if t.seen[p] {
		return false
	}
	t.seen[p] = true
	t.out.Problems = append(t.out.Problems, p)
	return true
}

// invalid records a model validation failure of an object translated from
// obj as problems, mapping each model field to the input field it came from.
func (t *translator) invalid(obj model.SourceRef, err error, field func(string) string) {
	var fes model.FieldErrors
	if !errors.As(err, &fes) {
		t.problem(obj, "", string(gatewayv1.RouteReasonUnsupportedValue), "%v", err)
		return
	}
	for _, fe := range fes {
		if f := field(fe.Field); f != "" {
			t.problem(obj, f, string(gatewayv1.RouteReasonUnsupportedValue), "%s", fe.Detail)
		} else {
			t.problem(obj, "", string(gatewayv1.RouteReasonUnsupportedValue), "translates to an invalid model object: %v", fe)
		}
	}
}

func (t *translator) output() *Output {
	slices.SortFunc(t.out.Networks, func(a, b model.ServiceNetwork) int { return cmp.Compare(a.Name, b.Name) })
	if t.inc == nil || !t.inc.fast { // patchRoutes made them sorted
		slices.SortFunc(t.out.Services, func(a, b model.Service) int { return cmp.Compare(a.Name, b.Name) })
		// Only the target groups of produced services: a route that failed to
		// attach or validate leaves none behind.
		// Sorted by name before they are copied: a target group is large.
		t.out.TargetGroups = make([]model.TargetGroup, 0, len(t.tgsUsed))
		for _, name := range slices.Sorted(maps.Keys(t.tgsUsed)) {
			t.out.TargetGroups = append(t.out.TargetGroups, *t.tgs[name].tg)
		}
	}
	for name := range t.certsUsed {
		t.out.Certificates = append(t.out.Certificates, *t.certs[name].cert)
	}
	slices.SortFunc(t.out.Certificates, func(a, b model.Certificate) int { return cmp.Compare(a.Name, b.Name) })
	t.out.Status.sort(t.inc == nil || !t.inc.fast)
	// Group problems by object; within one object they stay in the order
	// found, which follows the object's fields.
	slices.SortStableFunc(t.out.Problems, func(a, b Problem) int {
		return cmp.Or(
			cmp.Compare(a.Object.Kind, b.Object.Kind),
			cmp.Compare(a.Object.Namespace, b.Object.Namespace),
			cmp.Compare(a.Object.Name, b.Object.Name))
	})
	return &t.out
}

// sortedByName returns pointers to the elements of objs ordered by namespace
// and name, leaving objs untouched.
func sortedByName[T any](objs []T, key func(*T) (ns, name string)) []*T {
	out := make([]*T, len(objs))
	for i := range objs {
		out[i] = &objs[i]
	}
	slices.SortStableFunc(out, func(a, b *T) int {
		ans, an := key(a)
		bns, bn := key(b)
		return cmp.Or(cmp.Compare(ans, bns), cmp.Compare(an, bn))
	})
	return out
}

// ref returns the SourceRef of a Kubernetes object.
func ref(kind, namespace, name string) model.SourceRef {
	return model.SourceRef{Kind: kind, Namespace: namespace, Name: name}
}

// deref returns *p, or def when p is nil.
func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
