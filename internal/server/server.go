// Package server is the control plane's HTTP API: authenticated CRUD of model
// objects with optimistic concurrency and ownership, an atomic per-owner
// apply for providers, and the watch stream proxies follow.
//
// It owns encoding objects into the store, validating them and enforcing
// ownership (a cluster may only write what it owns) and what a cluster may
// do to others' traffic: targets only in its own cluster, services only in
// networks that allow it, host names only where their networks allow it,
// private keys only to the clusters that serve them (see package api). It must not know about
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
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/store"
)

// Request body limits, by default.
const (
	// DefaultMaxObjectBytes bounds a PUT's body: one object. A target
	// group of tens of thousands of targets fits.
	DefaultMaxObjectBytes = 8 << 20
	// DefaultMaxRequestBytes bounds an apply's or a txn's body; an apply of
	// every object a large cluster owns fits comfortably.
	DefaultMaxRequestBytes = 64 << 20
)

// Config configures a Server.
type Config struct {
	// Tokens maps each accepted bearer token to the cluster it authenticates
	// as. Objects written with a token are owned by that cluster.
	Tokens map[string]string
	// Heartbeat is how often an idle watch stream sends a heartbeat (default 10 s).
	Heartbeat time.Duration
	// MaxObjectBytes bounds a PUT's body (default DefaultMaxObjectBytes),
	// MaxRequestBytes an apply's or txn's (default DefaultMaxRequestBytes).
	// A larger body is answered 413. The bodies being read and the objects
	// decoded from them, of all requests together, are bounded by
	// MaxRequestBytes too: a request reserves its limit (or its
	// Content-Length, when smaller) before reading and holds it until it
	// is answered, so the server's memory does not grow with the number
	// of large requests at once; they wait their turn.
	MaxObjectBytes  int64
	MaxRequestBytes int64
	Logger          *slog.Logger
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
	// LeaseDuration is how long a cluster's lease lives unrenewed
	// (default DefaultLeaseDuration); its components renew it every fifth
	// of that.
	LeaseDuration time.Duration
	// MaxWatches bounds the watch streams one cluster has open at once
	// (default DefaultMaxWatches); one more is answered 429.
	MaxWatches int
	// MaxSnapshotBytes bounds, over all clusters, the store bytes read for
	// the watch streams whose first message (their snapshot) is being
	// built or sent (default DefaultMaxSnapshotBytes), and one cluster's
	// streams to a quarter of it, so that one cluster's streams cannot
	// hold all of it; a stream starting beyond either waits its turn, up
	// to SnapshotTimeout (then 503). A store larger than a quarter is sent
	// to one stream of a cluster at a time.
	MaxSnapshotBytes int64
	// SnapshotTimeout bounds how long a watch stream's message, its first
	// (the snapshot) or any other, may take to write (default
	// DefaultSnapshotTimeout): a client that does not read is cut off and
	// gives its share of MaxSnapshotBytes, and its stream, back.
	SnapshotTimeout time.Duration
}

// Watch bounds, by default.
const (
	// DefaultMaxWatches is well above the node proxies of a large
	// cluster, each with one stream.
	DefaultMaxWatches = 1024
	// DefaultMaxSnapshotBytes lets 32 snapshots of a 16 MiB store be
	// built and sent at once.
	DefaultMaxSnapshotBytes = 512 << 20
	// DefaultSnapshotTimeout leaves a slow link minutes for a large
	// snapshot.
	DefaultSnapshotTimeout = 2 * time.Minute
)

// Server serves the API over a Store.
type Server struct {
	st  store.Store
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// bodies is the budget of request-body bytes, MaxRequestBytes.
	bodies *semaphore.Weighted
	// own holds each cluster's own budgets (clusterBudgets), by cluster.
	own sync.Map
	// joins is the budget of the one call without credentials, join
	// (joinBudget), so that no one without credentials holds the others.
	joins *semaphore.Weighted
	// writing is held by the one write planning and committing at a
	// time, so that on one server what a write's checks read cannot
	// change before it commits.
	writing chan struct{}
	// blockedAt is when renewals last could not be taken (the server's
	// start, or a renewal the store failed), in Unix nanoseconds: no lease
	// lapses within a lease duration of it.
	blockedAt atomic.Int64
	// decoded keeps the networks the last write's checks decoded, with
	// their revisions, so that the next decodes only what changed (the
	// services are kept in hostnames). Only the write holding writing touches it; its objects are
	// never modified.
	decoded map[string]decodedObject
	// hostnames indexes the host names of the stored services the last
	// write's checks read, refreshed by revision; nil when it must be
	// built again. Only the write holding writing touches it.
	hostnames *hostnameIndex
	// hostnamesRev is the store revision at which hostnames holds exactly
	// the stored services, as the write that left it so committed them;
	// 0 when unknown. A write that finds the store still at it reads no
	// services but its own (commitOnce).
	hostnamesRev int64
	// health keeps the health report parts decoded for TargetHealth.
	health healthParts
	// snapshots is the budget of store bytes of watch streams not past
	// their first message, MaxSnapshotBytes; storeBytes is the size of
	// the last whole-store read, what a stream reserves before its own.
	snapshots  *semaphore.Weighted
	storeBytes atomic.Int64
}

// decodedObject is a stored object decoded at a revision.
type decodedObject struct {
	rev int64
	obj model.Object
}

// New returns a Server backed by st.
func New(st store.Store, cfg Config) *Server {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	cfg.MaxObjectBytes = min(cfg.MaxObjectBytes, cfg.MaxRequestBytes)
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	if cfg.MaxSnapshotBytes <= 0 {
		cfg.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = DefaultSnapshotTimeout
	}
	s := &Server{st: st, cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), bodies: semaphore.NewWeighted(cfg.MaxRequestBytes),
		joins:     semaphore.NewWeighted(joinBudget),
		writing:   make(chan struct{}, 1),
		snapshots: semaphore.NewWeighted(cfg.MaxSnapshotBytes)}
	s.renewalsBlocked()
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("POST /v1/join", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handle(w, r, s.join(w, r)) }))
	s.mux.Handle("POST /v1/renew", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handle(w, r, s.renew(w, r)) }))
	s.mux.Handle("POST /v1/clusters", s.admin(s.addCluster))
	s.mux.Handle("DELETE /v1/clusters/{name}", s.admin(s.removeCluster))
	s.mux.Handle("PATCH /v1/clusters/{name}", s.admin(s.setCluster))
	s.mux.Handle("GET /v1/clusters", s.adminOr(s.authed(s.listClusters), s.listClusters))
	s.mux.Handle("POST /v1/lease", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handle(w, r, s.renewLease(w, r)) }))
	s.mux.Handle("GET /v1/leases", s.adminOr(s.authed(s.listLeases), s.listLeases))
	s.mux.Handle("POST /v1/health", s.authed(s.reportHealth))
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

// fieldError is an error of status with message, detail naming field.
func fieldError(status int, message, field, detail string) *httpError {
	return &httpError{status: status, body: api.Error{Message: message, Fields: model.FieldErrors{{Field: field, Detail: detail}}}}
}

// revisionParam is the request's ?revision=, 0 when absent; anything but a
// non-negative integer is a 400.
func revisionParam(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("revision")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errorf(http.StatusBadRequest, "revision %q is not a non-negative integer", v)
	}
	return n, nil
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
			r = r.WithContext(context.WithValue(ctx, byCertKey{}, true))
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

// byCertKey marks, in a request's context, that its caller authenticated
// by certificate.
type byCertKey struct{}

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

// readBody decodes a JSON body of at most limit bytes strictly: an unknown
// field is an error that names it, never silently dropped, and so is
// anything after the object. It first reserves the body's size from the
// server's budget (see Config.MaxRequestBytes); the caller calls release
// once it has answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, v any, limit int64) (release func(), err error) {
	return s.readBodyFrom(s.bodies, w, r, v, limit)
}

// readBodyFrom is readBody reserving from budget.
func (s *Server) readBodyFrom(budget *semaphore.Weighted, w http.ResponseWriter, r *http.Request, v any, limit int64) (release func(), err error) {
	tooLarge := errorf(http.StatusRequestEntityTooLarge, "request body larger than the limit of %d bytes", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	reserve := limit
	if r.ContentLength >= 0 {
		reserve = max(r.ContentLength, 1)
	}
	if err := budget.Acquire(r.Context(), reserve); err != nil {
		return nil, errorf(http.StatusServiceUnavailable, "waiting to read the request body: %v", err)
	}
	release = func() { budget.Release(reserve) }
	// A body that holds its reservation must come within a time that
	// grows with its size: a sender that stalls mid-body (a slowloris, or
	// a client gone silent) gives the budget back.
	rc := http.NewResponseController(w)
	within := bodyTimeout(reserve)
	if rc.SetReadDeadline(time.Now().Add(within)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, reserve))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		if _, end := dec.Token(); end != io.EOF {
			err = errors.New("data after the JSON object")
			if errors.As(end, new(*http.MaxBytesError)) {
				err = end
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		err = tooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = errorf(http.StatusRequestTimeout, "request body of up to %d bytes not received within %v", reserve, within)
	case err != nil:
		err = errorf(http.StatusBadRequest, "decoding request body: %v", err)
	}
	if err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// Bounds of the time a request body may take once its budget is
// reserved: bodyTimeoutBase, and a second for every bodyMinRate bytes
// reserved (a link of 2 Mbit/s sends the largest apply in time).
var (
	bodyTimeoutBase       = 10 * time.Second
	bodyMinRate     int64 = 256 << 10
)

// bodyTimeout is how long a body of up to n bytes may take to arrive.
func bodyTimeout(n int64) time.Duration {
	return bodyTimeoutBase + time.Duration(n)*time.Second/time.Duration(bodyMinRate)
}

// Each cluster's own budgets of request-body bytes, apart from the
// server's (Config.MaxRequestBytes) that writes share: what a cluster's
// components must get through whatever other callers do (lease and
// certificate renewals, or its leases lapse and its certificate expires;
// health reports) is read from these, so that
// another cluster holding the shared budget (a stalled body of unknown
// length reserves all of it) cannot starve them. A cluster's own bodies
// wait only behind its own.
const (
	// leaseBudget fits four renewals of the largest size, or thousands
	// of a usual one.
	leaseBudget = 4 * maxJoinBody * 4
	// healthBudget fits two reports of the largest size.
	healthBudget = 2 * maxHealthBody
)

// joinBudget is the budget of join bodies, apart from every cluster's:
// 64 of the largest at once.
const joinBudget = 64 * maxJoinBody

// clusterBudgets are one cluster's own body budgets.
type clusterBudgets struct {
	lease, health *semaphore.Weighted
	// watches counts the cluster's open watch streams; snapshots is its
	// share of the snapshot budget, a quarter of MaxSnapshotBytes.
	watches   atomic.Int64
	snapshots *semaphore.Weighted
}

// budgetsOf returns cluster's own budgets, made on first use. Only an
// authenticated cluster has any: they are at most as many as the clusters
// ever admitted (or named by a token).
func (s *Server) budgetsOf(cluster string) *clusterBudgets {
	if b, ok := s.own.Load(cluster); ok {
		return b.(*clusterBudgets)
	}
	b, _ := s.own.LoadOrStore(cluster, &clusterBudgets{lease: semaphore.NewWeighted(leaseBudget), health: semaphore.NewWeighted(healthBudget),
		snapshots: semaphore.NewWeighted(max(s.cfg.MaxSnapshotBytes/4, 1))})
	return b.(*clusterBudgets)
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

func (s *Server) get(w http.ResponseWriter, r *http.Request, cluster string) error {
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
	objs, err := s.redactFor(r.Context(), cluster, []model.Object{obj})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, objs[0])
	return nil
}

// listKind reads every object of kind, and the store's revision.
func (s *Server) listKind(ctx context.Context, kind model.Kind) ([]model.Object, int64, error) {
	kvs, rev, err := s.st.List(ctx, model.KindPrefix(kind))
	if err != nil {
		return nil, 0, err
	}
	objs := make([]model.Object, len(kvs))
	for i, kv := range kvs {
		if objs[i], err = decode(kv); err != nil {
			return nil, 0, err
		}
	}
	return objs, rev, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, cluster string) error {
	kind, err := pathKind(r)
	if err != nil {
		return err
	}
	objs, rev, err := s.listKind(r.Context(), kind)
	if err != nil {
		return err
	}
	if objs, err = s.redactFor(r.Context(), cluster, objs); err != nil {
		return err
	}
	out := api.List{Revision: rev, Items: make([]json.RawMessage, 0, len(objs))}
	for _, obj := range objs {
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		out.Items = append(out.Items, b)
	}
	writeJSON(w, http.StatusOK, out)
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
		return fieldError(http.StatusForbidden, fmt.Sprintf("owner %q: cluster %q may only write objects it owns", m.Owner, cluster), "owner", "must be the caller's cluster "+cluster)
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
	release, err := s.readBody(w, r, obj, s.cfg.MaxObjectBytes)
	if err != nil {
		return err
	}
	defer release()
	name := r.PathValue("name")
	m := obj.ObjectMeta()
	switch m.Name {
	case "":
		m.Name = name
	case name:
	default:
		return fieldError(http.StatusUnprocessableEntity, fmt.Sprintf("name %q does not match the path's %q", m.Name, name), "name", "must match the name in the path")
	}
	wr := newWrite()
	var fields model.FieldErrors
	if err := wr.add("", obj, cluster, &fields); err != nil {
		return err
	}
	if len(fields) > 0 {
		return fields
	}
	res, err := s.commit(r.Context(), wr, cluster)
	if err != nil {
		return err
	}
	m.Revision = res.revisions[model.Key(kind, name)]
	status := http.StatusOK
	if res.created > 0 {
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
	ifRev, err := revisionParam(r)
	if err != nil {
		return err
	}
	key := model.Key(kind, r.PathValue("name"))
	if _, err := s.st.Get(r.Context(), key); err != nil {
		return err
	}
	wr := newWrite()
	wr.deletes[key] = ifRev
	res, err := s.commit(r.Context(), wr, cluster)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"revision": res.revision})
	return nil
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, cluster string) error {
	var req api.ApplyRequest
	release, err := s.readBody(w, r, &req, s.cfg.MaxRequestBytes)
	if err != nil {
		return err
	}
	defer release()
	wr, err := validObjects("objects", &req.Objects, cluster)
	if err != nil {
		return err
	}
	// Apply names the state it wants, not the revisions it read.
	for _, p := range wr.puts {
		p.ifRevision = 0
	}
	wr.replace, wr.sync = true, true
	res, err := s.commit(r.Context(), wr, cluster)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ApplyResult{Revision: res.revision, Created: res.created, Updated: res.updated,
		Deleted: res.deleted, Unchanged: res.unchanged})
	return nil
}

// validObjects validates and encodes a set of objects into a write. Field
// paths of invalid objects start with prefix ("objects.services[2].port");
// when some are invalid the error is model.FieldErrors and the write holds
// the valid ones, so that a caller can check more fields against them.
// The objects of a large write (a configuration's first apply) are checked
// side by side, then added in order.
func validObjects(prefix string, objs *model.Objects, cluster string) (*write, error) {
	var (
		fieldNames []string
		all        []model.Object
	)
	for field, obj := range objs.Each() {
		fieldNames, all = append(fieldNames, field), append(all, obj)
	}
	checks := make([]checked, len(all))
	parallel.Do(len(all), parallelChecks, func(i int) { checks[i] = check(all[i], cluster) })
	wr := newWrite()
	var fields model.FieldErrors
	for i, c := range checks {
		if err := wr.addChecked(prefix+"."+fieldNames[i], c, &fields); err != nil {
			return nil, err
		}
	}
	if len(fields) > 0 {
		return wr, fields
	}
	return wr, nil
}

// parallelChecks is how many objects a write has before they are checked
// side by side.
const parallelChecks = 256

func (s *Server) txn(w http.ResponseWriter, r *http.Request, cluster string) error {
	var req api.TxnRequest
	release, err := s.readBody(w, r, &req, s.cfg.MaxRequestBytes)
	if err != nil {
		return err
	}
	defer release()
	wr, err := validObjects("puts", &req.Puts, cluster)
	var fields model.FieldErrors
	if err != nil && !errors.As(err, &fields) {
		return err
	}
	wr.sync = true
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
		if _, both := wr.puts[key]; both {
			fields = append(fields, &model.FieldError{Field: field, Detail: fmt.Sprintf("%s %s is also put", kind, d.Name)})
			continue
		}
		if _, dup := wr.deletes[key]; dup {
			fields = append(fields, &model.FieldError{Field: field, Detail: fmt.Sprintf("%s %s is already deleted", kind, d.Name)})
			continue
		}
		wr.deletes[key] = d.Revision
		if wr.deleteFields == nil {
			wr.deleteFields = map[string]string{}
		}
		wr.deleteFields[key] = field
	}
	if len(fields) > 0 {
		return fields
	}
	res, err := s.commit(r.Context(), wr, cluster)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.TxnResult{Revision: res.revision, Created: res.created, Updated: res.updated,
		Deleted: res.deleted, Unchanged: res.unchanged})
	return nil
}
