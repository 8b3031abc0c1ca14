package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

// checkPeers refuses (403) a write that would leave cluster with more than
// model.MaxClusterPeers Peers, naming the new Peers beyond the bound (by name,
// in order). deletes are the keys the write deletes (an apply's included),
// existing holds the keys w touches as read; the caller's other Peers are
// listed. Like the other checks, the list is not a
// precondition of the commit: two writes through two servers at once may
// together pass the bound.
func (s *Server) checkPeers(ctx context.Context, w *write, deletes map[string]int64, existing map[string]store.KeyValue, cluster string) error {
	var added []*put
	for key, p := range w.puts {
		if _, ok := p.obj.(*model.Peer); ok {
			if _, stored := existing[key]; !stored {
				added = append(added, p)
			}
		}
	}
	if len(added) == 0 {
		return nil
	}
	kvs, _, err := s.st.List(ctx, model.KindPrefix(model.KindPeer))
	if err != nil {
		return err
	}
	kept := 0
	for _, kv := range kvs {
		if _, gone := deletes[kv.Key]; gone {
			continue
		}
		if _, put := w.puts[kv.Key]; put {
			// Stored, so not added: counted here once.
			kept++
			continue
		}
		if owner, err := ownerOf(kv); err != nil {
			return err
		} else if owner == cluster {
			kept++
		}
	}
	if kept+len(added) <= model.MaxClusterPeers {
		return nil
	}
	slices.SortFunc(added, func(a, b *put) int { return strings.Compare(a.obj.ObjectMeta().Name, b.obj.ObjectMeta().Name) })
	var fields model.FieldErrors
	for _, p := range added[max(model.MaxClusterPeers-kept, 0):] {
		fields = append(fields, &model.FieldError{Field: join(p.field, "name"), Detail: fmt.Sprintf(
			"cluster %q would publish more than %d peers (model.MaxClusterPeers); remove one first", cluster, model.MaxClusterPeers)})
	}
	return &httpError{status: http.StatusForbidden, body: api.Error{Message: fields.Error(), Fields: fields}}
}
