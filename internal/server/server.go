// Package server is the control plane's HTTP API: authenticated CRUD of model
// objects with optimistic concurrency and ownership, an atomic per-owner
// apply for providers, and the watch stream proxies follow.
//
// It owns encoding objects into the store, validating them and enforcing
// ownership (a cluster may only write what it owns). It must not know about
// Kubernetes or the data plane: providers and proxies reach it over HTTP
// through package client, and the wire shapes live in package api.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/store"
)

// maxBody bounds a request body; an apply of every object a large cluster
// owns fits comfortably.
const maxBody = 64 << 20

// Config configures a Server.
type Config struct {
	// Tokens maps each accepted bearer token to the cluster it authenticates
	// as. Objects written with a token are owned by that cluster.
	Tokens map[string]string
	// Heartbeat is how often an idle watch stream sends a heartbeat (default 10 s).
	Heartbeat time.Duration
	Logger    *slog.Logger
	// CA, when set, admits clusters by certificate: `trellis cluster add`
	// makes join tokens, a join exchanges one for a certificate naming the
	// cluster, and a request with such a client certificate (over TLS)
	// authenticates as that cluster while it stays admitted. See EnsureCA.
	CA *pki.CA
	// AdminTokens are the bearer tokens that may add and remove clusters.
	AdminTokens map[string]struct{}
	// CertTTL is the lifetime of issued cluster certificates (default
	// DefaultCertTTL).
	CertTTL time.Duration
}

// Server serves the API over a Store.
type Server struct {
	st  store.Store
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// New returns a Server backed by st.
func New(st store.Store, cfg Config) *Server {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{st: st, cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("POST /v1/join", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handle(w, r, s.join(w, r)) }))
	s.mux.Handle("POST /v1/renew", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handle(w, r, s.renew(w, r)) }))
	s.mux.Handle("POST /v1/clusters", s.admin(s.addCluster))
	s.mux.Handle("DELETE /v1/clusters/{name}", s.admin(s.removeCluster))
	s.mux.Handle("GET /v1/clusters", s.authed(s.listClusters))
	s.mux.Handle("GET /v1/watch", s.authed(s.watch))
	s.mux.Handle("POST /v1/apply", s.authed(s.apply))
	s.mux.Handle("POST /v1/txn", s.authed(s.txn))
	s.mux.Handle("GET /v1/{kind}", s.authed(s.list))
	s.mux.Handle("GET /v1/{kind}/{name}", s.authed(s.get))
	s.mux.Handle("PUT /v1/{kind}/{name}", s.authed(s.put))
	s.mux.Handle("DELETE /v1/{kind}/{name}", s.authed(s.delete))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// readyTimeout bounds the store read behind /readyz.
const readyTimeout = 2 * time.Second

// ready answers /readyz: 200 when the store answers a read within
// readyTimeout, 503 with the reason when it does not. /healthz only says
// the process serves; a server whose etcd is unreachable (partitioned, or
// etcd down) is alive but cannot serve writes or new watches, and a load
// balancer should send its clients to another replica.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, err := s.st.Revision(ctx); err != nil {
		http.Error(w, "store not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// handler is an authenticated handler; cluster is the caller's identity.
type handler func(w http.ResponseWriter, r *http.Request, cluster string) error

// httpError is an error with the status it should be answered with.
type httpError struct {
	status int
	body   api.Error
}

func (e *httpError) Error() string { return e.body.Message }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, body: api.Error{Message: fmt.Sprintf(format, args...)}}
}

// authed wraps a handler every cluster may call. A client certificate the
// CA issued authenticates as the cluster it names (and a request made with
// it ends when the cluster is removed or the certificate expires); without
// one, a bearer token does.
func (s *Server) authed(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cluster, expires, byCert, err := s.certCluster(r)
		if err != nil {
			s.handle(w, r, err)
			return
		}
		if byCert {
			ctx, cancel := s.untilRevoked(r.Context(), cluster, expires)
			defer cancel()
			r = r.WithContext(ctx)
		} else {
			var ok bool
			if cluster, ok = s.authenticate(r); !ok {
				writeError(w, errorf(http.StatusUnauthorized, "missing or unknown bearer token"))
				return
			}
		}
		s.handle(w, r, h(w, r, cluster))
	})
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return "", false
	}
	cluster, found := "", false
	for t, c := range s.cfg.Tokens {
		if tokenEqual(t, token) {
			cluster, found = c, true
		}
	}
	return cluster, found
}

// tokenEqual compares tokens in constant time. Callers compare against
// every token they hold, so response timing reveals neither how much of a
// guess was right nor which token matched.
func tokenEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	var ce *store.ConflictError
	var fe model.FieldErrors
	switch {
	case errors.As(err, &he):
	case errors.As(err, &fe):
		he = &httpError{status: http.StatusUnprocessableEntity, body: api.Error{Message: err.Error(), Fields: fe}}
	case errors.As(err, &ce):
		he = &httpError{status: http.StatusConflict, body: api.Error{Message: ce.Error()}}
	case errors.Is(err, store.ErrNotFound):
		he = &httpError{status: http.StatusNotFound, body: api.Error{Message: err.Error()}}
	default:
		he = &httpError{status: http.StatusInternalServerError, body: api.Error{Message: err.Error()}}
	}
	writeJSON(w, he.status, he.body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func pathKind(r *http.Request) (model.Kind, error) {
	k, err := model.ParseKind(r.PathValue("kind"))
	if err != nil {
		return "", errorf(http.StatusNotFound, "%v", err)
	}
	return k, nil
}

// decodeBody decodes a JSON body strictly: an unknown field is an error that
// names it, never silently dropped.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "decoding request body: %v", err)
	}
	return nil
}

// encode is the stored form of an object: JSON without its revision, which
// the store tracks itself. Encoding is deterministic, so equal objects have
// equal bytes.
func encode(obj model.Object) ([]byte, error) {
	m := obj.ObjectMeta()
	rev := m.Revision
	m.Revision = 0
	b, err := json.Marshal(obj)
	m.Revision = rev
	return b, err
}

// decode turns a stored value back into an object carrying its revision.
func decode(kv store.KeyValue) (model.Object, error) {
	kind, _, err := model.ParseKey(kv.Key)
	if err != nil {
		return nil, err
	}
	obj, err := model.New(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(kv.Value, obj); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	obj.ObjectMeta().Revision = kv.ModRevision
	return obj, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, _ string) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	kv, err := s.st.Get(r.Context(), model.Key(kind, r.PathValue("name")))
	if err != nil {
		return err
	}
	obj, err := decode(kv)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, obj)
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, _ string) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	kvs, rev, err := s.st.List(r.Context(), model.KindPrefix(kind))
	if err != nil {
		return err
	}
	out := api.List{Revision: rev, Items: make([]json.RawMessage, 0, len(kvs))}
	for _, kv := range kvs {
		obj, err := decode(kv)
		if err != nil {
			return err
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		out.Items = append(out.Items, b)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkOwner refuses to let cluster touch an object another cluster owns.
func checkOwner(kv store.KeyValue, cluster string) error {
	var m model.Meta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	if m.Owner != cluster {
		return errorf(http.StatusForbidden, "%s is owned by cluster %q, not %q", kv.Key, m.Owner, cluster)
	}
	return nil
}

// claim sets the object's owner to the caller, refusing an explicit other owner.
func claim(obj model.Object, cluster string) error {
	m := obj.ObjectMeta()
	switch m.Owner {
	case "":
		m.Owner = cluster
	case cluster:
	default:
		return &httpError{status: http.StatusForbidden, body: api.Error{
			Message: fmt.Sprintf("owner %q: cluster %q may only write objects it owns", m.Owner, cluster),
			Fields:  model.FieldErrors{{Field: "owner", Detail: "must be the caller's cluster " + cluster}},
		}}
	}
	return nil
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, cluster string) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	obj, err := model.New(kind)
	if err != nil {
		return err
	}
	if err := decodeBody(r, obj); err != nil {
		return err
	}
	name := r.PathValue("name")
	m := obj.ObjectMeta()
	switch m.Name {
	case "":
		m.Name = name
	case name:
	default:
		return &httpError{status: http.StatusUnprocessableEntity, body: api.Error{
			Message: fmt.Sprintf("name %q does not match the path's %q", m.Name, name),
			Fields:  model.FieldErrors{{Field: "name", Detail: "must match the name in the path"}},
		}}
	}
	if err := claim(obj, cluster); err != nil {
		return err
	}
	if err := obj.Validate(); err != nil {
		return err
	}
	key := model.Key(kind, name)
	existing, err := s.st.Get(r.Context(), key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		existing = store.KeyValue{}
	case err != nil:
		return err
	default:
		if err := checkOwner(existing, cluster); err != nil {
			return err
		}
	}
	value, err := encode(obj)
	if err != nil {
		return err
	}
	op := store.Op{Type: store.OpPut, Key: key, Value: value, IfRevision: m.Revision}
	if m.Revision == 0 && existing.ModRevision != 0 {
		// Unconditional by the caller's choice, but still guarded against a
		// concurrent change of owner between our read and our write.
		op.IfRevision = existing.ModRevision
	}
	rev, err := s.st.Txn(r.Context(), op)
	if err != nil {
		return err
	}
	m.Revision = rev
	status := http.StatusOK
	if existing.ModRevision == 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, obj)
	return nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, cluster string) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	var ifRev int64
	if v := r.URL.Query().Get("revision"); v != "" {
		if _, err := fmt.Sscan(v, &ifRev); err != nil || ifRev < 0 {
			return errorf(http.StatusBadRequest, "revision %q is not a non-negative integer", v)
		}
	}
	key := model.Key(kind, r.PathValue("name"))
	existing, err := s.st.Get(r.Context(), key)
	if err != nil {
		return err
	}
	if err := checkOwner(existing, cluster); err != nil {
		return err
	}
	if ifRev == 0 {
		ifRev = existing.ModRevision
	}
	rev, err := s.st.Txn(r.Context(), store.Op{Type: store.OpDelete, Key: key, IfRevision: ifRev})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"revision": rev})
	return nil
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, cluster string) error {
	var req api.ApplyRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	puts, err := validObjects("objects", &req.Objects, cluster)
	if err != nil {
		return err
	}
	desired := make(map[string][]byte, len(puts))
	for key, p := range puts {
		desired[key] = p.value
	}
	// A concurrent writer can move a key between our read and our write; the
	// transaction's preconditions catch that, and we re-plan from a fresh read.
	for attempt := 0; ; attempt++ {
		res, err := s.applyOnce(r.Context(), desired, cluster)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
}

// encodedPut is one validated object to write: its stored form and the
// revision it must be at (0 for none).
type encodedPut struct {
	value      []byte
	ifRevision int64
}

// validObjects validates and encodes a set of objects by key. Field paths
// of invalid objects start with prefix ("objects.services[2].port"); when
// some are invalid the error is model.FieldErrors.
func validObjects(prefix string, objs *api.Objects, cluster string) (map[string]encodedPut, error) {
	out := map[string]encodedPut{}
	var fields model.FieldErrors
	add := func(field string, obj model.Object) error {
		if err := claim(obj, cluster); err != nil {
			return err
		}
		if err := obj.Validate(); err != nil {
			var fe model.FieldErrors
			if !errors.As(err, &fe) {
				return err
			}
			for _, e := range fe {
				fields = append(fields, &model.FieldError{Field: field + "." + e.Field, Detail: e.Detail})
			}
			return nil
		}
		key := model.Key(obj.ObjectKind(), obj.ObjectMeta().Name)
		if _, dup := out[key]; dup {
			fields = append(fields, &model.FieldError{Field: field + ".name", Detail: "duplicate name " + obj.ObjectMeta().Name})
			return nil
		}
		b, err := encode(obj)
		out[key] = encodedPut{value: b, ifRevision: obj.ObjectMeta().Revision}
		return err
	}
	for i := range objs.Networks {
		if err := add(fmt.Sprintf("%s.networks[%d]", prefix, i), &objs.Networks[i]); err != nil {
			return nil, err
		}
	}
	for i := range objs.Services {
		if err := add(fmt.Sprintf("%s.services[%d]", prefix, i), &objs.Services[i]); err != nil {
			return nil, err
		}
	}
	for i := range objs.TargetGroups {
		if err := add(fmt.Sprintf("%s.targetGroups[%d]", prefix, i), &objs.TargetGroups[i]); err != nil {
			return nil, err
		}
	}
	for i := range objs.Certificates {
		if err := add(fmt.Sprintf("%s.certificates[%d]", prefix, i), &objs.Certificates[i]); err != nil {
			return nil, err
		}
	}
	for i := range objs.WorkloadSets {
		if err := add(fmt.Sprintf("%s.workloadSets[%d]", prefix, i), &objs.WorkloadSets[i]); err != nil {
			return nil, err
		}
	}
	if len(fields) > 0 {
		// The valid objects too, so that a caller can check more fields
		// against them.
		return out, fields
	}
	return out, nil
}

func (s *Server) applyOnce(ctx context.Context, desired map[string][]byte, cluster string) (api.ApplyResult, error) {
	var res api.ApplyResult
	kvs, rev, err := s.st.List(ctx, "/")
	if err != nil {
		return res, err
	}
	existing := make(map[string]store.KeyValue, len(kvs))
	var ops []store.Op
	for _, kv := range kvs {
		var m model.Meta
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return res, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		existing[kv.Key] = kv
		if _, wanted := desired[kv.Key]; wanted {
			if m.Owner != cluster {
				return res, errorf(http.StatusForbidden, "%s is owned by cluster %q, not %q", kv.Key, m.Owner, cluster)
			}
			continue
		}
		if m.Owner == cluster {
			ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfRevision: kv.ModRevision})
			res.Deleted++
		}
	}
	for key, value := range desired {
		kv, ok := existing[key]
		switch {
		case !ok:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: value, IfRevision: store.MustNotExist})
			res.Created++
		case string(kv.Value) == string(value):
			res.Unchanged++
		default:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: value, IfRevision: kv.ModRevision})
			res.Updated++
		}
	}
	res.Revision = rev
	if len(ops) == 0 {
		return res, nil
	}
	res.Revision, err = s.st.Txn(ctx, ops...)
	return res, err
}

func (s *Server) txn(w http.ResponseWriter, r *http.Request, cluster string) error {
	var req api.TxnRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	puts, err := validObjects("puts", &req.Puts, cluster)
	var fields model.FieldErrors
	if err != nil && !errors.As(err, &fields) {
		return err
	}
	deletes := map[string]int64{}
	for i, d := range req.Deletes {
		field := fmt.Sprintf("deletes[%d]", i)
		kind, err := model.ParseKind(string(d.Kind))
		if err != nil || kind != d.Kind {
			fields = append(fields, &model.FieldError{Field: field + ".kind", Detail: fmt.Sprintf("%q is not a kind", d.Kind)})
			continue
		}
		if d.Name == "" {
			fields = append(fields, &model.FieldError{Field: field + ".name", Detail: "required"})
			continue
		}
		key := model.Key(kind, d.Name)
		if _, both := puts[key]; both {
			fields = append(fields, &model.FieldError{Field: field, Detail: fmt.Sprintf("%s %s is also put", kind, d.Name)})
			continue
		}
		if _, dup := deletes[key]; dup {
			fields = append(fields, &model.FieldError{Field: field, Detail: fmt.Sprintf("%s %s is already deleted", kind, d.Name)})
			continue
		}
		deletes[key] = d.Revision
	}
	if len(fields) > 0 {
		return fields
	}
	// As in apply, a concurrent writer may move a key we read without a
	// precondition of the caller's; re-plan from a fresh read.
	for attempt := 0; ; attempt++ {
		res, retry, err := s.txnOnce(r.Context(), puts, deletes, cluster)
		if retry && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
}

// txnOnce plans and commits one attempt of a transaction. retry is true
// when it failed on a precondition the server chose, not the caller.
func (s *Server) txnOnce(ctx context.Context, puts map[string]encodedPut, deletes map[string]int64, cluster string) (res api.TxnResult, retry bool, err error) {
	var ops []store.Op
	callerRevs := false
	read := func(key string) (store.KeyValue, bool, error) {
		kv, err := s.st.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return kv, false, nil
		case err != nil:
			return kv, false, err
		}
		return kv, true, checkOwner(kv, cluster)
	}
	for key, p := range puts {
		kv, exists, err := read(key)
		if err != nil {
			return res, false, err
		}
		switch {
		case p.ifRevision != 0 && kv.ModRevision != p.ifRevision:
			return res, false, &store.ConflictError{Key: key, Expected: p.ifRevision, Actual: kv.ModRevision}
		case !exists:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: p.value, IfRevision: store.MustNotExist})
			res.Created++
		case string(kv.Value) == string(p.value):
			res.Unchanged++
		default:
			ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: p.value, IfRevision: kv.ModRevision})
			res.Updated++
		}
		callerRevs = callerRevs || p.ifRevision != 0
	}
	for key, rev := range deletes {
		kv, exists, err := read(key)
		if err != nil {
			return res, false, err
		}
		switch {
		case rev != 0 && kv.ModRevision != rev:
			return res, false, &store.ConflictError{Key: key, Expected: rev, Actual: kv.ModRevision}
		case !exists:
			continue
		}
		ops = append(ops, store.Op{Type: store.OpDelete, Key: key, IfRevision: kv.ModRevision})
		res.Deleted++
		callerRevs = callerRevs || rev != 0
	}
	if len(ops) == 0 {
		// Nothing to write; report the current revision.
		_, res.Revision, err = s.st.List(ctx, model.KindPrefix(model.KindServiceNetwork))
		return res, false, err
	}
	res.Revision, err = s.st.Txn(ctx, ops...)
	// A conflict on a revision the caller named is the caller's to handle;
	// one on a revision we read is retried.
	return res, errors.Is(err, store.ErrConflict) && !callerRevs, err
}
