package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

// checkExports applies the control plane's two rules for the
// ServiceExports w puts, against existing (what commitOnce read):
//
//   - a cluster exports only from the namespaces its admission lists
//     (model.Cluster.ExportNamespaces); an export outside them is refused
//     with 403, naming the namespace and the cluster;
//   - ExportedAt, which orders the exports of one service when they
//     conflict (the oldest wins), is the time the control plane first
//     stored the export, kept across its updates. The caller's value is
//     ignored: a cluster cannot make its export older than another's.
//
// The stamp is set on the put's object and stored form. Like
// checkAssociations, the Cluster read is not a precondition of the commit:
// a list narrowed through another server between the read and the commit
// does not stop the write, but every reader leaves such an export out
// (mcs.Served).
func (s *Server) checkExports(ctx context.Context, w *write, existing map[string]store.KeyValue, cluster string, now time.Time) error {
	var puts []*put
	for _, p := range w.puts {
		if _, ok := p.obj.(*model.ServiceExport); ok {
			puts = append(puts, p)
		}
	}
	if len(puts) == 0 {
		return nil
	}
	slices.SortFunc(puts, func(a, b *put) int { return strings.Compare(a.obj.ObjectMeta().Name, b.obj.ObjectMeta().Name) })
	admission, err := s.admission(ctx, existing, cluster)
	if err != nil {
		return err
	}
	var fields model.FieldErrors
	for _, p := range puts {
		e := p.obj.(*model.ServiceExport)
		if admission != nil && !admission.AllowsExport(e.Namespace) {
			fields = append(fields, &model.FieldError{Field: join(p.field, "namespace"), Detail: fmt.Sprintf(
				"cluster %q may not export from namespace %q: its admission allows %s (an administrator changes that with trellis cluster set %s --export-namespaces)",
				cluster, e.Namespace, strings.Join(admission.ExportNamespaces, ","), cluster)})
			continue
		}
		e.ExportedAt = now.UTC()
		if kv, ok := existing[model.Key(model.KindServiceExport, e.Name)]; ok {
			obj, err := decode(kv)
			if err != nil {
				return err
			}
			if old := obj.(*model.ServiceExport).ExportedAt; !old.IsZero() {
				e.ExportedAt = old
			}
		}
		if p.value, err = model.Encode(e); err != nil {
			return err
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return &httpError{status: http.StatusForbidden, body: api.Error{Message: fields.Error(), Fields: fields}}
}

// admission is cluster's published admission, from existing when it holds
// it (a whole read) or else from the store; nil when there is none (a
// cluster authenticated by a bearer token).
func (s *Server) admission(ctx context.Context, existing map[string]store.KeyValue, cluster string) (*model.Cluster, error) {
	key := model.Key(model.KindCluster, cluster)
	kv, ok := existing[key]
	if !ok {
		var err error
		kv, err = s.st.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, err
		}
	}
	obj, err := decode(kv)
	if err != nil {
		return nil, err
	}
	return obj.(*model.Cluster), nil
}
