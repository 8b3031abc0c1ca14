package kubernetes

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/api"
	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
)

// parallelEncode is how many objects a send encodes before it encodes them
// side by side.
const parallelEncode = 256

// digest is the hash of an object's stored form (model.Encode), what the
// diff compares.
type digest = [sha256.Size]byte

// refusalRounds is how many times a send drops the puts the control plane
// refused and sends the rest again: dropping a target group another
// cluster owns makes a service forwarding to it refused in turn.
const refusalRounds = 4

// send makes the control plane hold exactly out's objects of ours, sending
// only the difference from what it last sent, in one transaction. The
// puts the control plane refuses with a 403 naming them (a name another
// cluster owns, a target group or network that cluster's rules keep from
// us) are dropped and the rest sent again, so that one clash does not stop
// every other change; those objects are kept out of sent and offered again
// at the next send, and logged once. changed,
// when not nil, names by model.Key every object of out that may differ from
// what was last sent, or be new or gone since (translate.Output.Changed
// and what the controller changed after translating): only those are
// encoded and compared. Nil compares every object, as does the first send
// after (re)reading what the control plane holds. sent is false when
// nothing differed, so nothing was sent. After a failure the record of
// what was sent is dropped and re-read from the server next time, since
// the failure may have left it unknown.
func (r *Reconciler) send(ctx context.Context, out *model.Objects, changed map[string]bool) (rev int64, sent bool, _ error) {
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
		// What was refused is offered again: its name may be free now.
		for k := range r.refused {
			changed[k] = true
		}
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
	var (
		res     api.TxnResult
		err     error
		refused = map[string]string{}
	)
	for round := 0; req.Puts.Len() > 0 || len(req.Deletes) > 0; round++ {
		res, err = r.cp.Txn(ctx, &req)
		drop := refusedPuts(err, &req)
		if drop == nil || round == refusalRounds {
			sent = true
			break
		}
		maps.Copy(refused, drop)
		req.Puts = without(&req.Puts, drop)
		res, err = api.TxnResult{}, nil
	}
	if err != nil {
		r.sent = nil
		return 0, false, fmt.Errorf("sending %d puts and %d deletes to the control plane: %w", req.Puts.Len(), len(req.Deletes), err)
	}
	r.noteRefused(refused)
	for k := range refused {
		delete(digests, k)
	}
	if changed == nil {
		r.sent = digests
	} else {
		maps.Copy(r.sent, digests)
		for _, k := range slices.Concat(deletes, slices.Collect(maps.Keys(refused))) {
			delete(r.sent, k)
		}
	}
	if !sent {
		return 0, false, nil
	}
	r.log.Info("control plane updated", "revision", res.Revision, "created", res.Created, "updated", res.Updated,
		"deleted", res.Deleted, "unchanged", res.Unchanged)
	return res.Revision, true, nil
}

// refusedPuts returns, by store key, the puts of req that err, the
// control plane's answer to it, refuses and why: a 403 whose every field
// names a put ("puts.targetGroups[3].name"). Nil for any other answer,
// one that names anything else too (a delete) included: then nothing of
// req can be dropped to send the rest.
func refusedPuts(err error, req *api.TxnRequest) map[string]string {
	var ae *tclient.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || len(ae.Body.Fields) == 0 {
		return nil
	}
	drop := map[string]string{}
	for _, f := range ae.Body.Fields {
		path, ok := strings.CutPrefix(f.Field, "puts.")
		if !ok {
			return nil
		}
		obj, ok := req.Puts.At(path)
		if !ok {
			return nil
		}
		if k := key(obj); drop[k] == "" {
			drop[k] = f.Detail
		} else {
			drop[k] += "; " + f.Detail
		}
	}
	return drop
}

// without returns the objects of puts not named in drop.
func without(puts *model.Objects, drop map[string]string) model.Objects {
	var rest model.Objects
	for obj := range puts.All() {
		if _, ok := drop[key(obj)]; !ok {
			rest.Add(obj)
		}
	}
	return rest
}

// noteRefused records what the last send had refused: a warning for each
// object newly refused (or refused for another reason), a line for each
// object refused before and taken now, not a line per send.
func (r *Reconciler) noteRefused(refused map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(refused)) {
		if r.refused[k] != refused[k] {
			r.log.Warn("the control plane refused an object of this cluster; it is offered again at every sync",
				"object", k, "reason", refused[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.refused)) {
		if _, still := refused[k]; !still {
			r.log.Info("an object the control plane refused before is no longer refused", "object", k)
		}
	}
	if len(refused) == 0 {
		refused = nil
	}
	r.refused = refused
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
