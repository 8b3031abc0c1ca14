package kubernetes

import (
	"context"
	"encoding/json"
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
	for i := range out.Networks {
		desired[key(&out.Networks[i])] = &out.Networks[i]
	}
	for i := range out.Services {
		desired[key(&out.Services[i])] = &out.Services[i]
	}
	for i := range out.TargetGroups {
		desired[key(&out.TargetGroups[i])] = &out.TargetGroups[i]
	}
	for i := range out.Certificates {
		desired[key(&out.Certificates[i])] = &out.Certificates[i]
	}
	for i := range out.WorkloadSets {
		desired[key(&out.WorkloadSets[i])] = &out.WorkloadSets[i]
	}
	var req api.TxnRequest
	encoded := make(map[string][]byte, len(desired))
	for _, k := range slices.Sorted(maps.Keys(desired)) {
		obj := desired[k]
		b, err := comparable(obj)
		if err != nil {
			return 0, false, err
		}
		encoded[k] = b
		if string(r.sent[k]) == string(b) {
			continue
		}
		if err := addPut(&req.Puts, obj); err != nil {
			return 0, false, err
		}
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

// seed records what the control plane holds of this cluster's.
func (r *Reconciler) seed(ctx context.Context) error {
	sent := map[string][]byte{}
	for _, kind := range model.Kinds {
		objs, _, err := r.cp.List(ctx, kind)
		if err != nil {
			return fmt.Errorf("listing %s objects in the control plane: %w", kind, err)
		}
		for _, obj := range objs {
			if obj.ObjectMeta().Owner != r.cluster {
				continue
			}
			b, err := comparable(obj)
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

// comparable encodes obj without its revision, so that the object sent and
// the object read back compare equal when their content does.
func comparable(obj model.Object) ([]byte, error) {
	m := obj.ObjectMeta()
	rev := m.Revision
	m.Revision = 0
	b, err := json.Marshal(obj)
	m.Revision = rev
	return b, err
}

// addPut adds obj to the puts of its kind.
func addPut(o *api.Objects, obj model.Object) error {
	switch v := obj.(type) {
	case *model.ServiceNetwork:
		o.Networks = append(o.Networks, *v)
	case *model.Service:
		o.Services = append(o.Services, *v)
	case *model.TargetGroup:
		o.TargetGroups = append(o.TargetGroups, *v)
	case *model.Certificate:
		o.Certificates = append(o.Certificates, *v)
	case *model.WorkloadSet:
		o.WorkloadSets = append(o.WorkloadSets, *v)
	default:
		return fmt.Errorf("cannot send a %s", obj.ObjectKind())
	}
	return nil
}
