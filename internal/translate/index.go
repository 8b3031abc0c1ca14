package translate

import (
	"cmp"
	"container/heap"
	"maps"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// routeIndex is what the routes made and read in the calls of an
// Incremental so far, kept so that a change finds the routes it concerns
// without visiting the others, and patches the last Output with what they
// make now (patchRoutes).
type routeIndex struct {
	// recs are the routes' records, by route.
	recs map[objectKey]*record
	// readers are, by input (dep), the routes that read it (a list: most
	// inputs have one reader, and a map each would double the index).
	readers map[dep][]*record
	// claimants are, by service name, the routes that claimed it; users,
	// by target group name, the routes that looked it up. Both in route
	// order (routeOrder).
	claimants map[string][]*record
	users     map[string][]*record
	// services, statuses and targetGroups are the routes' part of the last
	// Output, sorted as there; services with the auth policies attached
	// (a route's records hold its services before).
	services     []model.Service
	statuses     []RouteStatus
	targetGroups []model.TargetGroup
	// tgRefs and certRefs count, by name, the routes whose services use
	// a target group or certificate.
	tgRefs, certRefs map[string]int
	// attached counts the routes accepted on each listener.
	attached map[listenerRef]int32
	// problems are the records of the routes that reported any.
	problems map[objectKey]*record
}

// newRouteIndex makes the index of a full translation: recs are its route
// records in route order, services and tgs its services (auth policies
// attached) and target groups.
func newRouteIndex(recs []*record, services []model.Service, tgs []model.TargetGroup) *routeIndex {
	ix := &routeIndex{
		recs:         make(map[objectKey]*record, len(recs)),
		readers:      make(map[dep][]*record, 2*len(recs)),
		claimants:    make(map[string][]*record, len(recs)),
		users:        make(map[string][]*record, len(recs)),
		services:     slices.Clone(services),
		statuses:     make([]RouteStatus, 0, len(recs)),
		targetGroups: slices.Clone(tgs),
		tgRefs:       make(map[string]int, len(tgs)),
		certRefs:     map[string]int{},
		attached:     map[listenerRef]int32{},
		problems:     map[objectKey]*record{},
	}
	for _, r := range recs {
		ix.link(r)
		if r.status != nil {
			ix.statuses = append(ix.statuses, *r.status)
		}
	}
	slices.SortFunc(ix.statuses, compareRouteStatus)
	return ix
}

// routeRank orders the route kinds as translateRoutes meets them.
func routeRank(kind string) int {
	switch gatewayv1.Kind(kind) {
	case kindHTTPRoute:
		return 0
	case kindGRPCRoute:
		return 1
	}
	return 2
}

// isRouteKind reports whether kind is a kind of route.
func isRouteKind(kind string) bool {
	switch gatewayv1.Kind(kind) {
	case kindHTTPRoute, kindGRPCRoute, kindTLSRoute:
		return true
	}
	return false
}

// routeOrder orders routes as translateRoutes meets them: by kind, then
// namespace and name.
func routeOrder(a, b objectKey) int {
	return cmp.Or(cmp.Compare(routeRank(a.kind), routeRank(b.kind)), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

func compareRouteStatus(a, b RouteStatus) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// took reports whether the route of r took service name; r may be nil.
func (r *record) took(name string) bool {
	if r == nil {
		return false
	}
	return slices.ContainsFunc(r.claims, func(c claim) bool { return c.name == name && c.took })
}

// created returns the target group entry the route of r made for name,
// if it made it; r may be nil.
func (r *record) created(name string) *targetGroupEntry {
	if r == nil {
		return nil
	}
	for _, u := range r.tgs {
		if u.name == name {
			return u.created
		}
	}
	return nil
}

// insertRecord inserts r into list, in route order, unless it is there.
func insertRecord(list []*record, r *record) []*record {
	i, found := slices.BinarySearchFunc(list, r.key, func(e *record, k objectKey) int { return routeOrder(e.key, k) })
	if found {
		return list
	}
	return slices.Insert(list, i, r)
}

// removeRecord removes r from list.
func removeRecord(list []*record, r *record) []*record {
	i, found := slices.BinarySearchFunc(list, r.key, func(e *record, k objectKey) int { return routeOrder(e.key, k) })
	if !found || list[i] != r {
		return list
	}
	return slices.Delete(list, i, i+1)
}

// distinctListeners calls f once for each listener r was accepted on.
func distinctListeners(r *record, f func(listenerRef)) {
	for i, l := range r.attached {
		if !slices.Contains(r.attached[:i], l) {
			f(l)
		}
	}
}

// link adds what r read and took to the index (not its output).
func (ix *routeIndex) link(r *record) {
	ix.recs[r.key] = r
	for _, d := range r.deps { // each once (endRecord)
		ix.readers[d] = append(ix.readers[d], r)
	}
	for _, c := range r.claims {
		ix.claimants[c.name] = insertRecord(ix.claimants[c.name], r)
	}
	for _, u := range r.tgs {
		ix.users[u.name] = insertRecord(ix.users[u.name], r)
	}
	for _, tg := range r.targetGroups {
		ix.tgRefs[tg]++
	}
	for _, c := range r.certificates {
		ix.certRefs[c]++
	}
	distinctListeners(r, func(l listenerRef) { ix.attached[l]++ })
	if len(r.problems) > 0 {
		ix.problems[r.key] = r
	}
}

// unlink removes what link added for r.
func (ix *routeIndex) unlink(r *record) {
	if ix.recs[r.key] == r {
		delete(ix.recs, r.key)
	}
	for _, d := range r.deps {
		removeFromList(ix.readers, d, r)
	}
	for _, c := range r.claims {
		putList(ix.claimants, c.name, removeRecord(ix.claimants[c.name], r))
	}
	for _, u := range r.tgs {
		putList(ix.users, u.name, removeRecord(ix.users[u.name], r))
	}
	for _, tg := range r.targetGroups {
		if ix.tgRefs[tg]--; ix.tgRefs[tg] <= 0 {
			delete(ix.tgRefs, tg)
		}
	}
	for _, c := range r.certificates {
		if ix.certRefs[c]--; ix.certRefs[c] <= 0 {
			delete(ix.certRefs, c)
		}
	}
	distinctListeners(r, func(l listenerRef) {
		if ix.attached[l]--; ix.attached[l] <= 0 {
			delete(ix.attached, l)
		}
	})
	if ix.problems[r.key] == r {
		delete(ix.problems, r.key)
	}
}

// outputPatch collects what the routes translated again in one call
// change in the index's lists: the entries to drop (their own, as the
// routes made them last time) and those to put.
type outputPatch struct {
	dropServices, putServices []model.Service
	dropStatuses, putStatuses []RouteStatus
}

// add notes that old's part of the output (either may be nil) is now
// now's.
func (o *outputPatch) add(old, now *record) {
	if old != nil {
		o.dropServices = append(o.dropServices, old.services...)
		if old.status != nil {
			o.dropStatuses = append(o.dropStatuses, *old.status)
		}
	}
	if now != nil {
		o.putServices = append(o.putServices, now.services...)
		if now.status != nil {
			o.putStatuses = append(o.putStatuses, *now.status)
		}
	}
}

func compareServices(a, b *model.Service) int { return cmp.Compare(a.Name, b.Name) }

// sameSource reports whether service e is the one drop was (a route after
// drop's may have taken the name from it since).
func sameSource(e, drop *model.Service) bool {
	return e.Source != nil && drop.Source != nil && *e.Source == *drop.Source
}

func compareStatuses(a, b *RouteStatus) int { return compareRouteStatus(*a, *b) }

func compareTargetGroups(a, b *model.TargetGroup) int { return cmp.Compare(a.Name, b.Name) }

// patchInPlace is how many changes patchList makes in place, at most.
var patchInPlace = 16

// patchList returns list, ordered by compare, without the elements that
// drop names (of the same key, and owned as owned says), and with put's
// (each in place of one of its key). Few changes are made in list, in
// place; many in a new list, in one merge, so that a change of thousands
// of routes (a namespace deleted) costs one pass, not one each.
func patchList[T any](list, drop, put []T, compare func(a, b *T) int, owned func(e, drop *T) bool) []T {
	slices.SortFunc(drop, func(a, b T) int { return compare(&a, &b) })
	slices.SortFunc(put, func(a, b T) int { return compare(&a, &b) })
	search := func(l []T, x *T) (int, bool) {
		return slices.BinarySearchFunc(l, x, func(e T, x *T) int { return compare(&e, x) })
	}
	if len(drop)+len(put) <= patchInPlace {
		for i := range drop {
			if _, replaced := search(put, &drop[i]); replaced {
				continue // replaced below, where it is
			}
			if j, found := search(list, &drop[i]); found && owned(&list[j], &drop[i]) {
				list = slices.Delete(list, j, j+1)
			}
		}
		for i := range put {
			if j, found := search(list, &put[i]); found {
				list[j] = put[i]
			} else {
				list = slices.Insert(list, j, put[i])
			}
		}
		return list
	}
	out := make([]T, 0, len(list)+len(put))
	d, p := 0, 0
	for i := range list {
		e := &list[i]
		for p < len(put) && compare(&put[p], e) < 0 {
			out = append(out, put[p])
			p++
		}
		for d < len(drop) && compare(&drop[d], e) < 0 {
			d++
		}
		switch {
		case p < len(put) && compare(&put[p], e) == 0:
			out = append(out, put[p])
			p++
		case d < len(drop) && compare(&drop[d], e) == 0 && owned(e, &drop[d]):
		default:
			out = append(out, *e)
		}
	}
	return append(out, put[p:]...)
}

// patchTargetGroups makes the index's target groups of the names given
// what the routes make of them now: the entry of each one's first user,
// when a service uses it.
func (ix *routeIndex) patchTargetGroups(names map[string]bool) {
	var drop, put []model.TargetGroup
	for name := range names {
		drop = append(drop, model.TargetGroup{Meta: model.Meta{Name: name}})
		if us := ix.users[name]; ix.tgRefs[name] > 0 && len(us) > 0 {
			if e := us[0].created(name); e != nil && e.tg != nil {
				put = append(put, *e.tg)
			}
		}
	}
	ix.targetGroups = patchList(ix.targetGroups, drop, put, compareTargetGroups, func(_, _ *model.TargetGroup) bool { return true })
}

// maker is the route that made a target group (the first to look it
// up), and what the routes after it find.
type maker struct {
	r     *record
	found tgFound
}

// tgFound is a target group entry as a route that looks it up finds it.
type tgFound struct {
	exists bool
	svc    types.NamespacedName
	port   int32
	valid  bool
}

// maker returns the maker of target group name.
func (ix *routeIndex) maker(name string) maker {
	us := ix.users[name]
	if len(us) == 0 {
		return maker{}
	}
	r := us[0]
	for _, u := range r.tgs {
		if u.name == name {
			return maker{r, tgFound{true, u.svc, u.port, u.valid}}
		}
	}
	return maker{r: r}
}

// holder returns the route that holds service name for the route being
// translated: the first before it that took it.
func (t *translator) holder(name string) (model.SourceRef, bool) {
	if o, ok := t.serviceRoutes[name]; ok || t.inc == nil || !t.inc.fast {
		return o, ok
	}
	for _, r := range t.inc.x.index.claimants[name] {
		if routeOrder(r.key, t.inc.at) >= 0 {
			break
		}
		if r.took(name) {
			return r.src, true
		}
	}
	return model.SourceRef{}, false
}

// tgEntry returns the target group entry of name the route being
// translated finds: the one the first route before it to look it up made.
func (t *translator) tgEntry(name string) *targetGroupEntry {
	if e := t.tgs[name]; e != nil || t.inc == nil || !t.inc.fast {
		return e
	}
	if us := t.inc.x.index.users[name]; len(us) > 0 && routeOrder(us[0].key, t.inc.at) < 0 {
		return us[0].created(name)
	}
	return nil
}

// findRoutes makes sure x.positions has where each of in's routes is, and
// reports false when two routes share a key.
func (x *Incremental) findRoutes(in *Input) bool {
	n := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TLSRoutes)
	if x.positions == nil || x.positionsStale {
		x.positions = make(map[objectKey]int, n)
		for i := range in.HTTPRoutes {
			x.positions[objectKey{string(kindHTTPRoute), in.HTTPRoutes[i].Namespace, in.HTTPRoutes[i].Name}] = i
		}
		for i := range in.GRPCRoutes {
			x.positions[objectKey{string(kindGRPCRoute), in.GRPCRoutes[i].Namespace, in.GRPCRoutes[i].Name}] = i
		}
		for i := range in.TLSRoutes {
			x.positions[objectKey{string(kindTLSRoute), in.TLSRoutes[i].Namespace, in.TLSRoutes[i].Name}] = i
		}
		x.positionsStale = false
	}
	return len(x.positions) == n
}

// route returns the route k of in, if it has one.
func (x *Incremental) route(in *Input, k objectKey) (route, bool) {
	i, ok := x.positions[k]
	if !ok {
		return route{}, false
	}
	switch gatewayv1.Kind(k.kind) {
	case kindHTTPRoute:
		return httpRoute(&in.HTTPRoutes[i]), true
	case kindGRPCRoute:
		return grpcRoute(&in.GRPCRoutes[i]), true
	}
	return tlsRoute(&in.TLSRoutes[i]), true
}

// patchRoutes translates the routes that read an input that changed, and
// those after them that see a name taken or freed by one of them, in route
// order; the index keeps every other route's part of the output.
func (t *translator) patchRoutes() {
	c := t.inc
	x := c.x
	ix := x.index
	var work routeHeap // taken in route order
	queued := map[objectKey]bool{}
	push := func(k objectKey) {
		if !queued[k] {
			queued[k] = true
			heap.Push(&work, k)
		}
	}
	for d := range c.dirty {
		if isRouteKind(d.kind) {
			push(d)
		}
		for _, r := range ix.readers[d] {
			push(r.key)
		}
	}
	touched := map[string]bool{} // target group names
	var patch outputPatch
	var (
		names, tgNames []string
		makers         []maker
	)
	for work.Len() > 0 {
		k := heap.Pop(&work).(objectKey)
		if x.auth != nil && len(x.auth.claimants) > 0 { // for patchAuthPolicies
			c.patched = append(c.patched, k)
		}
		old := ix.recs[k]
		var now *record
		if r, ok := x.route(t.in, k); ok {
			c.at = k
			clear(t.serviceRoutes)
			clear(t.tgs)
			// Its problems go to the output with every route's, in route
			// order, below.
			problems := len(t.out.Problems)
			now = t.translateOne(&r, old)
			for _, p := range t.out.Problems[problems:] {
				delete(t.seen, p)
			}
			t.out.Problems = t.out.Problems[:problems]
		} else if old != nil {
			c.forget(old)
		}
		// The target groups k looked up, and who made each (the first
		// route to look it up) before k's change.
		tgNames = tgNames[:0]
		for _, r := range []*record{old, now} {
			if r != nil {
				for _, u := range r.tgs {
					tgNames = append(tgNames, u.name)
				}
				tgNames = append(tgNames, r.targetGroups...)
			}
		}
		slices.Sort(tgNames)
		tgNames = slices.Compact(tgNames)
		makers = makers[:0]
		for _, name := range tgNames {
			makers = append(makers, ix.maker(name))
		}
		if old != nil {
			ix.unlink(old)
		}
		if now != nil {
			ix.link(now)
		}
		patch.add(old, now)
		// The routes after k that claim a name k took or no longer takes,
		// or look up a target group k made otherwise, see them otherwise.
		names = names[:0]
		for _, r := range []*record{old, now} {
			if r != nil {
				for _, cl := range r.claims {
					names = append(names, cl.name)
				}
			}
		}
		for _, name := range names {
			if old.took(name) != now.took(name) {
				for _, r := range ix.claimants[name] {
					if routeOrder(r.key, k) > 0 {
						push(r.key)
					}
				}
			}
		}
		// A route after k that looks up a target group k looked up sees it
		// otherwise when its maker changed (the route that made it before
		// now finds it, or the one that found it now makes it), or what
		// the routes after the maker find changed (another Service or
		// port, or valid no longer).
		for i, name := range tgNames {
			touched[name] = true
			was, is := makers[i], ix.maker(name)
			if was.r != is.r {
				for _, r := range []*record{was.r, is.r} {
					if r != nil && routeOrder(r.key, k) > 0 && ix.recs[r.key] == r {
						push(r.key)
					}
				}
			}
			if was.found != is.found {
				for _, r := range ix.users[name] {
					if routeOrder(r.key, k) > 0 {
						push(r.key)
					}
				}
			}
		}
	}
	ix.services = patchList(ix.services, patch.dropServices, patch.putServices, compareServices, sameSource)
	ix.statuses = patchList(ix.statuses, patch.dropStatuses, patch.putStatuses, compareStatuses, func(_, _ *RouteStatus) bool { return true })
	ix.patchTargetGroups(touched)

	// The index's own lists, not copies (see Incremental.Translate), capped
	// so that an append by the caller copies them.
	if len(t.in.HTTPRoutes)+len(t.in.GRPCRoutes)+len(t.in.TLSRoutes) > 0 {
		// Not nil, as a full translation's.
		t.out.Services = nonNil(ix.services)
		t.out.Status.Routes = nonNil(ix.statuses)
	} else {
		t.out.Services, t.out.Status.Routes = nil, nil
	}
	t.out.TargetGroups = nonNil(ix.targetGroups)
	withProblems := slices.SortedFunc(maps.Values(ix.problems), func(a, b *record) int { return routeOrder(a.key, b.key) })
	for _, r := range withProblems {
		for _, p := range r.problems {
			t.addProblem(p)
		}
	}
	for key, g := range t.gateways {
		for i := range g.listeners {
			g.listeners[i].attached = ix.attached[listenerRef{key, i}]
		}
	}
	clear(t.certsUsed)
	for name := range ix.certRefs {
		t.certsUsed[name] = true
	}
}

// nonNil returns s capped at its length, and not nil.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s[:len(s):len(s)]
}

// servicePositions returns where each Service of in is (the first of its
// key), made again when the list changed otherwise than in its elements'
// content.
func (x *Incremental) servicePositions(in *Input) map[types.NamespacedName]int {
	if x.services == nil {
		x.services = make(map[types.NamespacedName]int, len(in.Services))
		for i := range in.Services {
			k := types.NamespacedName{Namespace: in.Services[i].Namespace, Name: in.Services[i].Name}
			if _, dup := x.services[k]; !dup {
				x.services[k] = i
			}
		}
	}
	return x.services
}

// slicePositions returns where the EndpointSlices of each Service of in
// are (by the service-name label), by name, made again when the list
// changed otherwise than in its elements' content or a label changed.
func (x *Incremental) slicePositions(in *Input) map[types.NamespacedName][]int {
	if x.slices == nil {
		x.slices = map[types.NamespacedName][]int{}
		for i := range in.EndpointSlices {
			es := &in.EndpointSlices[i]
			if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
				k := types.NamespacedName{Namespace: es.Namespace, Name: svc}
				x.slices[k] = append(x.slices[k], i)
			}
		}
		for _, l := range x.slices {
			slices.SortStableFunc(l, func(a, b int) int { return cmp.Compare(in.EndpointSlices[a].Name, in.EndpointSlices[b].Name) })
		}
	}
	return x.slices
}

// routeHeap is a heap of routes, the first in route order on top.
type routeHeap []objectKey

func (h routeHeap) Len() int           { return len(h) }
func (h routeHeap) Less(i, j int) bool { return routeOrder(h[i], h[j]) < 0 }
func (h routeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *routeHeap) Push(x any)        { *h = append(*h, x.(objectKey)) }
func (h *routeHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}

// removeFromList removes v from the list m holds at k, and k from m when
// its list is left empty: the one rule of the translator's indexes of
// lists (readers by input, claimants by target, policies by Service).
func removeFromList[K, V comparable](m map[K][]V, k K, v V) {
	putList(m, k, slices.DeleteFunc(m[k], func(e V) bool { return e == v }))
}

// putList stores l at k in m, or removes k when l is empty.
func putList[K comparable, V any](m map[K][]V, k K, l []V) {
	if len(l) > 0 {
		m[k] = l
	} else {
		delete(m, k)
	}
}
