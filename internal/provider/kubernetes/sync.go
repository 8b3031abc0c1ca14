package kubernetes

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
)

// parallelEncode is how many objects a send encodes before it encodes them
// side by side.
const parallelEncode = 256

// digest is the hash of an object's stored form (model.Encode), what the
// diff compares.
type digest = [sha256.Size]byte

// send makes the control plane hold exactly out's objects of ours, sending
// only the difference from what it last sent, in one transaction. changed,
// when not nil, names by model.Key every object of out that may differ from
// what was last sent, or be new or gone since (translate.Output.Changed
// and what the controller changed after translating): only those are
// encoded and compared. Nil compares every object, as does the first send
// after (re)reading what the control plane holds. sent is false when
// nothing differed, so nothing was sent. After a failure the record of
// what was sent is dropped and re-read from the server next time, since
// the failure may have left it unknown.
func (r *Reconciler) send(ctx context.Context, out *model.Objects, changed map[string]bool) (rev int64, sent bool, err error) {
	if r.sent == nil {
		if err := r.seed(ctx); err != nil {
			return 0, false, err
		}
		changed = nil
	}
	// What to encode and compare: every object, or what changed (in one
	// order every time, so a request is the same for the same change).
	var (
		keys    []string
		objs    []model.Object
		deletes []string
	)
	if changed == nil {
		objs = objects(out)
		keys = make([]string, len(objs))
		for i, obj := range objs {
			keys[i] = key(obj)
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(changed)) {
			obj, err := find(out, k)
			if err != nil {
				return 0, false, err
			}
			if obj != nil {
				keys, objs = append(keys, k), append(objs, obj)
			} else if _, ok := r.sent[k]; ok {
				deletes = append(deletes, k)
			}
		}
	}
	// Side by side when there are many: a first send is every object of
	// the cluster (20,001 at issue 15's size).
	sums := make([]digest, len(objs))
	errs := make([]error, len(objs))
	parallel.Do(len(objs), parallelEncode, func(i int) {
		var b []byte
		if b, errs[i] = model.Encode(objs[i]); errs[i] == nil {
			sums[i] = sha256.Sum256(b)
		}
	})
	var req api.TxnRequest
	digests := make(map[string]digest, len(objs)) // the new record: whole, or what changed
	for i, obj := range objs {
		if errs[i] != nil {
			return 0, false, errs[i]
		}
		digests[keys[i]] = sums[i]
		if prev, ok := r.sent[keys[i]]; !ok || prev != sums[i] {
			req.Puts.Add(obj)
		}
	}
	encoded := len(objs)
	if changed == nil {
		for k := range r.sent {
			if _, ok := digests[k]; !ok {
				deletes = append(deletes, k)
			}
		}
	}
	r.mu.Lock()
	r.stats.Encoded = encoded
	r.mu.Unlock()
	slices.Sort(deletes)
	for _, k := range deletes {
		kind, name, err := model.ParseKey(k)
		if err != nil {
			return 0, false, err
		}
		req.Deletes = append(req.Deletes, api.ObjectRef{Kind: kind, Name: name})
	}
	puts := req.Puts.Len()
	if len(req.Deletes) == 0 && puts == 0 {
		if changed == nil {
			r.sent = digests
		}
		return 0, false, nil
	}
	res, err := r.cp.Txn(ctx, &req)
	if err != nil {
		r.sent = nil
		return 0, false, fmt.Errorf("sending %d puts and %d deletes to the control plane: %w", puts, len(req.Deletes), err)
	}
	if changed == nil {
		r.sent = digests
	} else {
		maps.Copy(r.sent, digests)
		for _, k := range deletes {
			delete(r.sent, k)
		}
	}
	r.log.Info("control plane updated", "revision", res.Revision, "created", res.Created, "updated", res.Updated,
		"deleted", res.Deleted, "unchanged", res.Unchanged)
	return res.Revision, true, nil
}

// seed records what the control plane holds of this cluster's, of the
// kinds the controller sends: a cluster's Peers are its proxies' to
// publish and withdraw, and the objects the VPC Lattice API made that
// API's, not the controller's to delete.
func (r *Reconciler) seed(ctx context.Context) error {
	sent := map[string]digest{}
	for _, kind := range model.Kinds {
		if kind == model.KindPeer {
			continue
		}
		objs, _, err := r.cp.List(ctx, kind)
		if err != nil {
			return fmt.Errorf("listing %s objects in the control plane: %w", kind, err)
		}
		for _, obj := range objs {
			// Objects the VPC Lattice API made for this cluster are
			// that API's, not the controller's to delete.
			if obj.ObjectMeta().Owner != r.cluster || model.FromLattice(obj) {
				continue
			}
			b, err := model.Encode(obj)
			if err != nil {
				return err
			}
			sent[key(obj)] = sha256.Sum256(b)
		}
	}
	r.sent = sent
	return nil
}

func key(obj model.Object) string { return model.Key(obj.ObjectKind(), obj.ObjectMeta().Name) }

// objects returns every object of the kinds the controller sends.
func objects(o *model.Objects) []model.Object {
	all := make([]model.Object, 0, o.Len())
	all = appendObjects(all, o.Networks)
	all = appendObjects(all, o.Services)
	all = appendObjects(all, o.TargetGroups)
	all = appendObjects(all, o.Certificates)
	all = appendObjects(all, o.WorkloadSets)
	return appendObjects(all, o.Exports)
}

func appendObjects[T any, P interface {
	*T
	model.Object
}](all []model.Object, list []T) []model.Object {
	for i := range list {
		all = append(all, P(&list[i]))
	}
	return all
}

// find returns the object of o with store key k, or nil when o has none.
// o's lists of the kinds the controller sends must be sorted by name, as
// the translator makes them (and Reconcile keeps the exports); it has no
// objects of the other kinds.
func find(o *model.Objects, k string) (model.Object, error) {
	kind, name, err := model.ParseKey(k)
	if err != nil {
		return nil, err
	}
	l, ok := o.List(kind)
	if !ok {
		return nil, nil
	}
	return l.Find(name), nil
}
