package translate

import (
	"cmp"
	"maps"
	"reflect"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"trellis.dev/trellis/internal/model"
)

// Incremental translates a sequence of Inputs, each a change of the one
// before, re-translating only the routes that read an object that changed
// and patching the last Output with what they make; every other route's
// part of the Output is kept as it was. Its Output is always the one
// Translate would give for the same Input (TestIncrementalMatchesTranslate
// holds it to that).
//
// An object has changed when its metadata.resourceVersion differs from the
// last Input's, or is empty (so an Input without versions is translated in
// full). A provider must therefore give an object a new resourceVersion
// whenever its content changes, as the Kubernetes API server does; the file
// provider sets it to a hash of the object's document.
//
// What a route reads, and so what makes it translate again: the route
// itself; the Services, their EndpointSlices (by the service-name label)
// and the ServiceImports its backends name; the ReferenceGrants of the
// namespaces it refers into; and the TargetGroupPolicies naming those
// Services (a policy's change counts as a change of the Services it
// targets, before and after). An index from each of those to the routes that
// read it (routeIndex) finds them without visiting the others. A change to
// a GatewayClass, Gateway, Secret or Namespace, to a ReferenceGrant a
// Gateway consulted, or to the Input's Cluster, GatewayAddresses or
// GatewayAPIVersion translates everything; Gateways and GatewayClasses are
// translated on every call (they are few), and the WorkloadSets whenever a
// Pod changed. AuthPolicies are attached again when they changed, or when
// a target they claim may have another holder or other services or
// parents (patchAuthPolicies). A route is translated again all the
// same when what it sees of the routes before it changes: a service name
// it claims, or a target group name it looks up, taken or freed by a route
// before it that was translated again.
//
// The zero value is ready to use. An Incremental is not safe for concurrent
// use.
type Incremental struct {
	primed  bool
	scalars scalars
	// lists are the last Input's objects by kind, in its order.
	lists map[string][]seenObject
	// gatewayGrants are the namespaces whose ReferenceGrants the Gateways
	// consulted (for certificates in other namespaces).
	gatewayGrants map[string]bool
	// index is what the routes made and read, kept between calls; nil
	// until a call translated everything.
	index     *routeIndex
	workloads *record
	// auth is the AuthPolicies' attachment, kept between calls; nil until
	// a call attached every policy, or when two policies share a key.
	auth *authIndex
	// authAt is where each AuthPolicy is in the Input; nil when the list
	// changed otherwise than in its elements' content, until one is needed.
	authAt map[objectKey]int
	// authStatuses are the AuthPolicies' statuses of the last output, in
	// name order.
	authStatuses []PolicyStatus
	// authParsed are the AuthPolicies whose document parsed, by the
	// resourceVersion it parsed at.
	authParsed map[objectKey]string
	// tgpTargets are the Services each TargetGroupPolicy of the last Input
	// targets, and tgpTargeted how many policies target each.
	tgpTargets  map[objectKey][]dep
	tgpTargeted map[dep]int
	// tgp is the last call's resolution of the TargetGroupPolicies, which
	// a call updates with the policies and targeted Services that changed
	// (incCall.tgpChanged, tgpServices).
	tgp *tgpResolution
	// tgpAt is where each TargetGroupPolicy is in the Input; nil when
	// the list changed otherwise than in its elements' content, until one
	// is needed.
	tgpAt map[objectKey]int
	// whole are the keys of the networks and certificates of the last
	// output, made in full on every call.
	whole []string
	// positions are where each route is in the last Input's list of its
	// kind; stale when a list of routes changed otherwise than in its
	// elements' content (positionsStale).
	positions      map[objectKey]int
	positionsStale bool
	// services are where each Service is in the last Input (the first of
	// a key), slices where the EndpointSlices of each Service are, by
	// name; nil when that list changed otherwise than in its elements'
	// content (or a slice's Service label changed), until one is needed.
	services map[types.NamespacedName]int
	slices   map[types.NamespacedName][]int
	// changed are the model keys of the objects that may have changed since
	// Acknowledge; all is true when every object may have.
	changed map[string]bool
	all     bool
	// scratch are the last full call's maps, for the next.
	scratch *scratch
}

// scalars are the Input's fields other than object lists.
type scalars struct {
	cluster, apiVersion string
	addresses           map[string][]string
	hasAddresses        bool
}

type objectKey struct{ kind, namespace, name string }

type objectVersion struct {
	resourceVersion string
	// label is an EndpointSlice's service name.
	label string
}

// seenObject is one object of an Input and its version.
type seenObject struct {
	key     objectKey
	version objectVersion
}

// dep is an input a route's translation read: a route, Service,
// ServiceImport (by kind, namespace and name), the EndpointSlices of a
// Service (kind depSlices, the Service's namespace and name), or the
// ReferenceGrants of a namespace (kind depGrants, no name).
type dep = objectKey

const (
	depSlices = "EndpointSlices"
	depGrants = "ReferenceGrants"
)

// record is what translating one route (or the WorkloadSets) did: what
// it read, claimed and made, which the index (routeIndex) keeps until the
// route is translated again.
type record struct {
	src  model.SourceRef
	key  objectKey
	deps []dep
	// problems are every problem reported, in order, before
	// deduplication against the other routes'.
	problems []Problem
	// claims are the service names the route tried to take, with who held
	// each when it tried.
	claims []claim
	// tgs are the target groups its backends looked up.
	tgs          []tgUse
	services     []model.Service
	targetGroups []string
	certificates []string
	// status is the route's status; nil when it has none.
	status *RouteStatus
	// attached are the listeners its accepted parents counted it on.
	attached []listenerRef
	// workloadSets are the WorkloadSets made (the workloads record only).
	workloadSets []model.WorkloadSet
}

// claim is one service name a route tried to take, and whether it took it.
type claim struct {
	name string
	took bool
}

// tgUse is one look-up of a target group by name: the entry the route
// made, or what it found.
type tgUse struct {
	name    string
	created *targetGroupEntry
	svc     types.NamespacedName
	port    int32
	valid   bool
}

// listenerRef names a listener of a Gateway of ours by its index.
type listenerRef struct {
	gateway types.NamespacedName
	index   int
}

// incCall is one Incremental.Translate call's view, held by its translator.
type incCall struct {
	x *Incremental
	// dirty are the inputs that changed; nil when everything is translated.
	dirty map[dep]bool
	// fast says the routes are patched (patchRoutes) rather than all
	// translated; at is then the route being translated.
	fast bool
	at   objectKey
	// podsChanged says the WorkloadSets must be made again.
	podsChanged bool
	// changed collects the model keys of what was translated rather than
	// kept.
	changed map[string]bool
	// gatewayGrants collects the namespaces whose grants Gateways consulted.
	gatewayGrants map[string]bool
	// next collects the records of a full translation, in route order.
	next []*record
	// translated are the routes translated rather than kept.
	translated []model.SourceRef
	// tgpChanged are the TargetGroupPolicies that changed, tgpAt where
	// those still there are in the Input, and tgpServices the Services
	// that changed which policies target.
	tgpChanged  []objectKey
	tgpAt       map[objectKey]int
	tgpServices []types.NamespacedName
	// tgpRemade are the TargetGroupPolicies whose status was made again.
	tgpRemade []model.SourceRef
	// authChanged are the AuthPolicies that changed (added, changed or
	// removed); patched the routes patchRoutes translated again or
	// removed, when a policy claims any target; authRemade the
	// AuthPolicies whose status differs from the last call's.
	authChanged []objectKey
	patched     []objectKey
	authRemade  []model.SourceRef
}

// Translate translates in, reusing what it can of the previous call's
// work. The Incremental keeps nothing of in's lists (it compares the next
// Input with its own copy of each object's identity and resourceVersion),
// so a caller may replace their elements for the next call (the file
// provider does).
//
// The Output's Services, TargetGroups, Status.Routes, Status.Policies and
// Status.TargetGroupPolicies may be the Incremental's own lists, which the
// next call patches in place rather than copying 10,000 services for one
// that changed: they hold until the next call, and a caller must not change their elements (it may slice
// them, or replace a list with a copy it changes).
func (x *Incremental) Translate(in *Input) *Output {
	c := &incCall{x: x, changed: map[string]bool{}, gatewayGrants: map[string]bool{}}
	c.dirty, c.podsChanged = x.changes(in, c)
	if c.dirty != nil && !x.findRoutes(in) {
		c.dirty = nil // two routes of one key: which is used is the translator's business
	}
	c.fast = c.dirty != nil && x.index != nil
	if !c.fast {
		c.dirty = nil
		x.index, x.workloads, x.auth, x.tgp = nil, nil, nil, nil
	}
	var t *translator
	if c.fast {
		t = newTranslator(in, &scratch{serviceRoutes: map[string]model.SourceRef{}, tgs: map[string]*targetGroupEntry{}, tgsUsed: map[string]bool{}})
	} else {
		t = newTranslator(in, x.scratch)
	}
	t.inc = c
	out := translate(t)
	if !c.fast {
		// Nothing of the output refers to the maps.
		x.scratch = &scratch{serviceRoutes: t.serviceRoutes, tgs: t.tgs, tgsUsed: t.tgsUsed}
		x.index = newRouteIndex(c.next, out.Services, out.TargetGroups)
	}
	x.gatewayGrants = c.gatewayGrants
	// What is made in full every time may differ (the services whose auth
	// changed are marked by translateAuthPolicies).
	for _, k := range x.whole {
		c.changed[k] = true
	}
	x.whole = x.whole[:0]
	for i := range out.Networks {
		x.whole = append(x.whole, model.Key(model.KindServiceNetwork, out.Networks[i].Name))
	}
	for i := range out.Certificates {
		x.whole = append(x.whole, model.Key(model.KindCertificate, out.Certificates[i].Name))
	}
	for _, k := range x.whole {
		c.changed[k] = true
	}
	if !c.fast || !x.primed {
		x.all = true
	}
	x.primed = true
	if x.changed == nil {
		x.changed = map[string]bool{}
	}
	maps.Copy(x.changed, c.changed)
	if !x.all {
		out.Changed = maps.Clone(x.changed)
		out.Retranslated = c.translated
		out.RetranslatedPolicies = append(c.tgpRemade, c.authRemade...)
	}
	x.authStatuses = out.Status.Policies
	if len(x.authParsed) > len(in.AuthPolicies) {
		// Some are gone.
		live := make(map[objectKey]bool, len(in.AuthPolicies))
		for i := range in.AuthPolicies {
			live[objectKey{kindAuthPolicy, in.AuthPolicies[i].Namespace, in.AuthPolicies[i].Name}] = true
		}
		maps.DeleteFunc(x.authParsed, func(k objectKey, _ string) bool { return !live[k] })
	}
	return out
}

// authRemade names the AuthPolicies of statuses (this call's, in name
// order) whose status differs from the last call's or is new, when every
// policy was attached again (attachAuthPolicies).
func (x *Incremental) authRemade(statuses []PolicyStatus) []model.SourceRef {
	var remade []model.SourceRef
	last := x.authStatuses
	j := 0
	for i := range statuses {
		st := &statuses[i]
		for j < len(last) && cmp.Or(cmp.Compare(last[j].Namespace, st.Namespace), cmp.Compare(last[j].Name, st.Name)) < 0 {
			j++ // gone
		}
		if j < len(last) && last[j].Namespace == st.Namespace && last[j].Name == st.Name &&
			(i+1 == len(statuses) || statuses[i+1].Namespace != st.Namespace || statuses[i+1].Name != st.Name) &&
			(j+1 == len(last) || last[j+1].Namespace != st.Namespace || last[j+1].Name != st.Name) &&
			reflect.DeepEqual(*st, last[j]) {
			j++
			continue
		}
		remade = append(remade, ref(kindAuthPolicy, st.Namespace, st.Name))
	}
	return remade
}

// Acknowledge says that the caller has acted on the last Output (sent it),
// so that the next Output's Changed is relative to it.
func (x *Incremental) Acknowledge() {
	x.changed, x.all = nil, false
}

// forget marks what r made as changed: it is made again, or not at all.
func (c *incCall) forget(r *record) {
	for i := range r.services {
		c.changed[model.Key(model.KindService, r.services[i].Name)] = true
	}
	for _, tg := range r.targetGroups {
		c.changed[model.Key(model.KindTargetGroup, tg)] = true
	}
	for i := range r.workloadSets {
		c.changed[model.Key(model.KindWorkloadSet, r.workloadSets[i].Name)] = true
	}
}

// changes compares in with the last Input. dirty is nil when everything
// must be translated.
func (x *Incremental) changes(in *Input, c *incCall) (dirty map[dep]bool, podsChanged bool) {
	s := scalars{cluster: in.Cluster, apiVersion: in.GatewayAPIVersion, addresses: in.GatewayAddresses, hasAddresses: in.GatewayAddresses != nil}
	full := !x.primed || s.cluster != x.scalars.cluster || s.apiVersion != x.scalars.apiVersion || s.hasAddresses != x.scalars.hasAddresses ||
		!maps.EqualFunc(s.addresses, x.scalars.addresses, slices.Equal[[]string])
	x.scalars = s
	x.scalars.addresses = maps.Clone(in.GatewayAddresses)
	for k, v := range x.scalars.addresses {
		x.scalars.addresses[k] = slices.Clone(v)
	}

	if x.lists == nil {
		x.lists = map[string][]seenObject{}
	}
	dirty = map[dep]bool{}
	change := func(k objectKey, old, now objectVersion) {
		switch k.kind {
		case "GatewayClass", "Gateway", "Secret", "Namespace":
			full = true
		case "Pod":
			podsChanged = true
		case "ReferenceGrant":
			if x.gatewayGrants[k.namespace] {
				full = true
			}
			dirty[dep{depGrants, k.namespace, ""}] = true
		case "EndpointSlice":
			if old.label != now.label {
				x.slices = nil
			}
			dirty[dep{depSlices, k.namespace, old.label}] = true
			dirty[dep{depSlices, k.namespace, now.label}] = true
		case kindTargetGroupPolicy:
			// Which policy a Service takes depends on every policy
			// naming it: the routes using its target groups, the
			// targets of before (here) and of now (below), translate
			// again.
			c.tgpChanged = append(c.tgpChanged, k)
			for _, d := range x.tgpTargets[k] {
				dirty[d] = true
			}
		case kindAuthPolicy:
			c.authChanged = append(c.authChanged, k)
		case "Service":
			if x.tgpTargeted[k] > 0 {
				c.tgpServices = append(c.tgpServices, types.NamespacedName{Namespace: k.namespace, Name: k.name})
			}
			dirty[k] = true
		default:
			dirty[k] = true
		}
	}
	// compare compares the n objects of kind (at gives each one's
	// identity, resourceVersion and EndpointSlice label) with the last
	// Input's. An input in the same order as the last (a provider's usual
	// case) is compared position by position, without hashing; otherwise
	// by key.
	compare := func(kind string, n int, at func(i int) *metav1.ObjectMeta, labelAt func(i int) string) {
		label := func(i int) string {
			if labelAt == nil {
				return ""
			}
			return labelAt(i)
		}
		last := x.lists[kind]
		if len(last) == n {
			// In one pass: the objects that changed, while every position
			// holds the object it held.
			var changed []int
			same := true
			for i := range n {
				m, o := at(i), &last[i]
				if o.key.name != m.Name || o.key.namespace != m.Namespace {
					same = false
					break
				}
				// An object of the same resourceVersion has the same
				// content (see Incremental), and so the same label: only
				// a changed one's is read.
				if m.ResourceVersion == "" || m.ResourceVersion != o.version.resourceVersion {
					changed = append(changed, i)
				}
			}
			if same {
				for _, i := range changed {
					o := &last[i]
					now := objectVersion{at(i).ResourceVersion, label(i)}
					change(o.key, o.version, now)
					o.version = now
				}
				return
			}
		}
		// Other objects, or in another order.
		switch {
		case isRouteKind(kind):
			x.positionsStale = true
		case kind == "Service":
			x.services = nil
		case kind == kindTargetGroupPolicy:
			x.tgpAt = nil
		case kind == kindAuthPolicy:
			x.authAt = nil
		case kind == "EndpointSlice":
			x.slices = nil
		}
		old := make(map[objectKey]objectVersion, len(last))
		for _, o := range last {
			if _, dup := old[o.key]; dup {
				o.version.resourceVersion = "" // two of a key: always changed
			}
			old[o.key] = o.version
		}
		cur := make([]seenObject, n)
		met := make(map[objectKey]bool, n)
		for i := range n {
			m := at(i)
			ns, name, rv := m.Namespace, m.Name, m.ResourceVersion
			k := objectKey{kind, ns, name}
			if met[k] {
				rv = "" // two of a key: which is used is the translator's business
			}
			met[k] = true
			now := objectVersion{rv, label(i)}
			if v, ok := old[k]; !ok || rv == "" || v != now {
				change(k, v, now)
			}
			cur[i] = seenObject{k, now}
		}
		for k, v := range old {
			if !met[k] {
				change(k, v, objectVersion{})
			}
		}
		x.lists[kind] = cur
	}
	compare("GatewayClass", len(in.GatewayClasses), func(i int) *metav1.ObjectMeta { return &in.GatewayClasses[i].ObjectMeta }, nil)
	compare("Gateway", len(in.Gateways), func(i int) *metav1.ObjectMeta { return &in.Gateways[i].ObjectMeta }, nil)
	compare(string(kindHTTPRoute), len(in.HTTPRoutes), func(i int) *metav1.ObjectMeta { return &in.HTTPRoutes[i].ObjectMeta }, nil)
	compare(string(kindGRPCRoute), len(in.GRPCRoutes), func(i int) *metav1.ObjectMeta { return &in.GRPCRoutes[i].ObjectMeta }, nil)
	compare(string(kindTLSRoute), len(in.TLSRoutes), func(i int) *metav1.ObjectMeta { return &in.TLSRoutes[i].ObjectMeta }, nil)
	compare("ReferenceGrant", len(in.ReferenceGrants), func(i int) *metav1.ObjectMeta { return &in.ReferenceGrants[i].ObjectMeta }, nil)
	compare(kindAuthPolicy, len(in.AuthPolicies), func(i int) *metav1.ObjectMeta { return &in.AuthPolicies[i].ObjectMeta }, nil)
	compare(kindTargetGroupPolicy, len(in.TargetGroupPolicies), func(i int) *metav1.ObjectMeta { return &in.TargetGroupPolicies[i].ObjectMeta }, nil)
	if len(c.tgpChanged) > 0 {
		// The changed policies' targets of now, found by key.
		if x.tgpTargets == nil {
			x.tgpTargets, x.tgpTargeted = map[objectKey][]dep{}, map[dep]int{}
		}
		if x.tgpAt == nil {
			x.tgpAt = make(map[objectKey]int, len(in.TargetGroupPolicies))
			for i := range in.TargetGroupPolicies {
				p := &in.TargetGroupPolicies[i]
				x.tgpAt[objectKey{kindTargetGroupPolicy, p.Namespace, p.Name}] = i
			}
		}
		c.tgpAt = x.tgpAt
		for _, k := range c.tgpChanged {
			for _, d := range x.tgpTargets[k] {
				if x.tgpTargeted[d]--; x.tgpTargeted[d] <= 0 {
					delete(x.tgpTargeted, d)
				}
			}
			delete(x.tgpTargets, k)
			i, ok := c.tgpAt[k]
			if !ok {
				continue
			}
			targets := policyTargets(&in.TargetGroupPolicies[i])
			x.tgpTargets[k] = targets
			for _, d := range targets {
				x.tgpTargeted[d]++
				dirty[d] = true
			}
		}
	}
	compare("Service", len(in.Services), func(i int) *metav1.ObjectMeta { return &in.Services[i].ObjectMeta }, nil)
	compare("EndpointSlice", len(in.EndpointSlices), func(i int) *metav1.ObjectMeta { return &in.EndpointSlices[i].ObjectMeta }, func(i int) string { return in.EndpointSlices[i].Labels[discoveryv1.LabelServiceName] })
	compare(string(kindServiceImport), len(in.ServiceImports), func(i int) *metav1.ObjectMeta { return &in.ServiceImports[i].ObjectMeta }, nil)
	compare("Secret", len(in.Secrets), func(i int) *metav1.ObjectMeta { return &in.Secrets[i].ObjectMeta }, nil)
	compare("Pod", len(in.Pods), func(i int) *metav1.ObjectMeta { return &in.Pods[i].ObjectMeta }, nil)
	compare("Namespace", len(in.Namespaces), func(i int) *metav1.ObjectMeta { return &in.Namespaces[i].ObjectMeta }, nil)
	if full {
		return nil, true
	}
	return dirty, podsChanged
}

// read notes that the route being recorded read d.
func (t *translator) read(d dep) {
	if t.rec != nil {
		t.rec.deps = append(t.rec.deps, d)
	}
}

// startRecord starts recording the translation of route src, whose last
// record (if any) was old.
func (t *translator) startRecord(src model.SourceRef, old *record) {
	if t.inc == nil {
		return
	}
	k := objectKey{src.Kind, src.Namespace, src.Name}
	t.rec = &record{src: src, key: k, deps: []dep{k}}
	if old != nil {
		t.inc.forget(old)
	}
}

// endRecord ends and returns the record of route src, given where its
// services and status start in the output.
func (t *translator) endRecord(src model.SourceRef, services, statuses int) *record {
	r := t.rec
	t.rec = nil
	if r == nil {
		return nil
	}
	t.inc.translated = append(t.inc.translated, src)
	// Each input once, for the index.
	slices.SortFunc(r.deps, func(a, b dep) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	r.deps = slices.Clip(slices.Compact(r.deps))
	r.services = slices.Clone(t.out.Services[services:])
	for i := range r.services {
		t.inc.changed[model.Key(model.KindService, r.services[i].Name)] = true
		usedTargetGroups(r.services[i].Rules, func(tg string) {
			if !slices.Contains(r.targetGroups, tg) {
				r.targetGroups = append(r.targetGroups, tg)
			}
		})
		for _, l := range r.services[i].Listeners {
			for _, c := range l.Certificates {
				if !slices.Contains(r.certificates, c) {
					r.certificates = append(r.certificates, c)
				}
			}
		}
	}
	for _, tg := range r.targetGroups {
		t.inc.changed[model.Key(model.KindTargetGroup, tg)] = true
	}
	if len(t.out.Status.Routes) > statuses {
		st := t.out.Status.Routes[statuses]
		r.status = &st
	}
	t.inc.next = append(t.inc.next, r)
	return r
}

// count counts route src as attached to l, once. A route's attachments
// are counted one after another (its status), so the last route counted
// is the only one that can come again.
func (l *listenerInfo) count(src model.SourceRef) {
	if l.attached > 0 && l.last == src {
		return
	}
	l.last = src
	l.attached++
}

// translateWorkloadsOnce makes the WorkloadSets, or replays the last
// call's when no Pod changed.
func (t *translator) translateWorkloadsOnce() {
	if t.inc == nil {
		t.translateWorkloads()
		return
	}
	x := t.inc.x
	if r := x.workloads; r != nil && !t.inc.podsChanged {
		for _, p := range r.problems {
			t.addProblem(p)
		}
		t.out.WorkloadSets = append(t.out.WorkloadSets, r.workloadSets...)
		return
	}
	if x.workloads != nil {
		t.inc.forget(x.workloads)
	}
	t.rec = &record{}
	t.translateWorkloads()
	r := t.rec
	t.rec = nil
	r.workloadSets = slices.Clone(t.out.WorkloadSets)
	t.inc.forget(r)
	x.workloads = r
}

// authPositions returns where each AuthPolicy of in is, made again when
// the list changed otherwise than in its elements' content; it has fewer
// entries than the list when two policies share a key.
func (x *Incremental) authPositions(in *Input) map[objectKey]int {
	if x.authAt == nil {
		x.authAt = make(map[objectKey]int, len(in.AuthPolicies))
		for i := range in.AuthPolicies {
			p := &in.AuthPolicies[i]
			x.authAt[objectKey{kindAuthPolicy, p.Namespace, p.Name}] = i
		}
	}
	return x.authAt
}
