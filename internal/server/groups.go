package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

// checkTargetGroups refuses (403, naming each field) a service w puts
// whose rules forward or mirror to a target group of another cluster: a
// cluster's targets receive what its own services send them, judged by
// its own policies, and what its exports publish to every cluster, not
// what another cluster's service routes to them. A target group the write
// puts is the caller's (claim); one it deletes, or that does not exist,
// names nobody's targets. Like checkAssociations, the groups read are not
// preconditions of the commit: a group written by another cluster through
// another server between the read and the commit does not stop the write,
// and the proxies, which judge the same rule when they compile (a group of
// another owner has no targets for the service), send it nothing.
func (s *Server) checkTargetGroups(ctx context.Context, w *write, existing map[string]store.KeyValue, cluster string) error {
	owners := map[string]string{}
	groupOwner := func(name string) (string, error) {
		key := model.Key(model.KindTargetGroup, name)
		if o, ok := owners[key]; ok {
			return o, nil
		}
		if _, ok := w.puts[key]; ok {
			return cluster, nil
		}
		if _, ok := w.deletes[key]; ok {
			return "", nil
		}
		kv, ok := existing[key]
		if !ok {
			var err error
			kv, err = s.st.Get(ctx, key)
			switch {
			case errors.Is(err, store.ErrNotFound):
				owners[key] = ""
				return "", nil
			case err != nil:
				return "", err
			}
		}
		o, err := ownerOf(kv)
		owners[key] = o
		return o, err
	}
	var fields model.FieldErrors
	var puts []*put
	for _, p := range w.puts {
		if _, ok := p.obj.(*model.Service); ok {
			puts = append(puts, p)
		}
	}
	slices.SortFunc(puts, func(a, b *put) int {
		return strings.Compare(a.field+a.obj.ObjectMeta().Name, b.field+b.obj.ObjectMeta().Name)
	})
	for _, p := range puts {
		svc := p.obj.(*model.Service)
		for _, ref := range groupRefs(svc) {
			owner, err := groupOwner(ref.name)
			if err != nil {
				return err
			}
			if owner != "" && owner != cluster {
				fields = append(fields, &model.FieldError{Field: join(p.field, ref.field), Detail: fmt.Sprintf(
					"target group %q is cluster %q's: a service forwards only to its own cluster's target groups (to another cluster's through its exports, a ServiceImport)",
					ref.name, owner)})
			}
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return &httpError{status: http.StatusForbidden, body: api.Error{Message: fields.Error(), Fields: fields}}
}

// groupRef is a target group a service's rule names, and where.
type groupRef struct{ field, name string }

// groupRefs lists the target groups svc's rules forward or mirror to.
func groupRefs(svc *model.Service) []groupRef {
	var out []groupRef
	mirrors := func(prefix string, fs []model.Filter) {
		for k, f := range fs {
			if f.Mirror != nil && f.Mirror.TargetGroup != "" {
				out = append(out, groupRef{fmt.Sprintf("%s.filters[%d].mirror.targetGroup", prefix, k), f.Mirror.TargetGroup})
			}
		}
	}
	for i, r := range svc.Rules {
		rp := fmt.Sprintf("rules[%d]", i)
		mirrors(rp, r.Filters)
		if r.Action.Forward == nil {
			continue
		}
		for j, b := range r.Action.Forward.Backends {
			bp := fmt.Sprintf("%s.action.forward.backends[%d]", rp, j)
			if b.TargetGroup != "" {
				out = append(out, groupRef{bp + ".targetGroup", b.TargetGroup})
			}
			mirrors(bp, b.Filters)
		}
	}
	return out
}
