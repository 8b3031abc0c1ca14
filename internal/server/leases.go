package server

// Cluster leases. Each admitted cluster's components (its controller and
// proxies, authenticated by the cluster's certificate) renew the cluster's
// lease every RenewEvery; a lease unrenewed for LeaseDuration has lapsed,
// and every other cluster's proxies take the cluster's targets out of
// their picks. A lease is a store record under leasePrefix, outside the
// model's "/" keys, so that renewals never reach the watch stream (they
// would recompile every proxy's table every second): proxies poll GET
// /v1/leases instead.
//
// A lapse is judged only by a server that could have taken renewals for a
// whole lease duration: one that just started, or whose store just failed
// a renewal, counts every lease alive for a duration, so that the control
// plane's own outage never lapses the clusters it could not hear from. And
// a server that would judge more than half of the clusters lapsed at once
// judges none (judgeAll): it is likelier cut off from them than they all
// dead.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

const (
	leasePrefix  = "lease/"
	statusPrefix = "status/"
	syncPrefix   = "sync/"
)

// Defaults of leases.
const (
	// DefaultLeaseDuration is how long a cluster's lease lives unrenewed.
	DefaultLeaseDuration = 4 * time.Second
	// reportEvery is how often a holder's peer report is kept, at most.
	reportEvery = 5 * time.Second
	// reportFresh is how old a report may be and still count.
	reportFresh = 4 * reportEvery
	// maxReporters bounds the holders whose reports one cluster keeps;
	// maxPeerReports the peers one report names.
	maxReporters   = 64
	maxPeerReports = 256
)

// leaseRecord is a cluster's lease as stored.
type leaseRecord struct {
	Holder  string    `json:"holder"`
	Renewed time.Time `json:"renewed"`
}

// statusRecord is one holder's latest peer report as stored.
type statusRecord struct {
	Holder   string           `json:"holder"`
	Reported time.Time        `json:"reported"`
	Peers    []api.PeerReport `json:"peers"`
}

// syncRecord is when a cluster last changed its objects by apply or txn.
type syncRecord struct {
	Synced time.Time `json:"synced"`
}

func (s *Server) leaseDuration() time.Duration {
	if s.cfg.LeaseDuration > 0 {
		return s.cfg.LeaseDuration
	}
	return DefaultLeaseDuration
}

// renewEvery is a fifth of the lease: four renewals may be lost before it
// lapses.
func (s *Server) renewEvery() time.Duration { return s.leaseDuration() / 5 }

// renewalsBlocked records that renewals could not be taken until now.
func (s *Server) renewalsBlocked() { s.blockedAt.Store(time.Now().UnixNano()) }

// judge returns cluster's lease as of now, from its record (nil: never
// renewed). A lease never renewed has not lapsed: it does not exist yet
// (a cluster whose components have not started, or run a version that
// renews none), and a cluster must not be taken out for that.
func (s *Server) judge(cluster string, rec *leaseRecord, now time.Time) api.Lease {
	d := s.leaseDuration()
	l := api.Lease{Cluster: cluster, AgeMillis: -1, DurationMillis: d.Milliseconds(), Alive: true}
	if rec == nil {
		return l
	}
	l.Holder, l.Renewed = rec.Holder, rec.Renewed
	l.AgeMillis = max(now.Sub(rec.Renewed), 0).Milliseconds()
	blocked := time.Unix(0, s.blockedAt.Load())
	if now.Sub(rec.Renewed) > d && now.Sub(blocked) > d {
		l.Alive = false
	}
	return l
}

// judgeAll judges every admitted cluster's lease as of now. When more
// than half of them would be lapsed at once, the likelier story is that
// this server cannot hear most clusters (it is the one cut off), not that
// most clusters failed together: it then judges none lapsed, marking them
// Held, and leaves taking clusters out to the peer hop's own reachability.
func (s *Server) judgeAll(clusters []clusterRecord, leases map[string]*leaseRecord, now time.Time) []api.Lease {
	out := make([]api.Lease, 0, len(clusters))
	lapsed := 0
	for _, c := range clusters {
		l := s.judge(c.Name, leases[c.Name], now)
		if !l.Alive {
			lapsed++
		}
		out = append(out, l)
	}
	if 2*lapsed > len(out) {
		for i := range out {
			if !out[i].Alive {
				out[i].Alive, out[i].Held = true, true
			}
		}
	}
	return out
}

// validHolder reports whether h is a holder name.
func validHolder(h string) bool { return model.ValidClusterName(h) }

// renewLease renews the lease of the caller's cluster, by certificate
// only, and keeps the holder's peer report.
func (s *Server) renewLease(w http.ResponseWriter, r *http.Request) error {
	cluster, err := s.certOnly(r, http.StatusForbidden, "a lease is renewed with the cluster's certificate; clusters that authenticate by bearer token hold none")
	if err != nil {
		return err
	}
	var req api.LeaseRenewal
	release, err := s.readBodyFrom(s.budgetsOf(cluster).lease, w, r, &req, maxJoinBody*4)
	if err != nil {
		return err
	}
	defer release()
	if fields := checkRenewal(&req, cluster); len(fields) > 0 {
		return &httpError{status: http.StatusUnprocessableEntity, body: api.Error{Message: fields.Error(), Fields: fields}}
	}
	now := time.Now()
	rec, err := s.renewOnce(r.Context(), cluster, req.Holder, now)
	if err != nil {
		// Only the store failing blocks renewals: not the caller's own
		// answer (removed, a race), and not a caller that went away (a
		// cluster could otherwise hold every lease alive by hanging up).
		var he *httpError
		if !errors.As(err, &he) && r.Context().Err() == nil {
			s.renewalsBlocked()
		}
		return err
	}
	if req.Peers != nil {
		if err := s.keepReport(r.Context(), cluster, req.Holder, req.Peers, now); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, api.LeaseRenewed{Lease: s.judge(cluster, rec, now),
		RenewEveryMillis: s.renewEvery().Milliseconds(), ReportEveryMillis: reportEvery.Milliseconds()})
	return nil
}

// checkRenewal names every invalid field of a renewal.
func checkRenewal(req *api.LeaseRenewal, cluster string) model.FieldErrors {
	var fields model.FieldErrors
	if !validHolder(req.Holder) {
		fields = append(fields, &model.FieldError{Field: "holder", Detail: fmt.Sprintf("%q is not a holder name: at most 63 lower-case alphanumerics, '-' or '.'", req.Holder)})
	}
	if len(req.Peers) > maxPeerReports {
		fields = append(fields, &model.FieldError{Field: "peers", Detail: fmt.Sprintf("at most %d peers", maxPeerReports)})
		return fields
	}
	for i, p := range req.Peers {
		at := fmt.Sprintf("peers[%d]", i)
		if !model.ValidClusterName(p.Cluster) || p.Cluster == cluster {
			fields = append(fields, &model.FieldError{Field: at + ".cluster", Detail: fmt.Sprintf("%q is not another cluster's name", p.Cluster)})
		}
		if _, err := netip.ParseAddrPort(p.Address); err != nil {
			fields = append(fields, &model.FieldError{Field: at + ".address", Detail: fmt.Sprintf("%q is not an IP address and port", p.Address)})
		}
		if p.RTTMicros < 0 || p.RTTMicros > int64(time.Minute/time.Microsecond) || !p.Reached && p.RTTMicros != 0 {
			fields = append(fields, &model.FieldError{Field: at + ".rttMicros", Detail: "must be between 0 and 60000000, and 0 for a peer not reached"})
		}
		if p.Reporter != "" || !p.Reported.IsZero() {
			fields = append(fields, &model.FieldError{Field: at, Detail: "reporter and reported are the server's to fill in"})
		}
	}
	return fields
}

// renewOnce writes cluster's lease unless another holder of the cluster
// renewed it within half a renewal period (a cluster's components together
// write about once a period). The write is conditional on the cluster's
// admission record, so that a renewal racing `trellis cluster remove`
// cannot leave a lease behind.
func (s *Server) renewOnce(ctx context.Context, cluster, holder string, now time.Time) (*leaseRecord, error) {
	for range 3 {
		admission, err := s.st.Get(ctx, clusterPrefix+cluster)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errorf(http.StatusUnauthorized, "cluster %q was removed from the control plane", cluster)
		}
		if err != nil {
			return nil, err
		}
		var rec leaseRecord
		kv, err := s.st.Get(ctx, leasePrefix+cluster)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
			}
			if d := now.Sub(rec.Renewed); d >= 0 && d < s.renewEvery()/2 {
				return &rec, nil
			}
		}
		rec = leaseRecord{Holder: holder, Renewed: now.UTC()}
		b, _ := json.Marshal(rec)
		_, err = s.st.Txn(ctx,
			store.Op{Type: store.OpPut, Key: clusterPrefix + cluster, Value: admission.Value, IfRevision: admission.ModRevision},
			store.Op{Type: store.OpPut, Key: leasePrefix + cluster, Value: b})
		if errors.Is(err, store.ErrConflict) {
			continue // the admission changed (removed, or added again): read it again
		}
		if err != nil {
			return nil, err
		}
		return &rec, nil
	}
	return nil, errorf(http.StatusConflict, "cluster %q's admission kept changing; renew again", cluster)
}

// keepReport stores holder's peer report unless its last one is younger
// than half of reportEvery, and unless the cluster already keeps reports
// of maxReporters other fresh holders.
func (s *Server) keepReport(ctx context.Context, cluster, holder string, peers []api.PeerReport, now time.Time) error {
	b, _ := json.Marshal(statusRecord{Holder: holder, Reported: now.UTC(), Peers: peers})
	_, err := s.keepHolderRecord(ctx, statusPrefix+cluster+"/", holder, b, now, reportEvery/2, reportFresh)
	return err
}

// listLeases answers GET /v1/leases: every admitted cluster's lease,
// judged now. Any authenticated caller may read them.
func (s *Server) listLeases(w http.ResponseWriter, r *http.Request, _ string) error {
	if err := s.needCA(); err != nil {
		return err
	}
	clusters, err := s.clusterRecords(r.Context())
	if err != nil {
		return err
	}
	leases, err := s.leaseRecords(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Leases{Leases: s.judgeAll(clusters, leases, time.Now())})
	return nil
}

// clusterRecords reads every admission record, sorted by name.
func (s *Server) clusterRecords(ctx context.Context) ([]clusterRecord, error) {
	var out []clusterRecord
	err := eachRecord(ctx, s.st, clusterPrefix, func(_ string, rec clusterRecord) { out = append(out, rec) })
	return out, err
}

// leaseRecords reads every lease, by cluster.
func (s *Server) leaseRecords(ctx context.Context) (map[string]*leaseRecord, error) {
	out := map[string]*leaseRecord{}
	err := eachRecord(ctx, s.st, leasePrefix, func(cluster string, rec leaseRecord) { out[cluster] = &rec })
	return out, err
}

// eachRecord decodes every JSON record stored under prefix and passes it,
// in key order, to fn with its key less prefix.
func eachRecord[T any](ctx context.Context, st store.Store, prefix string, fn func(name string, rec T)) error {
	kvs, _, err := st.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		var rec T
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		fn(strings.TrimPrefix(kv.Key, prefix), rec)
	}
	return nil
}

// clusterStatus fills in, for every admitted cluster, its lease, its
// peers and what fresh reports say of them, and its last sync.
func (s *Server) clusterStatus(ctx context.Context) ([]api.Cluster, error) {
	clusters, err := s.clusterRecords(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := s.leaseRecords(ctx)
	if err != nil {
		return nil, err
	}
	peers := map[string]map[string]bool{} // cluster → its peers' addresses
	objs, _, err := s.listKind(ctx, model.KindPeer)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		p := obj.(*model.Peer)
		if peers[p.Owner] == nil {
			peers[p.Owner] = map[string]bool{}
		}
		peers[p.Owner][p.Address] = true
	}
	now := time.Now()
	reports := map[string][]api.PeerReport{} // cluster reported on → reports
	err = eachRecord(ctx, s.st, statusPrefix, func(name string, rec statusRecord) {
		if now.Sub(rec.Reported) > reportFresh {
			return
		}
		reporter, _, _ := strings.Cut(name, "/")
		for _, p := range rec.Peers {
			if !peers[p.Cluster][p.Address] {
				continue // a peer no longer published
			}
			p.Reporter, p.Reported = reporter+"/"+rec.Holder, rec.Reported
			reports[p.Cluster] = append(reports[p.Cluster], p)
		}
	})
	if err != nil {
		return nil, err
	}
	syncs := map[string]time.Time{}
	err = eachRecord(ctx, s.st, syncPrefix, func(cluster string, rec syncRecord) { syncs[cluster] = rec.Synced })
	if err != nil {
		return nil, err
	}
	admissions, _, err := s.listKind(ctx, model.KindCluster)
	if err != nil {
		return nil, err
	}
	published := map[string]*model.Cluster{}
	for _, obj := range admissions {
		c := obj.(*model.Cluster)
		published[c.Name] = c
	}
	judged := s.judgeAll(clusters, leases, now)
	out := make([]api.Cluster, 0, len(clusters))
	for i, c := range clusters {
		ac := api.Cluster{Name: c.Name, Added: c.Added, Lease: judged[i],
			PeersPublished: len(peers[c.Name]), Reports: reports[c.Name], LastSync: syncs[c.Name]}
		if p := published[c.Name]; p != nil {
			ac.ExportNamespaces, ac.PodNetwork = p.ExportNamespaces, p.PodNetwork
		}
		reached := map[string]bool{}
		var rtts []int64
		for _, p := range ac.Reports {
			if p.Reached {
				reached[p.Address] = true
				rtts = append(rtts, p.RTTMicros)
			}
		}
		ac.PeersReached = len(reached)
		if len(rtts) > 0 {
			slices.Sort(rtts)
			ac.RTTMicros = rtts[len(rtts)/2]
		}
		out = append(out, ac)
	}
	return out, nil
}

// syncOp records, in the transaction of an apply or txn, that cluster
// synchronised at now.
func syncOp(cluster string, now time.Time) store.Op {
	b, _ := json.Marshal(syncRecord{Synced: now.UTC()})
	return store.Op{Type: store.OpPut, Key: syncPrefix + cluster, Value: b}
}

// cleanupOps are the deletes removing cluster takes beyond its admission:
// its lease, peer and health reports and sync record, and every model object it owns but
// for the networks that other clusters' services still join (kept, so
// that their traffic is not disturbed; named in kept).
func (s *Server) cleanupOps(ctx context.Context, cluster string) (ops []store.Op, deleted int, kept []string, err error) {
	ops = append(ops, store.Op{Type: store.OpDelete, Key: leasePrefix + cluster}, store.Op{Type: store.OpDelete, Key: syncPrefix + cluster})
	for _, prefix := range []string{statusPrefix, healthPrefix, healthStampPrefix} {
		kvs, _, err := s.st.List(ctx, prefix+cluster+"/")
		if err != nil {
			return nil, 0, nil, err
		}
		for _, kv := range kvs {
			ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key})
		}
	}
	kvs, _, err := s.st.List(ctx, "/")
	if err != nil {
		return nil, 0, nil, err
	}
	joined := map[string]bool{} // networks that another cluster's service joins
	owned := []store.KeyValue{}
	for _, kv := range kvs {
		kind, _, err := model.ParseKey(kv.Key)
		if err != nil || kind == model.KindCluster {
			continue
		}
		owner, err := ownerOf(kv)
		if err != nil {
			return nil, 0, nil, err
		}
		if owner == cluster {
			owned = append(owned, kv)
			continue
		}
		if kind == model.KindService {
			obj, err := decode(kv)
			if err != nil {
				return nil, 0, nil, err
			}
			joined[obj.(*model.Service).Network] = true
		}
	}
	for _, kv := range owned {
		if kind, name, _ := model.ParseKey(kv.Key); kind == model.KindServiceNetwork && joined[name] {
			kept = append(kept, name)
			continue
		}
		ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfRevision: kv.ModRevision})
		deleted++
	}
	return ops, deleted, kept, nil
}
