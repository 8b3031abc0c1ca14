package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

// write is one request's validated changes: PUT, apply and txn all become
// one and commit through the same steps, so the ownership and association
// rules hold alike for all three.
type write struct {
	puts map[string]*put
	// deletes maps keys to the revision the caller expects, 0 for any.
	deletes map[string]int64
	// deleteFields maps a txn's deletes to where they are in the request
	// ("deletes[3]"), for the errors that name them.
	deleteFields map[string]string
	// replace deletes every other object the caller owns (apply).
	replace bool
	// sync records, when the write changes anything, that the caller's
	// cluster synchronised (apply and txn: its controller's calls).
	sync bool
	// extra are further operations on keys outside the model (a front
	// door's own records, see Commit), committed in the same transaction.
	extra []store.Op
}

// put is one validated object to write.
type put struct {
	// field is where the object is in the request ("objects.services[2]"),
	// empty for a PUT of one object; field paths of errors start with it.
	field string
	obj   model.Object
	// value is the object's stored form.
	value []byte
	// ifRevision is the revision the caller expects, 0 for any.
	ifRevision int64
}

// writeResult says what a write did.
type writeResult struct {
	// revision is the store revision after the write.
	revision                             int64
	created, updated, deleted, unchanged int
	// revisions holds each put object's revision after the write.
	revisions map[string]int64
}

func newWrite() *write { return &write{puts: map[string]*put{}, deletes: map[string]int64{}} }

// add validates obj, claimed for cluster, and adds it to the puts. An
// invalid object's field errors are appended to fields, prefixed with
// field; an object whose owner is another cluster is an error.
func (w *write) add(field string, obj model.Object, cluster string, fields *model.FieldErrors) error {
	return w.addChecked(field, check(obj, cluster), fields)
}

// checked is an object claimed, validated and encoded by check, which
// addChecked adds to a write.
type checked struct {
	obj model.Object
	// refused is why obj was not claimed or validated, other than its
	// invalid fields, fieldErrs.
	refused   error
	fieldErrs model.FieldErrors
	value     []byte
	encodeErr error
}

// check claims obj for cluster, validates it and encodes it: add's work
// that does not touch the write, so that the objects of a large write can
// be checked side by side.
func check(obj model.Object, cluster string) checked {
	c := checked{obj: obj}
	if c.refused = claim(obj, cluster); c.refused != nil {
		return c
	}
	if err := obj.Validate(); err != nil {
		if !errors.As(err, &c.fieldErrs) {
			c.refused = err
		}
		return c
	}
	c.value, c.encodeErr = model.Encode(obj)
	return c
}

// addChecked adds an object check made to the puts, as add does.
func (w *write) addChecked(field string, c checked, fields *model.FieldErrors) error {
	if c.refused != nil {
		// A refusal naming a field of the object (claim's owner) names
		// it at the object's place in the request, as the other 403s do.
		var he *httpError
		if field != "" && errors.As(c.refused, &he) && len(he.body.Fields) > 0 {
			return &httpError{status: he.status, body: api.Error{Message: he.body.Message, Fields: prefixed(field, he.body.Fields)}}
		}
		return c.refused
	}
	if c.fieldErrs != nil {
		*fields = append(*fields, prefixed(field, c.fieldErrs)...)
		return nil
	}
	m := c.obj.ObjectMeta()
	key := model.Key(c.obj.ObjectKind(), m.Name)
	if _, dup := w.puts[key]; dup {
		*fields = append(*fields, &model.FieldError{Field: join(field, "name"), Detail: "duplicate name " + m.Name})
		return nil
	}
	if c.encodeErr != nil {
		return c.encodeErr
	}
	w.puts[key] = &put{field: field, obj: c.obj, value: c.value, ifRevision: m.Revision}
	return nil
}

// ownedElsewhere is the refusal of the put or delete of key, an object
// owner owns: its field is the object's name in the request
// ("puts.targetGroups[3].name", "deletes[0].name", "name" for a PUT or
// DELETE of one object), as the other 403s that refuse a put name a field
// of it, so that a client drops each refused object by its path.
func (w *write) ownedElsewhere(key string, isPut bool, owner, cluster string) *model.FieldError {
	field := w.deleteFields[key]
	if isPut {
		field = w.puts[key].field
	}
	return &model.FieldError{Field: join(field, "name"),
		Detail: fmt.Sprintf("%s is owned by cluster %q, not %q", key, owner, cluster)}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

func prefixed(prefix string, fe model.FieldErrors) model.FieldErrors {
	out := make(model.FieldErrors, len(fe))
	for i, e := range fe {
		out[i] = &model.FieldError{Field: join(prefix, e.Field), Detail: e.Detail}
	}
	return out
}

// maxAttempts bounds how often a write is re-planned after losing a race
// on a revision the server chose.
const maxAttempts = 50

// commit plans and commits w for cluster. Writes through one server
// take turns, so that nothing the checks read changes before the write
// commits. A conflict on a revision the server read (not one the caller
// named) means a writer through another server on the same store moved a
// key between the read and the write: the write is planned again from a
// fresh read, which reads everything the checks look at again too.
func (s *Server) commit(ctx context.Context, w *write, cluster string) (writeResult, error) {
	for attempt := 1; ; attempt++ {
		select {
		case s.writing <- struct{}{}:
		case <-ctx.Done():
			return writeResult{}, ctx.Err()
		}
		res, retry, err := s.commitOnce(ctx, w, cluster)
		<-s.writing
		if !retry || attempt == maxAttempts {
			return res, err
		}
		// A little jitter, so that writers racing for one key do not
		// collide again in step.
		backoff := time.Duration(rand.IntN(min(attempt, 10))+1) * time.Millisecond
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// commitOnce reads what w touches (everything, when w replaces the
// caller's objects or puts a service, whose checks read other objects),
// checks ownership and associations against that read, and commits w in
// one transaction whose preconditions are the revisions read. retry is
// true when it failed on a precondition the server chose.
func (s *Server) commitOnce(ctx context.Context, w *write, cluster string) (res writeResult, retry bool, err error) {
	for _, key := range slices.Concat(slices.Collect(maps.Keys(w.puts)), slices.Collect(maps.Keys(w.deletes))) {
		if strings.HasPrefix(key, model.KindPrefix(model.KindCluster)) {
			return res, false, errorf(http.StatusForbidden, "%s: clusters are admitted and removed by an administrator (trellis cluster add/remove), not written", key)
		}
	}
	whole := w.replace || slices.ContainsFunc(slices.Collect(maps.Values(w.puts)), func(p *put) bool {
		return p.obj.ObjectKind() == model.KindService
	})
	// current is true when the host-name index holds the stored services
	// as they are now: nothing was written since the write that left it
	// so, so that the services need not be listed.
	current := false
	if whole && !w.replace && s.hostnames != nil && s.hostnamesRev != 0 {
		rev, err := s.st.Revision(ctx)
		if err != nil {
			return res, false, err
		}
		current = rev == s.hostnamesRev
	}
	// indexRev is the revision at which the index holds the stored
	// services once checkAssociations has read them; 0 when it will not.
	var indexRev int64
	if current {
		indexRev = s.hostnamesRev
	}
	// untouched is the index's revision when w writes no service (it puts
	// none, and deletes none): then the index still holds the stored
	// services after w, if nothing else wrote in between.
	var untouched int64
	if !whole && !slices.ContainsFunc(slices.Collect(maps.Keys(w.deletes)), func(k string) bool {
		return strings.HasPrefix(k, model.KindPrefix(model.KindService))
	}) {
		untouched = s.hostnamesRev
	}
	s.hostnamesRev = 0
	existing := map[string]store.KeyValue{}
	switch {
	case current:
		kvs, rev, err := s.st.List(ctx, model.KindPrefix(model.KindServiceNetwork))
		if err != nil {
			return res, false, err
		}
		for _, kv := range kvs {
			existing[kv.Key] = kv
		}
		res.revision = max(indexRev, rev)
	case w.replace:
		kvs, rev, err := s.st.List(ctx, "/")
		if err != nil {
			return res, false, err
		}
		existing = make(map[string]store.KeyValue, len(kvs))
		for _, kv := range kvs {
			existing[kv.Key] = kv
		}
		res.revision, indexRev = rev, rev
	case whole:
		// A txn that puts a service: its association checks read the
		// services and networks (checkAssociations), not the target
		// groups and the rest, which are most of the bytes.
		for _, k := range []model.Kind{model.KindService, model.KindServiceNetwork} {
			kvs, rev, err := s.st.List(ctx, model.KindPrefix(k))
			if err != nil {
				return res, false, err
			}
			for _, kv := range kvs {
				existing[kv.Key] = kv
			}
			res.revision = max(res.revision, rev)
			if k == model.KindService {
				indexRev = rev
			}
		}
	}
	if !w.replace {
		if !whole {
			rev, err := s.st.Revision(ctx)
			if err != nil {
				return res, false, err
			}
			res.revision = rev
		}
		for _, key := range slices.Concat(slices.Collect(maps.Keys(w.puts)), slices.Collect(maps.Keys(w.deletes))) {
			if _, read := existing[key]; read {
				continue
			}
			kv, err := s.st.Get(ctx, key)
			switch {
			case errors.Is(err, store.ErrNotFound):
				continue
			case err != nil:
				return res, false, err
			}
			existing[key] = kv
		}
	}

	var ops []store.Op
	var foreign model.FieldErrors
	callerRevs := false
	deletes := maps.Clone(w.deletes)
	// Only an apply judges every existing object; a txn, only those it
	// names.
	judged := slices.Concat(slices.Collect(maps.Keys(w.puts)), slices.Collect(maps.Keys(w.deletes)))
	if w.replace {
		judged = slices.Collect(maps.Keys(existing))
	}
	slices.Sort(judged)
	for _, key := range slices.Compact(judged) {
		kv, ok := existing[key]
		if !ok {
			continue
		}
		_, isPut := w.puts[key]
		_, isDelete := deletes[key]
		if !isPut && !isDelete && !w.replace {
			continue
		}
		owner, err := ownerOf(kv)
		if err != nil {
			return res, false, err
		}
		switch {
		case isPut || isDelete:
			if owner != cluster {
				foreign = append(foreign, w.ownedElsewhere(key, isPut, owner, cluster))
			}
		case owner == cluster:
			// Apply: an object of the caller's it no longer wants,
			// unless the VPC Lattice API manages it.
			obj, err := decode(kv)
			if err != nil {
				return res, false, err
			}
			if !model.FromLattice(obj) {
				deletes[key] = 0
			}
		}
	}
	if len(foreign) > 0 {
		return res, false, &httpError{status: http.StatusForbidden, body: api.Error{Message: foreign.Error(), Fields: foreign}}
	}
	if whole {
		if err := s.checkAssociations(w, deletes, existing, cluster, current); err != nil {
			return res, false, err
		}
		if err := s.checkTargetGroups(ctx, w, existing, cluster); err != nil {
			return res, false, err
		}
	}
	if err := s.checkExports(ctx, w, existing, cluster, time.Now()); err != nil {
		return res, false, err
	}
	if err := s.checkPeers(ctx, w, deletes, existing, cluster); err != nil {
		return res, false, err
	}

	res.revisions = make(map[string]int64, len(w.puts))
	for _, key := range slices.Sorted(maps.Keys(w.puts)) {
		p := w.puts[key]
		kv, exists := existing[key]
		switch {
		case p.ifRevision != 0 && kv.ModRevision != p.ifRevision:
			return res, false, &store.ConflictError{Key: key, Expected: p.ifRevision, Actual: kv.ModRevision}
		case !exists:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: p.value, IfRevision: store.MustNotExist})
			res.created++
		case string(kv.Value) == string(p.value):
			res.unchanged++
			res.revisions[key] = kv.ModRevision
		default:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: p.value, IfRevision: kv.ModRevision})
			res.updated++
		}
		callerRevs = callerRevs || p.ifRevision != 0
	}
	for _, key := range slices.Sorted(maps.Keys(deletes)) {
		rev := deletes[key]
		kv, exists := existing[key]
		switch {
		case rev != 0 && kv.ModRevision != rev:
			return res, false, &store.ConflictError{Key: key, Expected: rev, Actual: kv.ModRevision}
		case !exists:
			continue
		}
		ops = append(ops, store.Op{Type: store.OpDelete, Key: key, IfRevision: kv.ModRevision})
		res.deleted++
		callerRevs = callerRevs || rev != 0
	}
	ops = append(ops, w.extra...)
	callerRevs = callerRevs || len(w.extra) > 0
	if len(ops) == 0 {
		if whole && indexRev != 0 && s.hostnames != nil {
			s.hostnamesRev = indexRev
		} else if untouched != 0 {
			s.hostnamesRev = untouched
		}
		return res, false, nil
	}
	if w.sync {
		ops = append(ops, syncOp(cluster, time.Now()))
	}
	res.revision, err = s.st.Txn(ctx, ops...)
	if err != nil {
		// A conflict on a revision the caller named is the caller's to
		// handle; one on a revision we read is retried.
		return res, errors.Is(err, store.ErrConflict) && !callerRevs, err
	}
	for key := range w.puts {
		if _, unchanged := res.revisions[key]; !unchanged {
			res.revisions[key] = res.revision
		}
	}
	if untouched != 0 && res.revision == untouched+1 {
		s.hostnamesRev = res.revision
	}
	if whole && indexRev != 0 && res.revision == indexRev+1 && s.hostnames != nil {
		// Nothing else was written between the read and this commit: the
		// index, with this commit's services, holds the stored services.
		if err := s.indexCommitted(w, deletes, res.revisions); err == nil {
			s.hostnamesRev = res.revision
		} else {
			s.hostnames = nil
		}
	}
	return res, false, nil
}

// indexCommitted lays a committed write's services over the host-name
// index: those it put, at their revisions, and those it deleted.
func (s *Server) indexCommitted(w *write, deletes map[string]int64, revisions map[string]int64) error {
	servicePrefix := model.KindPrefix(model.KindService)
	for key, p := range w.puts {
		if name, ok := strings.CutPrefix(key, servicePrefix); ok {
			if err := s.hostnames.refresh(name, store.KeyValue{Key: key, Value: p.value, ModRevision: revisions[key]}); err != nil {
				return err
			}
		}
	}
	for key := range deletes {
		if name, ok := strings.CutPrefix(key, servicePrefix); ok {
			if e := s.hostnames.services[name]; e != nil {
				s.hostnames.remove(e)
				delete(s.hostnames.services, name)
			}
		}
	}
	return nil
}

func ownerOf(kv store.KeyValue) (string, error) {
	var m model.Meta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return "", fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return m.Owner, nil
}

// checkAssociations enforces what one cluster may do to another's traffic,
// judged on the state the write would leave (existing, with w's puts and
// deletes applied):
//
//   - a service joins a network only if the network exists and allows the
//     service's owner (model.ServiceNetwork.Allows);
//   - a host name that a service of another owner already answers to (the
//     same name, or a wildcard covering it or covered by it) may be named
//     only by a cluster that the network of that service allows. Host
//     names are thus claimed by the first owner to serve them, per
//     network: the network's owner decides who else may serve them;
//   - a host name within a network's domain (its generated names) may be
//     named only by a cluster that network allows, served yet or not.
//
// Every refused field is named; the answer is 403.
//
// existing holds every stored service, unless current: then only those w
// writes, the index (Server.hostnames) holding the others as they are.
//
// The objects judged against are read in the same attempt as the write
// commits, and writes through one server take turns (see commit). Only
// the written keys are the commit's preconditions, though (the store
// compares nothing else): through another server on the same etcd, a
// network's allow list narrowed, or a host name claimed, between the read
// and the commit does not stop the write. The next write of the service
// is judged by the new state.
func (s *Server) checkAssociations(w *write, deletes map[string]int64, existing map[string]store.KeyValue, cluster string, current bool) error {
	networks := map[string]*model.ServiceNetwork{}
	decoded := make(map[string]decodedObject, len(s.decoded))
	defer func() { s.decoded = decoded }()
	if s.hostnames == nil {
		s.hostnames = newHostnameIndex()
	}
	stored := s.hostnames
	stored.stamp++
	view := &hostnameView{stored: stored, hidden: map[string]bool{}, put: newHostnameIndex()}
	servicePrefix, networkPrefix := model.KindPrefix(model.KindService), model.KindPrefix(model.KindServiceNetwork)
	for key, kv := range existing {
		if name, ok := strings.CutPrefix(key, servicePrefix); ok {
			// Services are decoded into the index, again only when their
			// revision changed.
			if err := stored.refresh(name, kv); err != nil {
				// The index may hold services of this refresh only in
				// part: the next one starts again.
				s.hostnames = nil
				return err
			}
			if _, gone := deletes[key]; gone {
				view.hidden[name] = true
			}
			continue
		}
		name, ok := strings.CutPrefix(key, networkPrefix)
		if !ok {
			continue
		}
		d, ok := s.decoded[key]
		if !ok || d.rev != kv.ModRevision {
			obj, err := decode(kv)
			if err != nil {
				return err
			}
			d = decodedObject{rev: kv.ModRevision, obj: obj}
		}
		decoded[key] = d
		if _, gone := deletes[key]; gone {
			continue
		}
		if n, ok := d.obj.(*model.ServiceNetwork); ok {
			networks[name] = n
		}
	}
	if !current {
		// Every stored service was read: those not are gone.
		stored.sweep()
	}
	var mine []*put
	for _, p := range w.puts {
		switch o := p.obj.(type) {
		case *model.ServiceNetwork:
			networks[o.Name] = o
		case *model.Service:
			view.hidden[o.Name] = true
			view.put.keep(o, 0)
			mine = append(mine, p)
		}
	}
	slices.SortFunc(mine, func(a, b *put) int { return strings.Compare(a.obj.ObjectMeta().Name, b.obj.ObjectMeta().Name) })
	claims := view

	var fields model.FieldErrors
	for _, p := range mine {
		svc := p.obj.(*model.Service)
		n := networks[svc.Network]
		switch {
		case n == nil:
			fields = append(fields, &model.FieldError{Field: join(p.field, "network"),
				Detail: fmt.Sprintf("network %q does not exist, so no owner allows cluster %q into it", svc.Network, cluster)})
		case !n.Allows(svc.Owner):
			fields = append(fields, &model.FieldError{Field: join(p.field, "network"),
				Detail: fmt.Sprintf("network %q is owned by cluster %q, whose allowedClusters do not name %q", n.Name, n.Owner, svc.Owner)})
		}
		for _, c := range svc.HostnameClaims() {
			if other := claims.conflict(c.Name, svc, networks); other != nil {
				fields = append(fields, &model.FieldError{Field: join(p.field, c.Field),
					Detail: fmt.Sprintf("%q is served by service %q of cluster %q in network %q, whose owner does not allow cluster %q",
						c.Name, other.Name, other.Owner, other.Network, svc.Owner)})
			} else if n := domainOf(c.Name, networks, svc.Owner); n != nil {
				fields = append(fields, &model.FieldError{Field: join(p.field, c.Field),
					Detail: fmt.Sprintf("%q is within the domain %q of network %q, whose owner %q does not allow cluster %q",
						c.Name, n.Domain, n.Name, n.Owner, svc.Owner)})
			}
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return &httpError{status: http.StatusForbidden, body: api.Error{Message: fields.Error(), Fields: fields}}
}

// domainOf returns a network whose domain the host name name falls in
// (or overlaps, for a wildcard) and that does not allow cluster; nil when
// there is none. A network's generated names are its own: no other
// cluster claims one before the network's owner does.
func domainOf(name string, networks map[string]*model.ServiceNetwork, cluster string) *model.ServiceNetwork {
	for _, key := range slices.Sorted(maps.Keys(networks)) {
		n := networks[key]
		if n.Domain != "" && (name == n.Domain || model.HostnamesOverlap(name, "*."+n.Domain)) && !n.Allows(cluster) {
			return n
		}
	}
	return nil
}

// hostnameIndex finds the services that answer to a host name. The
// server keeps one of the stored services across writes (Server.hostnames),
// updating only the services whose revision changed; a write's own puts
// are a small one laid over it (hostnameView).
type hostnameIndex struct {
	// exact and wildcards map a host name to the services naming it, by
	// service name.
	exact, wildcards map[string]map[string]*model.Service
	services         map[string]*indexedService
	// stamp counts refreshes; a service not kept in the latest is gone.
	stamp uint64
}

// indexedService is one service of a hostnameIndex.
type indexedService struct {
	rev   int64
	svc   *model.Service
	names []string
	stamp uint64
}

func newHostnameIndex() *hostnameIndex {
	return &hostnameIndex{exact: map[string]map[string]*model.Service{}, wildcards: map[string]map[string]*model.Service{},
		services: map[string]*indexedService{}}
}

// hosts returns the map of ix that holds host name h.
func (ix *hostnameIndex) hosts(h string) map[string]map[string]*model.Service {
	if strings.HasPrefix(h, "*.") {
		return ix.wildcards
	}
	return ix.exact
}

// keep records svc, stored at revision rev, as present in this refresh;
// its host names are indexed again only when rev changed.
func (ix *hostnameIndex) keep(svc *model.Service, rev int64) {
	if e := ix.services[svc.Name]; e != nil {
		e.stamp = ix.stamp
		if e.rev == rev && rev != 0 {
			return
		}
		ix.remove(e)
	}
	claims := svc.HostnameClaims()
	// What a conflict reads of a service, not all of it: the index of the
	// stored services holds every one (10,000 at issue 15's size).
	svc = &model.Service{Meta: model.Meta{Name: svc.Name, Owner: svc.Owner}, Network: svc.Network}
	e := &indexedService{rev: rev, svc: svc, stamp: ix.stamp}
	for _, c := range claims {
		m := ix.hosts(c.Name)
		if m[c.Name] == nil {
			m[c.Name] = map[string]*model.Service{}
		}
		m[c.Name][svc.Name] = svc
		e.names = append(e.names, c.Name)
	}
	ix.services[svc.Name] = e
}

// refresh keeps the service name stored as kv, decoding it only when its
// revision is not the one indexed.
func (ix *hostnameIndex) refresh(name string, kv store.KeyValue) error {
	if e := ix.services[name]; e != nil && e.rev == kv.ModRevision {
		e.stamp = ix.stamp
		return nil
	}
	obj, err := decode(kv)
	if err != nil {
		return err
	}
	svc, ok := obj.(*model.Service)
	if !ok || svc.Name != name {
		return fmt.Errorf("%s does not hold service %q", kv.Key, name)
	}
	ix.keep(svc, kv.ModRevision)
	return nil
}

// remove takes e's host names out of the index.
func (ix *hostnameIndex) remove(e *indexedService) {
	for _, h := range e.names {
		m := ix.hosts(h)
		delete(m[h], e.svc.Name)
		if len(m[h]) == 0 {
			delete(m, h)
		}
	}
}

// sweep drops the services not kept since the refresh began.
func (ix *hostnameIndex) sweep() {
	for name, e := range ix.services {
		if e.stamp != ix.stamp {
			ix.remove(e)
			delete(ix.services, name)
		}
	}
}

// hostnameView is the stored services' index with a write laid over it:
// hidden are the stored services the write puts or deletes, put the index
// of the services it puts.
type hostnameView struct {
	stored *hostnameIndex
	hidden map[string]bool
	put    *hostnameIndex
}

// list returns the services naming host name h, sorted by name.
func (v *hostnameView) list(h string) []*model.Service {
	var out []*model.Service
	for name, svc := range v.stored.hosts(h)[h] {
		if !v.hidden[name] {
			out = append(out, svc)
		}
	}
	for _, svc := range v.put.hosts(h)[h] {
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b *model.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// overlapping returns the host names of kind (exact or wildcards) that
// overlap name, sorted.
func (v *hostnameView) overlapping(name string, wildcards bool) []string {
	var out []string
	for _, ix := range []*hostnameIndex{v.stored, v.put} {
		m := ix.exact
		if wildcards {
			m = ix.wildcards
		}
		for h := range m {
			if model.HostnamesOverlap(name, h) {
				out = append(out, h)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// conflict returns a service of another owner than svc's that answers to
// a host name overlapping name, in a network that does not allow svc's
// owner (or that does not exist); nil when there is none.
func (v *hostnameView) conflict(name string, svc *model.Service, networks map[string]*model.ServiceNetwork) *model.Service {
	refused := func(others []*model.Service) *model.Service {
		for _, o := range others {
			if o.Owner == svc.Owner || o.Name == svc.Name {
				continue
			}
			if n := networks[o.Network]; n == nil || !n.Allows(svc.Owner) {
				return o
			}
		}
		return nil
	}
	if !strings.HasPrefix(name, "*.") {
		if o := refused(v.list(name)); o != nil {
			return o
		}
	} else {
		for _, h := range v.overlapping(name, false) {
			if o := refused(v.list(h)); o != nil {
				return o
			}
		}
	}
	for _, h := range v.overlapping(name, true) {
		if o := refused(v.list(h)); o != nil {
			return o
		}
	}
	return nil
}

// Commit writes puts and deletes (model keys, see model.Key) for cluster
// through the same steps as the API's txn, ownership and association
// checks included, with extra (operations on keys outside the model's
// "/" prefix) in the same store transaction. It is how a front door that
// keeps records of its own (package lattice) changes the model: its
// records and the objects they make commit together or not at all. A
// conflict on an extra operation's revision is returned, not retried.
// Invalid objects are model.FieldErrors; a refused write is an error
// whose HTTPStatus is 403.
func (s *Server) Commit(ctx context.Context, cluster string, puts []model.Object, deletes []string, extra []store.Op) (int64, error) {
	w := newWrite()
	var fields model.FieldErrors
	for i, obj := range puts {
		if err := w.add(fmt.Sprintf("puts[%d]", i), obj, cluster, &fields); err != nil {
			return 0, err
		}
	}
	if len(fields) > 0 {
		return 0, fields
	}
	for _, key := range deletes {
		if _, _, err := model.ParseKey(key); err != nil {
			return 0, err
		}
		w.deletes[key] = 0
	}
	for _, op := range extra {
		if strings.HasPrefix(op.Key, "/") {
			return 0, fmt.Errorf("extra operation on %s: a model key", op.Key)
		}
	}
	w.extra = extra
	res, err := s.commit(ctx, w, cluster)
	return res.revision, err
}

// HTTPStatus is the status the API answers err with (500 for errors it
// does not know), for callers of Commit that answer in another shape.
func HTTPStatus(err error) int {
	var he *httpError
	var fe model.FieldErrors
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.As(err, &fe):
		return http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// Store is the store the server serves.
func (s *Server) Store() store.Store { return s.st }
