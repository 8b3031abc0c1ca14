package server

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
	"trellis.dev/trellis/internal/store"
)

// Certificates' private keys are readable only by the clusters
// model.KeyReaders names; every other caller gets them with the key
// redacted, on get, list and the watch stream alike.

// keyReaders reads what decides who may read keys: every network and
// service.
func (s *Server) keyReaders(ctx context.Context) (*model.KeyReaders, error) {
	var networks []*model.ServiceNetwork
	var services []*model.Service
	for _, kind := range []model.Kind{model.KindServiceNetwork, model.KindService} {
		objs, _, err := s.listKind(ctx, kind)
		if err != nil {
			return nil, err
		}
		for _, obj := range objs {
			switch o := obj.(type) {
			case *model.ServiceNetwork:
				networks = append(networks, o)
			case *model.Service:
				services = append(services, o)
			}
		}
	}
	return model.NewKeyReaders(networks, services), nil
}

// redactFor returns objs with the key of every certificate cluster may not
// read redacted, reading what decides that only when some certificate is
// another cluster's.
func (s *Server) redactFor(ctx context.Context, cluster string, objs []model.Object) ([]model.Object, error) {
	var readers *model.KeyReaders
	for i, obj := range objs {
		c, ok := obj.(*model.Certificate)
		if !ok || c.Owner == cluster {
			continue
		}
		if readers == nil {
			var err error
			if readers, err = s.keyReaders(ctx); err != nil {
				return nil, err
			}
		}
		if !readers.CanRead(cluster, c) {
			objs[i] = c.Redacted()
		}
	}
	return objs, nil
}

// keyView is one watch stream's view of what decides which keys its
// caller may read, kept current from the stream's own events, and of what
// the stream last sent of each certificate, so that a change that makes a
// key readable (or no longer) re-sends the certificate.
type keyView struct {
	cluster string
	// revision is the store revision the view reflects; events at or
	// before it (a resumed stream catching up) do not change it.
	revision int64
	networks map[string]*model.ServiceNetwork
	services map[string]*model.Service
	certs    map[string]*model.Certificate
	readers  *model.KeyReaders
	// readable records, by certificate, whether the stream last sent it
	// with its key.
	readable map[string]bool
	// follow is false for a stream that sends no certificates: the view
	// then stays empty and changes nothing it sends.
	follow bool
}

// newKeyView makes the view of a stream starting at revision, where the
// store holds kvs; follow says whether the stream sends certificates.
func newKeyView(cluster string, kvs []store.KeyValue, revision int64, follow bool) (*keyView, error) {
	v := &keyView{cluster: cluster, revision: revision, networks: map[string]*model.ServiceNetwork{},
		services: map[string]*model.Service{}, certs: map[string]*model.Certificate{}, readable: map[string]bool{}, follow: follow}
	if !follow {
		kvs = nil
	}
	for _, kv := range kvs {
		switch kind, _, _ := model.ParseKey(kv.Key); kind {
		case model.KindServiceNetwork, model.KindService, model.KindCertificate:
		default:
			continue
		}
		obj, err := decode(kv)
		if err != nil {
			return nil, err
		}
		v.put(obj)
	}
	v.index()
	for name, c := range v.certs {
		v.readable[name] = v.readers.CanRead(cluster, c)
	}
	return v, nil
}

// put records obj in the view if it is of a kind the view follows.
func (v *keyView) put(obj model.Object) {
	switch o := obj.(type) {
	case *model.ServiceNetwork:
		v.networks[o.Name] = o
	case *model.Service:
		v.services[o.Name] = o.KeyReadersPart()
	case *model.Certificate:
		v.certs[o.Name] = o
	}
}

func (v *keyView) remove(kind model.Kind, name string) {
	switch kind {
	case model.KindServiceNetwork:
		delete(v.networks, name)
	case model.KindService:
		delete(v.services, name)
	case model.KindCertificate:
		delete(v.certs, name)
		delete(v.readable, name)
	}
}

func (v *keyView) index() {
	v.readers = model.NewKeyReaders(slices.Collect(maps.Values(v.networks)), slices.Collect(maps.Values(v.services)))
}

// onlyOwnCertificates reports whether every certificate is the caller's:
// then every key was readable at every revision, and a resumed stream
// cannot have missed a change of what it may read.
func (v *keyView) onlyOwnCertificates() bool {
	for _, c := range v.certs {
		if c.Owner != v.cluster {
			return false
		}
	}
	return true
}

// outgoing returns c as the stream sends it, and records what it sent.
func (v *keyView) outgoing(c *model.Certificate) *model.Certificate {
	ok := v.readers.CanRead(v.cluster, c)
	v.readable[c.Name] = ok
	if ok {
		return c
	}
	return c.Redacted()
}

// snapshot returns every object of kvs at revision as the stream sends it.
func (v *keyView) snapshot(kvs []store.KeyValue, revision int64) (*api.WatchMessage, error) {
	snap := &model.Snapshot{Revision: revision}
	for _, kv := range kvs {
		obj, err := decode(kv)
		if err != nil {
			return nil, err
		}
		if c, ok := obj.(*model.Certificate); ok {
			obj = v.outgoing(c)
		}
		snap.Add(obj)
	}
	return &api.WatchMessage{Type: api.WatchSnapshot, Revision: revision, Snapshot: snap}, nil
}

// changes turns one committed transaction into the stream's message: its
// certificates redacted as the caller's view requires, and every other
// certificate whose readability the transaction changed sent again. The
// objects of a large transaction (the first apply of a configuration) are
// decoded and encoded side by side.
func (v *keyView) changes(ev store.Event) (*api.WatchMessage, error) {
	msg := &api.WatchMessage{Type: api.WatchChanges, Revision: ev.Revision}
	advance := v.follow && ev.Revision > v.revision
	reindex := false
	objs := make([]model.Object, len(ev.Changes))
	errs := make([]error, len(ev.Changes))
	parallel.Do(len(ev.Changes), parallelChanges, func(i int) {
		if c := ev.Changes[i]; c.Type != store.ChangeDelete {
			objs[i], errs[i] = decode(c.KV)
		}
	})
	inEvent := map[string]bool{}
	for i, c := range ev.Changes {
		kind, name, err := model.ParseKey(c.KV.Key)
		if err != nil {
			return nil, err
		}
		if kind == model.KindCertificate {
			inEvent[name] = true
		}
		reindex = reindex || kind == model.KindServiceNetwork || kind == model.KindService
		if c.Type == store.ChangeDelete {
			if advance {
				v.remove(kind, name)
			}
			msg.Changes = append(msg.Changes, api.Change{Op: api.OpDelete, Kind: kind, Name: name})
			continue
		}
		if errs[i] != nil {
			return nil, errs[i]
		}
		if advance {
			v.put(objs[i])
		}
	}
	if advance {
		v.revision = ev.Revision
		if reindex {
			v.index()
		}
	}
	// What is sent: the objects put, then the certificates whose
	// readability changed. Certificates are redacted (and their
	// readability recorded) in order; the encoding runs side by side.
	var sent []model.Object
	for _, obj := range objs {
		if obj != nil {
			sent = append(sent, obj)
		}
	}
	if advance && reindex {
		for _, name := range slices.Sorted(maps.Keys(v.certs)) {
			c := v.certs[name]
			if !inEvent[name] && v.readers.CanRead(v.cluster, c) != v.readable[name] {
				sent = append(sent, c)
			}
		}
	}
	for i, obj := range sent {
		if c, ok := obj.(*model.Certificate); ok {
			sent[i] = v.outgoing(c)
		}
	}
	encoded := make([][]byte, len(sent))
	errs = make([]error, len(sent))
	parallel.Do(len(sent), parallelChanges, func(i int) {
		encoded[i], errs[i] = json.Marshal(sent[i])
	})
	for i, obj := range sent {
		if errs[i] != nil {
			return nil, errs[i]
		}
		msg.Changes = append(msg.Changes, api.Change{Op: api.OpPut, Kind: obj.ObjectKind(), Name: obj.ObjectMeta().Name, Object: encoded[i]})
	}
	slices.SortFunc(msg.Changes, func(a, b api.Change) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	return msg, nil
}

// parallelChanges is how many changes a transaction has before the watch
// decodes and encodes its objects side by side.
const parallelChanges = 256
