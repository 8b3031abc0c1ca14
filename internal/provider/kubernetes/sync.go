package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// send makes the control plane hold exactly out's objects of ours, sending
// only the difference from what it last sent, in one transaction. sent is
// false when nothing differed, so nothing was sent. After a failure the
// record of what was sent is dropped and re-read from the server next time,
// since the failure may have left it unknown.
func (r *Reconciler) send(ctx context.Context, out *translate.Output) (rev int64, sent bool, err error) {
	if r.sent == nil {
		if err := r.seed(ctx); err != nil {
			return 0, false, err
		}
	}
	desired := map[string]model.Object{}
	for _, obj := range out.Each() {
		desired[key(obj)] = obj
	}
	var req api.TxnRequest
	encoded := make(map[string][]byte, len(desired))
	for _, k := range slices.Sorted(maps.Keys(desired)) {
		obj := desired[k]
		b, err := model.Encode(obj)
		if err != nil {
			return 0, false, err
		}
		encoded[k] = b
		if string(r.sent[k]) == string(b) {
			continue
		}
		req.Puts.Add(obj)
	}
	for _, k := range slices.Sorted(maps.Keys(r.sent)) {
		if _, ok := desired[k]; ok {
			continue
		}
		kind, name, err := model.ParseKey(k)
		if err != nil {
			return 0, false, err
		}
		req.Deletes = append(req.Deletes, api.ObjectRef{Kind: kind, Name: name})
	}
	puts := req.Puts.Len()
	if len(req.Deletes) == 0 && puts == 0 {
		return 0, false, nil
	}
	res, err := r.cp.Txn(ctx, &req)
	if err != nil {
		r.sent = nil
		return 0, false, fmt.Errorf("sending %d puts and %d deletes to the control plane: %w", puts, len(req.Deletes), err)
	}
	r.sent = encoded
	r.log.Info("control plane updated", "revision", res.Revision, "created", res.Created, "updated", res.Updated,
		"deleted", res.Deleted, "unchanged", res.Unchanged)
	return res.Revision, true, nil
}

// seed records what the control plane holds of this cluster's, of the
// kinds the controller sends: a cluster's Peers are its proxies' to
// publish and withdraw, and the objects the VPC Lattice API made that
// API's, not the controller's to delete.
func (r *Reconciler) seed(ctx context.Context) error {
	sent := map[string][]byte{}
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
			sent[key(obj)] = b
		}
	}
	r.sent = sent
	return nil
}

func key(obj model.Object) string { return model.Key(obj.ObjectKind(), obj.ObjectMeta().Name) }
