package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/store"
)

// The control plane's own records live under pkiPrefix, outside the model's
// "/" keys, so that no list, apply or watch stream ever carries them.
const (
	pkiPrefix     = "pki/"
	caKey         = pkiPrefix + "ca"
	clusterPrefix = pkiPrefix + "cluster/"
	grantPrefix   = pkiPrefix + "join/"
)

// Defaults of cluster admission.
const (
	// DefaultJoinTokenTTL is how long a join token stays valid.
	DefaultJoinTokenTTL = time.Hour
	// DefaultCertTTL is the lifetime of an issued cluster certificate; its
	// holder renews it two thirds of the way through.
	DefaultCertTTL = time.Hour
	// revocationCheck is how often a long request (a watch stream) made
	// with a cluster certificate checks that the cluster is still admitted:
	// `trellis cluster remove` cuts a cluster off within this.
	revocationCheck = time.Second
	// maxJoinBody bounds the bodies of the cluster calls (the join call is
	// unauthenticated).
	maxJoinBody = 16 << 10
)

// storedCA is the CA as the store keeps it, shared by every server of one
// control plane.
type storedCA struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// EnsureCA returns the control plane's CA: the one in the store, or, on the
// first start, supplied (when not nil) or a new one, written so that every
// server sharing the store uses the same. A supplied CA that differs from
// the stored one is an error: two roots would split the clusters.
func EnsureCA(ctx context.Context, st store.Store, supplied *pki.CA) (*pki.CA, error) {
	for {
		kv, err := st.Get(ctx, caKey)
		if err == nil {
			var sc storedCA
			if err := json.Unmarshal(kv.Value, &sc); err != nil {
				return nil, fmt.Errorf("stored CA: %w", err)
			}
			ca, err := pki.ParseCA(sc.Cert, sc.Key)
			if err != nil {
				return nil, fmt.Errorf("stored CA: %w", err)
			}
			if supplied != nil && string(supplied.CertPEM()) != string(ca.CertPEM()) {
				return nil, errors.New("the supplied CA differs from the one the store already holds; clusters joined under the stored one would be cut off (remove pki/ca from the store to replace the root)")
			}
			return ca, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		ca := supplied
		if ca == nil {
			if ca, err = pki.NewCA(time.Now()); err != nil {
				return nil, err
			}
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(storedCA{Cert: ca.CertPEM(), Key: key})
		_, err = st.Txn(ctx, store.Op{Type: store.OpPut, Key: caKey, Value: b, IfRevision: store.MustNotExist})
		if errors.Is(err, store.ErrConflict) {
			continue // another server wrote one first: use that
		}
		if err != nil {
			return nil, err
		}
		return ca, nil
	}
}

// TLSConfig returns base with client certificates requested and checked
// against the CA, so that clusters can authenticate by certificate. Without
// a CA it returns base unchanged.
func (s *Server) TLSConfig(base *tls.Config) *tls.Config {
	if s.cfg.CA == nil {
		return base
	}
	c := base.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.ClientCAs = s.cfg.CA.Pool()
	return c
}

// clusterRecord says that a cluster is admitted. Removing it (`trellis
// cluster remove`) revokes every certificate naming the cluster at once.
type clusterRecord struct {
	Name  string    `json:"name"`
	Added time.Time `json:"added"`
}

// admitted reports whether cluster is admitted now.
func (s *Server) admitted(ctx context.Context, cluster string) (bool, error) {
	_, err := s.st.Get(ctx, clusterPrefix+cluster)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// certOnly authenticates a request that only a client certificate may
// make: the cluster the certificate names. A request without one gets
// status and why.
func (s *Server) certOnly(r *http.Request, status int, why string) (string, error) {
	if err := s.needCA(); err != nil {
		return "", err
	}
	cluster, _, ok, err := s.certCluster(r)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errorf(status, "%s", why)
	}
	return cluster, nil
}

// certCluster authenticates a request by its client certificate: the
// cluster the certificate names, if the CA issued it and the cluster is
// still admitted. ok is false when the request carries no certificate.
func (s *Server) certCluster(r *http.Request) (cluster string, expires time.Time, ok bool, err error) {
	if s.cfg.CA == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", time.Time{}, false, nil
	}
	chain := r.TLS.PeerCertificates
	cluster, err = s.cfg.CA.Verify(chain, time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", time.Time{}, true, errorf(http.StatusUnauthorized, "client certificate: %v", err)
	}
	in, err := s.admitted(r.Context(), cluster)
	if err != nil {
		return "", time.Time{}, true, err
	}
	if !in {
		return "", time.Time{}, true, errorf(http.StatusUnauthorized, "cluster %q was removed from the control plane; `trellis cluster add %s` admits it again", cluster, cluster)
	}
	return cluster, chain[0].NotAfter, true, nil
}

// untilRevoked returns a context that ends with parent, when expires
// passes, or when cluster is no longer admitted, whichever is first. A
// watch stream made with a certificate ends with the certificate's
// admission, not when the client chooses.
func (s *Server) untilRevoked(parent context.Context, cluster string, expires time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(parent, expires)
	go func() {
		t := time.NewTicker(revocationCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if in, err := s.admitted(ctx, cluster); err == nil && !in {
					s.log.Info("cluster removed: ending its request", "cluster", cluster)
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// admin wraps a handler only an administrator's bearer token may call.
func (s *Server) admin(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !s.isAdmin(token) {
			writeError(w, errorf(http.StatusForbidden, "managing clusters needs an administrator token (trellis server --admin-token-file)"))
			return
		}
		s.handle(w, r, h(w, r))
	})
}

// adminOr serves an administrator with h (as cluster ""), anyone else with
// other.
func (s *Server) adminOr(other http.Handler, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !s.isAdmin(token) {
			other.ServeHTTP(w, r)
			return
		}
		s.handle(w, r, h(w, r, ""))
	})
}

func (s *Server) isAdmin(token string) bool {
	found := false
	for t := range s.cfg.AdminTokens {
		if tokenEqual(t, token) {
			found = true
		}
	}
	return token != "" && found
}

// handle writes err, if any, as the response, and logs the unexpected.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, err error) {
	if err == nil {
		return
	}
	var he *httpError
	if !errors.As(err, &he) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, err)
}

func (s *Server) needCA() error {
	if s.cfg.CA == nil {
		return errorf(http.StatusNotFound, "this control plane admits no clusters by certificate (no CA configured)")
	}
	return nil
}

// addCluster admits a cluster (again) and makes a one-time join token for it.
func (s *Server) addCluster(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	var req api.AddClusterRequest
	release, err := s.readBody(w, r, &req, maxJoinBody)
	if err != nil {
		return err
	}
	defer release()
	if !model.ValidClusterName(req.Name) || req.Name == model.ControlPlaneOwner {
		return fieldError(http.StatusUnprocessableEntity, fmt.Sprintf("%q is not a valid cluster name", req.Name), "name", "at most 63 lower-case alphanumerics, '-' or '.', starting and ending alphanumeric")
	}
	ttl := DefaultJoinTokenTTL
	if req.TokenTTLSeconds != 0 {
		ttl = time.Duration(req.TokenTTLSeconds) * time.Second
	}
	if ttl <= 0 || ttl > 7*24*time.Hour {
		return fieldError(http.StatusUnprocessableEntity, "token lifetime out of range", "tokenTTLSeconds", "must be between 1 and 604800")
	}
	if fe := validateAdmission(req.ExportNamespaces, req.PodNetwork); len(fe) > 0 {
		return &httpError{status: http.StatusUnprocessableEntity, body: api.Error{Message: fe.Error(), Fields: fe}}
	}
	tok, err := pki.NewJoinToken()
	if err != nil {
		return err
	}
	now := time.Now()
	grant, _ := json.Marshal(pki.Grant{Cluster: req.Name, SecretHash: tok.SecretHash(), Expires: now.Add(ttl)})
	ops := []store.Op{{Type: store.OpPut, Key: grantPrefix + tok.ID, Value: grant, IfRevision: store.MustNotExist}}
	if in, err := s.admitted(r.Context(), req.Name); err != nil {
		return err
	} else if in && (req.ExportNamespaces != nil || req.PodNetwork != nil) {
		// Admitted already: the list or network given replaces the
		// published one, in the token's transaction.
		op, _, err := s.setAdmission(r.Context(), req.Name, req.ExportNamespaces, req.PodNetwork)
		if err != nil {
			return err
		}
		ops = append(ops, op)
	} else if !in {
		if err := s.checkNesting(r.Context(), req.Name); err != nil {
			return err
		}
		rec, _ := json.Marshal(clusterRecord{Name: req.Name, Added: now})
		exports := req.ExportNamespaces
		if len(exports) == 0 {
			exports = []string{model.AllNamespaces}
		}
		c := &model.Cluster{Meta: model.Meta{Name: req.Name, Owner: model.ControlPlaneOwner}, Added: now.UTC(), ExportNamespaces: exports}
		if req.PodNetwork != nil {
			c.PodNetwork = *req.PodNetwork
		}
		published, err := model.Encode(c)
		if err != nil {
			return err
		}
		// Admitted afresh, the cluster starts with no lease and no sync
		// left by a request that raced its removal.
		ops = append(ops, store.Op{Type: store.OpPut, Key: clusterPrefix + req.Name, Value: rec},
			store.Op{Type: store.OpPut, Key: model.Key(model.KindCluster, req.Name), Value: published},
			store.Op{Type: store.OpDelete, Key: leasePrefix + req.Name}, store.Op{Type: store.OpDelete, Key: syncPrefix + req.Name})
	}
	if _, err := s.st.Txn(r.Context(), ops...); err != nil {
		return err
	}
	s.log.Info("cluster admitted; join token issued", "cluster", req.Name, "token_id", tok.ID, "expires", now.Add(ttl))
	writeJSON(w, http.StatusCreated, api.AddClusterResult{Name: req.Name, JoinToken: tok.String(), Expires: now.Add(ttl), CA: string(s.cfg.CA.CertPEM())})
	return nil
}

// validateAdmission checks the operator-set fields of a cluster's
// admission that a request gives (nil: not given).
func validateAdmission(exports []string, podNetwork *string) model.FieldErrors {
	fe := model.ValidateExportNamespaces(exports)
	if podNetwork != nil {
		fe = append(fe, model.ValidatePodNetwork(*podNetwork)...)
	}
	return fe
}

// setAdmission is the store operation replacing the export namespaces
// (unless nil) and the pod network (unless nil) of admitted cluster
// name's published admission, conditional on the admission's revision,
// and the admission as it puts it.
// checkNesting refuses (422, naming the field name) to admit cluster name
// when it ends with "." and an admitted cluster's name, or an admitted
// cluster's ends with "." and name. Peers and workload sets are named
// "<proxy or namespace>.<owner>", so of two such clusters the shorter
// could take the longer's names (its proxy "p.x" is the other's "p"), and
// the other could no longer publish them. Two administrators admitting
// two such names at once through two servers are not stopped.
func (s *Server) checkNesting(ctx context.Context, name string) error {
	recs, err := s.clusterRecords(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if strings.HasSuffix(name, "."+rec.Name) || strings.HasSuffix(rec.Name, "."+name) {
			return fieldError(http.StatusUnprocessableEntity, fmt.Sprintf("%q and the admitted cluster %q: one name ends with '.' and the other", name, rec.Name),
				"name", "must not end with '.' and an admitted cluster's name, nor be the end of one: the names of peers and workload sets (<name>.<cluster>) would collide")
		}
	}
	return nil
}

func (s *Server) setAdmission(ctx context.Context, name string, exports []string, podNetwork *string) (store.Op, *model.Cluster, error) {
	kv, err := s.st.Get(ctx, model.Key(model.KindCluster, name))
	if errors.Is(err, store.ErrNotFound) {
		return store.Op{}, nil, errorf(http.StatusNotFound, "cluster %q is not admitted; `trellis cluster add %s` admits it", name, name)
	}
	if err != nil {
		return store.Op{}, nil, err
	}
	obj, err := decode(kv)
	if err != nil {
		return store.Op{}, nil, err
	}
	c := obj.(*model.Cluster)
	if exports != nil {
		c.ExportNamespaces = exports
	}
	if podNetwork != nil {
		c.PodNetwork = *podNetwork
	}
	if err := c.Validate(); err != nil {
		return store.Op{}, nil, err
	}
	b, err := model.Encode(c)
	if err != nil {
		return store.Op{}, nil, err
	}
	return store.Op{Type: store.OpPut, Key: kv.Key, Value: b, IfRevision: kv.ModRevision}, c, nil
}

// setCluster changes an admitted cluster's export namespaces or pod
// network. Narrowing the namespaces takes effect in every controller and
// proxy with the next snapshot (mcs.Served leaves the cluster's exports
// outside them out); the cluster's further writes of such exports are
// refused (checkExports). A pod network takes effect in every proxy's
// nameserver with the next snapshot.
func (s *Server) setCluster(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	name := r.PathValue("name")
	var req api.SetClusterRequest
	release, err := s.readBody(w, r, &req, maxJoinBody)
	if err != nil {
		return err
	}
	defer release()
	if req.ExportNamespaces != nil && len(req.ExportNamespaces) == 0 || req.ExportNamespaces == nil && req.PodNetwork == nil {
		return fieldError(http.StatusUnprocessableEntity, "exportNamespaces or podNetwork is required", "exportNamespaces", `required unless podNetwork is given: namespace names, or ["*"] for all`)
	}
	if fe := validateAdmission(req.ExportNamespaces, req.PodNetwork); len(fe) > 0 {
		return &httpError{status: http.StatusUnprocessableEntity, body: api.Error{Message: fe.Error(), Fields: fe}}
	}
	for range maxAttempts {
		op, c, err := s.setAdmission(r.Context(), name, req.ExportNamespaces, req.PodNetwork)
		if err != nil {
			return err
		}
		_, err = s.st.Txn(r.Context(), op)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("cluster admission set", "cluster", name, "export_namespaces", c.ExportNamespaces, "pod_network", c.PodNetwork)
		writeJSON(w, http.StatusOK, api.Cluster{Name: name, Added: c.Added, ExportNamespaces: c.ExportNamespaces, PodNetwork: c.PodNetwork})
		return nil
	}
	return errorf(http.StatusConflict, "cluster %q kept changing while it was set; set it again", name)
}

// removeCluster revokes a cluster: its certificates stop authenticating at
// once, its open watch streams end within revocationCheck, and its unused
// join tokens are dropped. In the same transaction it deletes the
// cluster's lease, reports and sync record and the model objects it owns
// (see cleanupOps). Removing a cluster no longer admitted deletes what of
// it is left (objects a request in flight wrote as it was removed).
func (s *Server) removeCluster(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	name := r.PathValue("name")
	for range maxAttempts {
		in, err := s.admitted(r.Context(), name)
		if err != nil {
			return err
		}
		ops := []store.Op{{Type: store.OpDelete, Key: clusterPrefix + name}, {Type: store.OpDelete, Key: model.Key(model.KindCluster, name)}}
		grants, _, err := s.st.List(r.Context(), grantPrefix)
		if err != nil {
			return err
		}
		for _, kv := range grants {
			var g pki.Grant
			if json.Unmarshal(kv.Value, &g) == nil && g.Cluster == name {
				ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key})
			}
		}
		cleanup, deleted, kept, err := s.cleanupOps(r.Context(), name)
		if err != nil {
			return err
		}
		if !in && len(ops) == 2 && deleted == 0 {
			return errorf(http.StatusNotFound, "cluster %q is not admitted", name)
		}
		_, err = s.st.Txn(r.Context(), append(ops, cleanup...)...)
		if errors.Is(err, store.ErrConflict) {
			continue // one of its objects changed meanwhile: read them again
		}
		if err != nil {
			return err
		}
		s.log.Info("cluster removed", "cluster", name, "objects_deleted", deleted, "networks_kept", kept)
		writeJSON(w, http.StatusOK, api.RemoveClusterResult{Removed: name, Deleted: deleted, Kept: kept})
		return nil
	}
	return errorf(http.StatusConflict, "cluster %q's objects kept changing while it was removed; remove it again", name)
}

// listClusters lists the admitted clusters with their leases, peers and
// last syncs.
func (s *Server) listClusters(w http.ResponseWriter, r *http.Request, _ string) error {
	if err := s.needCA(); err != nil {
		return err
	}
	out, err := s.clusterStatus(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// join exchanges a one-time join token and a certificate request for the
// cluster's certificate. It is the one call without credentials: the token
// is the credential, and it works once.
func (s *Server) join(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	var req api.JoinRequest
	release, err := s.readBodyFrom(s.joins, w, r, &req, maxJoinBody)
	if err != nil {
		return err
	}
	defer release()
	tok, err := pki.ParseJoinToken(req.Token)
	if err != nil {
		return errorf(http.StatusUnauthorized, "%v", err)
	}
	if _, err := pki.ParseCSR([]byte(req.CSR)); err != nil {
		return fieldError(http.StatusUnprocessableEntity, err.Error(), "csr", err.Error())
	}
	kv, err := s.st.Get(r.Context(), grantPrefix+tok.ID)
	var grant *pki.Grant
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		grant = new(pki.Grant)
		if err := json.Unmarshal(kv.Value, grant); err != nil {
			return fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
	}
	now := time.Now()
	if err := grant.Check(tok, now); err != nil {
		s.log.Warn("join refused", "token_id", tok.ID, "remote", r.RemoteAddr, "err", err)
		return errorf(http.StatusUnauthorized, "%v", err)
	}
	if in, err := s.admitted(r.Context(), grant.Cluster); err != nil {
		return err
	} else if !in {
		return errorf(http.StatusUnauthorized, "%v", pki.ErrTokenUnknown)
	}
	cert, err := s.cfg.CA.Sign([]byte(req.CSR), grant.Cluster, now, s.certTTL())
	if err != nil {
		return err
	}
	// Spend the token in the same step that decides it is unspent: of two
	// joins racing with one token (on one server or two), one wins.
	grant.Used = now
	used, _ := json.Marshal(grant)
	if _, err := s.st.Txn(r.Context(), store.Op{Type: store.OpPut, Key: kv.Key, Value: used, IfRevision: kv.ModRevision}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusUnauthorized, "%v", pki.ErrTokenUsed)
		}
		return err
	}
	s.log.Info("cluster component joined", "cluster", grant.Cluster, "token_id", tok.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, api.JoinResult{Cluster: grant.Cluster, Certificate: string(cert), CA: string(s.cfg.CA.CertPEM())})
	return nil
}

// renew issues a new certificate for the cluster the caller's certificate
// names. Only a certificate authenticates a renewal: a bearer token of the
// same cluster cannot mint certificates.
func (s *Server) renew(w http.ResponseWriter, r *http.Request) error {
	cluster, err := s.certOnly(r, http.StatusUnauthorized, "renewal needs the cluster's current client certificate")
	if err != nil {
		return err
	}
	var req api.RenewRequest
	release, err := s.readBodyFrom(s.budgetsOf(cluster).lease, w, r, &req, maxJoinBody)
	if err != nil {
		return err
	}
	defer release()
	cert, err := s.cfg.CA.Sign([]byte(req.CSR), cluster, time.Now(), s.certTTL())
	if err != nil {
		return fieldError(http.StatusUnprocessableEntity, err.Error(), "csr", err.Error())
	}
	writeJSON(w, http.StatusOK, api.JoinResult{Cluster: cluster, Certificate: string(cert), CA: string(s.cfg.CA.CertPEM())})
	return nil
}

func (s *Server) certTTL() time.Duration {
	if s.cfg.CertTTL > 0 {
		return s.cfg.CertTTL
	}
	return DefaultCertTTL
}
