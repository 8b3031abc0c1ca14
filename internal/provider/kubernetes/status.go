package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/translate"
)

// statusWorkers bounds the status writes in flight at once: a first
// reconcile of a large cluster writes every route.
const statusWorkers = 16

// write is the pending changes to one object, made in order, each on what
// the one before wrote.
type write struct {
	// key names obj (its kind too), for the statusQueue.
	key   objectKey
	obj   client.Object
	steps []change
	// done, when set, is called once every change holds: the object as
	// it was at resourceVersion before, with the changes made, is at
	// after (before when nothing was written). It is not called after a
	// failure. wrote, when set, is then given the object as the last
	// write left it (as the apiserver returned it).
	done  func(before, after string)
	wrote func(client.Object)
}

// change is one change to an object.
type change struct {
	// status selects the status subresource; otherwise the object itself
	// (annotations, finalizers, spec) is updated.
	status bool
	// apply changes obj to what it should be and reports whether that
	// differs from what it was. It is applied again to a fresh copy after
	// a conflict.
	apply func(client.Object) bool
}

// objectKey names an object of a kind.
type objectKey struct{ kind, namespace, name string }

// routeSeen is a route's status and annotation as they were last found
// right or written: at either of its resourceVersions the route had the
// status st (nil: none of ours) and the annotation domains make.
type routeSeen struct {
	versions [2]string
	st       translate.RouteStatus
	ours     bool // st is set
	domains  string
}

// unchanged reports whether a route at resourceVersion rv, whose status
// should be st and domains, is known to be so already.
func (s routeSeen) unchanged(rv string, st *translate.RouteStatus, domains string) bool {
	if rv != s.versions[0] && rv != s.versions[1] || domains != s.domains || (st != nil) != s.ours {
		return false
	}
	// A replayed route's status shares its slices with the last one's,
	// which DeepEqual does not walk.
	return st == nil || reflect.DeepEqual(*st, s.st)
}

// writeStatus queues a write of the translator's status into every object
// whose status differs from it, and of the annotations and finalizers that
// go with it, for the statusQueue to make in the background. Routes, which
// can be many, are compared only when their status may have changed: the
// route changed since its status was last found right or written, or what
// the translator says of it did. only, when not nil, names the routes to
// compare (statusRoutes); nil compares every route of in, and every
// policy (changed names the objects the events named). An object with a
// write queued or in flight is not compared: its newest write replaces the
// one waiting, or follows the one in flight.
func (r *Reconciler) writeStatus(in *translate.Input, out *translate.Output, only, changed map[objectKey]bool) {
	now := metav1.Now()
	var writes []write

	classUsed := map[string]bool{}
	for _, gw := range in.Gateways {
		if gw.DeletionTimestamp == nil {
			classUsed[string(gw.Spec.GatewayClassName)] = true
		}
	}
	for _, st := range out.Status.GatewayClasses {
		i := slices.IndexFunc(in.GatewayClasses, func(gc gatewayv1.GatewayClass) bool { return gc.Name == st.Name })
		if i < 0 {
			continue
		}
		gc := &in.GatewayClasses[i]
		used := classUsed[gc.Name]
		writes = append(writes, write{key: objectKey{"GatewayClass", "", gc.Name}, obj: r.ownVersion("GatewayClass", gc), steps: []change{{status: true, apply: func(o client.Object) bool {
			c := o.(*gatewayv1.GatewayClass)
			want := gatewayv1.GatewayClassStatus{
				Conditions:        conditions(st.Conditions, c.Status.Conditions, c.Generation, now),
				SupportedFeatures: supportedFeatures(st.SupportedFeatures),
			}
			return setIfDifferent(&c.Status, want)
		}}, {apply: func(o client.Object) bool {
			has := slices.Contains(o.GetFinalizers(), GatewayClassFinalizer)
			switch {
			case used && !has && o.GetDeletionTimestamp() == nil:
				o.SetFinalizers(append(o.GetFinalizers(), GatewayClassFinalizer))
				return true
			case !used && has:
				o.SetFinalizers(slices.DeleteFunc(slices.Clone(o.GetFinalizers()), func(f string) bool { return f == GatewayClassFinalizer }))
				return true
			}
			return false
		}}}})
	}

	for _, st := range out.Status.Gateways {
		i := slices.IndexFunc(in.Gateways, func(gw gatewayv1.Gateway) bool { return gw.Namespace == st.Namespace && gw.Name == st.Name })
		if i < 0 {
			continue
		}
		writes = append(writes, write{key: objectKey{"Gateway", st.Namespace, st.Name}, obj: r.ownVersion("Gateway", &in.Gateways[i]), steps: []change{{status: true, apply: func(o client.Object) bool {
			gw := o.(*gatewayv1.Gateway)
			want := gatewayv1.GatewayStatus{
				Addresses:  st.Addresses,
				Conditions: conditions(st.Conditions, gw.Status.Conditions, gw.Generation, now),
			}
			for _, l := range st.Listeners {
				var have []metav1.Condition
				if j := slices.IndexFunc(gw.Status.Listeners, func(h gatewayv1.ListenerStatus) bool { return h.Name == l.Name }); j >= 0 {
					have = gw.Status.Listeners[j].Conditions
				}
				want.Listeners = append(want.Listeners, gatewayv1.ListenerStatus{
					Name:           l.Name,
					SupportedKinds: l.SupportedKinds,
					AttachedRoutes: l.AttachedRoutes,
					Conditions:     conditions(l.Conditions, have, gw.Generation, now),
				})
			}
			return setIfDifferent(&gw.Status, want)
		}}}})
	}

	others := len(writes)
	// A route's status, found in the sorted list rather than through a map
	// of all 10,000 made for the few that changed.
	routeStatusOf := func(k objectKey) *translate.RouteStatus {
		i, found := slices.BinarySearchFunc(out.Status.Routes, k, func(st translate.RouteStatus, k objectKey) int {
			return compareKeys(objectKey{st.Kind, st.Namespace, st.Name}, k)
		})
		if !found {
			return nil
		}
		return &out.Status.Routes[i]
	}
	// r.routes is shared with the writes' done, which the statusQueue's
	// workers call.
	r.statusMu.Lock()
	if r.routes == nil {
		r.routes = map[objectKey]routeSeen{}
	}
	present := 0 // routes of the input that r.routes holds
	addRoute := func(kind string, route client.Object, status func(client.Object) *gatewayv1.RouteStatus) {
		k := objectKey{kind, route.GetNamespace(), route.GetName()}
		st := routeStatusOf(k)
		domains := ""
		if st != nil {
			domains = strings.Join(st.DNSNames, ",")
			// The translator's lists are its own until its next call, and
			// the write may run after that. (It replaces their slices, it
			// does not change them in place.)
			c := *st
			st = &c
		}
		// A write waiting or in flight may write another status than the
		// one last seen: this one must follow it.
		queued := r.status.has(k)
		seen, ok := r.routes[k]
		if ok {
			present++
			if !queued && seen.unchanged(r.ownResourceVersion(kind, route), st, domains) {
				return
			}
		}
		if !queued && st == nil && !hasOurParents(status(route).Parents) && route.GetAnnotations()[AssignedDomainNameAnnotation] == "" {
			return // never ours
		}
		writes = append(writes, write{key: k, obj: r.ownVersion(kind, route), steps: []change{{status: true, apply: func(o client.Object) bool {
			have := status(o)
			return setIfDifferent(have, routeStatus(st, *have, o.GetGeneration(), now))
		}}, {apply: func(o client.Object) bool {
			return setAnnotation(o, AssignedDomainNameAnnotation, domains)
		}}}, done: func(before, after string) {
			seen := routeSeen{versions: [2]string{before, after}, domains: domains}
			if st != nil {
				seen.st, seen.ours = *st, true
			}
			r.statusMu.Lock()
			r.routes[k] = seen
			r.statusMu.Unlock()
		}})
	}
	httpStatus := func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.HTTPRoute).Status.RouteStatus }
	grpcStatus := func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.GRPCRoute).Status.RouteStatus }
	tlsStatus := func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.TLSRoute).Status.RouteStatus }
	if only != nil {
		// The routes named, found in in by the kept input's index.
		for _, k := range slices.SortedFunc(maps.Keys(only), compareKeys) { // writes in one order every time
			kk := r.kept.kinds[k.kind]
			i, ok := 0, false
			if kk != nil {
				i, ok = kk.index[types.NamespacedName{Namespace: k.namespace, Name: k.name}]
			}
			switch {
			case !ok:
				delete(r.routes, k) // gone
				r.status.drop(k)
			case k.kind == "HTTPRoute":
				addRoute(k.kind, &in.HTTPRoutes[i], httpStatus)
			case k.kind == "GRPCRoute":
				addRoute(k.kind, &in.GRPCRoutes[i], grpcStatus)
			case k.kind == "TLSRoute":
				addRoute(k.kind, &in.TLSRoutes[i], tlsStatus)
			}
		}
	} else {
		for i := range in.HTTPRoutes {
			addRoute("HTTPRoute", &in.HTTPRoutes[i], httpStatus)
		}
		for i := range in.GRPCRoutes {
			addRoute("GRPCRoute", &in.GRPCRoutes[i], grpcStatus)
		}
		for i := range in.TLSRoutes {
			addRoute("TLSRoute", &in.TLSRoutes[i], tlsStatus)
		}
		if len(r.routes) > present {
			live := liveObjects(in)
			maps.DeleteFunc(r.routes, func(k objectKey, _ routeSeen) bool { return !live[k] })
		}
	}
	r.statusMu.Unlock()
	checked := len(writes) - others
	authWrites, authChecked := r.authPolicyWrites(in, out, only == nil, changed, now)
	tgpWrites, tgpChecked := r.targetGroupPolicyWrites(in, out, only == nil, changed, now)
	writes = append(append(writes, authWrites...), tgpWrites...)
	r.mu.Lock()
	r.stats.StatusChecked = checked
	r.stats.PoliciesChecked = authChecked + tgpChecked
	r.mu.Unlock()
	r.queueWrites(writes)
}

// queueWrites hands the writes that change something to the statusQueue,
// each with a copy of its object (the kept input's objects are overwritten
// by the next reconcile); a write of an object with one queued or in
// flight is handed over without comparing.
func (r *Reconciler) queueWrites(writes []write) {
	for _, w := range writes {
		c := w.obj.DeepCopyObject().(client.Object)
		if !r.status.has(w.key) {
			if !w.changes(c) {
				// The common case: nothing to write.
				if w.done != nil {
					rv := w.obj.GetResourceVersion()
					w.done(rv, rv)
				}
				continue
			}
			c = w.obj.DeepCopyObject().(client.Object) // w.changes changed the first
		}
		w.obj = c
		r.status.put(w)
	}
}

// writeCounted makes w (writeOne) and counts its requests in the stats.
func (r *Reconciler) writeCounted(ctx context.Context, w write) (int, error) {
	n, err := r.writeOne(ctx, w)
	r.countWrites(n)
	return n, err
}

// statusRoutes names the routes whose status this reconcile compares (see
// writeStatus): nil, every route, after the kept input was listed whole,
// after a translation of everything, or after a failure; otherwise the
// routes the events named (changed) and those the translator translated
// again. (A route whose write failed is not among them: the statusQueue
// tries it again itself.)
func (r *Reconciler) statusRoutes(changed map[objectKey]bool, out *translate.Output, relisted bool) map[objectKey]bool {
	if relisted || r.statusAll || out.Changed == nil {
		r.statusAll = false
		return nil
	}
	only := map[objectKey]bool{}
	for k := range changed {
		switch k.kind {
		case "HTTPRoute", "GRPCRoute", "TLSRoute":
			only[k] = true
		}
	}
	for _, s := range out.Retranslated {
		only[objectKey{s.Kind, s.Namespace, s.Name}] = true
	}
	return only
}

func compareKeys(a, b objectKey) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

// policyStatus is an AuthPolicy's status as st says, keeping each
// condition's transition time while its status holds.
func policyStatus(st translate.PolicyStatus, have gatewayv1.PolicyStatus, generation int64, now metav1.Time) gatewayv1.PolicyStatus {
	want := gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{}}
	for _, a := range st.Ancestors {
		prev := prevConditions(have.Ancestors, ancestorEntry, a.ControllerName, a.AncestorRef)
		want.Ancestors = append(want.Ancestors, gatewayv1.PolicyAncestorStatus{
			AncestorRef:    a.AncestorRef,
			ControllerName: a.ControllerName,
			Conditions:     conditions(a.Conditions, prev, generation, now),
		})
	}
	return want
}

// runWrites makes the writes that change something, statusWorkers at a
// time, retrying each on conflict against a fresh read, and returns how
// many writes it made. With limit > 0 it starts at most limit of them;
// more is true when it left some.
func (r *Reconciler) runWrites(ctx context.Context, writes []write, limit int) (n int, more bool, err error) {
	var (
		mu      sync.Mutex
		errs    []error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, statusWorkers)
		started int
	)
	for _, w := range writes {
		if !w.changes(w.obj.DeepCopyObject().(client.Object)) {
			// The common case: nothing to write, no goroutine.
			if w.done != nil {
				rv := w.obj.GetResourceVersion()
				w.done(rv, rv)
			}
			continue
		}
		if limit > 0 && started == limit {
			more = true
			break
		}
		started++
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			wrote, err := r.writeOne(ctx, w)
			mu.Lock()
			defer mu.Unlock()
			n += wrote
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	r.countWrites(n)
	return n, more, errors.Join(errs...)
}

// changes applies every change of w to obj and reports whether any
// changed it.
func (w write) changes(obj client.Object) bool {
	changed := false
	for _, c := range w.steps {
		changed = c.apply(obj) || changed
	}
	return changed
}

// writeOne makes w's changes, retrying on conflict with a fresh copy, and
// returns how many writes it made.
func (r *Reconciler) writeOne(ctx context.Context, w write) (int, error) {
	obj := w.obj
	n := 0
	for attempt := 0; ; attempt++ {
		cur := obj.DeepCopyObject().(client.Object)
		before := cur.GetResourceVersion()
		var err error
		for _, c := range w.steps {
			if !c.apply(cur) {
				continue
			}
			if c.status {
				err = r.kube.Status().Update(ctx, cur)
			} else {
				err = r.kube.Update(ctx, cur)
			}
			if err != nil {
				break
			}
			n++
		}
		switch {
		case err == nil:
			if w.done != nil {
				w.done(before, cur.GetResourceVersion())
			}
			if w.wrote != nil {
				w.wrote(cur)
			}
			return n, nil
		case apierrors.IsNotFound(err):
			return n, nil // deleted meanwhile; its status is moot
		case !apierrors.IsConflict(err) || attempt == 4:
			return n, fmt.Errorf("updating %T %s/%s: %w", cur, cur.GetNamespace(), cur.GetName(), err)
		}
		r.mu.Lock()
		r.stats.StatusConflicts++
		r.mu.Unlock()
		fresh := obj.DeepCopyObject().(client.Object)
		if err := r.reader.Get(ctx, client.ObjectKeyFromObject(obj), fresh); err != nil {
			if apierrors.IsNotFound(err) {
				return n, nil
			}
			return n, err
		}
		obj = fresh
	}
}

func (r *Reconciler) countWrites(n int) {
	r.mu.Lock()
	r.stats.StatusWrites += n
	r.mu.Unlock()
}

// setIfDifferent sets *dst to want and reports whether it differed.
func setIfDifferent[T any](dst *T, want T) bool {
	if equality.Semantic.DeepEqual(*dst, want) {
		return false
	}
	*dst = want
	return true
}

// setAnnotation sets (or, for "", removes) one annotation and reports
// whether it changed.
func setAnnotation(o client.Object, key, value string) bool {
	a := o.GetAnnotations()
	if a[key] == value {
		return false
	}
	a = copyMap(a)
	if value == "" {
		delete(a, key)
	} else {
		a[key] = value
	}
	o.SetAnnotations(a)
	return true
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// prevConditions is the conditions of the entry in have that controller
// wrote for ref, nil when there is none: the conditions whose transition
// times a new entry for them keeps. Route parents and policy ancestors are
// both keyed so; entry reads one of them.
func prevConditions[E any](have []E, entry func(E) (gatewayv1.GatewayController, gatewayv1.ParentReference, []metav1.Condition), controller gatewayv1.GatewayController, ref gatewayv1.ParentReference) []metav1.Condition {
	for _, h := range have {
		if c, r, conds := entry(h); c == controller && equality.Semantic.DeepEqual(r, ref) {
			return conds
		}
	}
	return nil
}

func ancestorEntry(a gatewayv1.PolicyAncestorStatus) (gatewayv1.GatewayController, gatewayv1.ParentReference, []metav1.Condition) {
	return a.ControllerName, a.AncestorRef, a.Conditions
}

func parentEntry(p gatewayv1.RouteParentStatus) (gatewayv1.GatewayController, gatewayv1.ParentReference, []metav1.Condition) {
	return p.ControllerName, p.ParentRef, p.Conditions
}

// conditions converts the translator's conditions, keeping the transition
// time of each condition whose status did not change.
func conditions(want []translate.Condition, have []metav1.Condition, generation int64, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(want))
	for _, c := range want {
		mc := metav1.Condition{
			Type:               c.Type,
			Status:             metav1.ConditionFalse,
			Reason:             c.Reason,
			Message:            c.Message,
			ObservedGeneration: generation,
			LastTransitionTime: now,
		}
		if c.Status {
			mc.Status = metav1.ConditionTrue
		}
		if i := slices.IndexFunc(have, func(h metav1.Condition) bool { return h.Type == c.Type }); i >= 0 && have[i].Status == mc.Status {
			mc.LastTransitionTime = have[i].LastTransitionTime
		}
		out = append(out, mc)
	}
	return out
}

func supportedFeatures(names []gatewayv1.FeatureName) []gatewayv1.SupportedFeature {
	out := make([]gatewayv1.SupportedFeature, len(names))
	for i, n := range names {
		out[i] = gatewayv1.SupportedFeature{Name: n}
	}
	return out
}

// ours reports whether a parent status entry was written by trellis.
func ours(c gatewayv1.GatewayController) bool {
	return c == translate.ServiceNetworkController || c == translate.EdgeController
}

func hasOurParents(parents []gatewayv1.RouteParentStatus) bool {
	return slices.ContainsFunc(parents, func(p gatewayv1.RouteParentStatus) bool { return ours(p.ControllerName) })
}

// routeStatus is have with trellis's parent entries replaced by st's (none
// when st is nil), other controllers' entries kept as they are.
func routeStatus(st *translate.RouteStatus, have gatewayv1.RouteStatus, generation int64, now metav1.Time) gatewayv1.RouteStatus {
	var want gatewayv1.RouteStatus
	for _, p := range have.Parents {
		if !ours(p.ControllerName) {
			want.Parents = append(want.Parents, p)
		}
	}
	if st == nil {
		return want
	}
	for _, p := range st.Parents {
		prev := prevConditions(have.Parents, parentEntry, p.ControllerName, p.ParentRef)
		want.Parents = append(want.Parents, gatewayv1.RouteParentStatus{
			ParentRef:      p.ParentRef,
			ControllerName: p.ControllerName,
			Conditions:     conditions(p.Conditions, prev, generation, now),
		})
	}
	return want
}
