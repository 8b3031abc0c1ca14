package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"trellis.dev/trellis/internal/pki"
)

// The files of an identity directory: the certificate and its key in one
// PEM file, so that one rename replaces both; and the control plane's CA,
// which every cluster's certificate chains to (peers check each other
// against it).
const (
	identityFile  = "identity.pem"
	clusterCAFile = "cluster-ca.pem"
)

// IdentityStore keeps a component's cluster certificate and key (one PEM
// document) and the control plane's CA certificate across restarts: a
// directory (DirStore), or a Kubernetes Secret that a cluster's pods share.
type IdentityStore interface {
	// Load returns the kept identity and CA; an error wrapping
	// fs.ErrNotExist when nothing is kept.
	Load(ctx context.Context) (identityPEM, caPEM []byte, err error)
	// Save keeps identityPEM, and caPEM unless it is nil.
	Save(ctx context.Context, identityPEM, caPEM []byte) error
	// String names the store in messages.
	String() string
}

// Enrollment is what Enroll needs: where the control plane is and which CA
// it chains to, where the component keeps its cluster certificate, and the
// join token that gets the first one.
type Enrollment struct {
	// Server is the control plane's URL (https; several comma-separated).
	Server string
	// Roots are the CAs the control plane's serving certificate chains to
	// (its own CA, which `trellis cluster add --ca-out` writes).
	Roots *x509.CertPool
	// Store keeps the certificate and key across restarts.
	Store IdentityStore
	// JoinToken is exchanged for the first certificate when Store holds
	// none (or only an expired one). It is not needed after that.
	JoinToken string
	// Cluster, when set, is the cluster the certificate must name: a kept
	// certificate of another cluster is refused, never used.
	Cluster string
	Logger  *slog.Logger
}

// Enroll returns a client authenticated by the component's cluster
// certificate, and the identity behind it: the certificate kept in
// e.Store if it is still valid, else one got by exchanging e.JoinToken. A
// kept certificate that does not parse, does not chain to the kept CA or
// names another cluster than e.Cluster is an error: Enroll never joins over
// it. Run the identity's renewal with KeepRenewed.
func Enroll(ctx context.Context, e Enrollment) (*Client, *pki.Identity, error) {
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	id, err := loadKept(ctx, e)
	switch {
	case err == nil && time.Now().Before(id.Expires()):
		e.Logger.Info("cluster certificate loaded", "cluster", id.Cluster(), "from", e.Store.String(), "expires", id.Expires())
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, nil, err
	case e.JoinToken == "":
		if err == nil {
			return nil, nil, fmt.Errorf("the cluster certificate in %s expired %s and there is no join token to get another: make one with `trellis cluster add NAME` and pass it with --join-token-file",
				e.Store, id.Expires().UTC().Format(time.RFC3339))
		}
		return nil, nil, fmt.Errorf("no cluster certificate in %s and no join token: make one with `trellis cluster add NAME` on the control plane and pass it with --join-token-file", e.Store)
	default:
		if id, err = join(ctx, e); err != nil {
			// Another replica may have spent the token first and be
			// keeping what it got where this one would have.
			kept := keptAfter(ctx, e, joinRaceWait)
			if kept == nil {
				return nil, nil, err
			}
			e.Logger.Info("cluster certificate loaded after a failed join: another component joined first", "cluster", kept.Cluster(), "from", e.Store.String(), "join_err", err)
			id = kept
			break
		}
		e.Logger.Info("joined the control plane", "cluster", id.Cluster(), "kept_in", e.Store.String(), "expires", id.Expires())
	}
	c, err := New(e.Server, "", Options{Logger: e.Logger, HTTPClient: &http.Client{Transport: &identityTransport{id: id, roots: e.Roots}}})
	if err != nil {
		return nil, nil, err
	}
	return c, id, nil
}

// joinRaceWait is how long a component whose join failed watches its store
// for the identity a replica that spent the same token first is keeping.
const joinRaceWait = 5 * time.Second

// keptAfter polls e.Store for a valid identity for up to wait; nil if none
// comes.
func keptAfter(ctx context.Context, e Enrollment, wait time.Duration) *pki.Identity {
	deadline := time.Now().Add(wait)
	for {
		if kept, err := loadKept(ctx, e); err == nil && time.Now().Before(kept.Expires()) {
			return kept
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// loadKept reads the identity kept in e.Store and checks it: it parses,
// names e.Cluster (when set) and, unless expired, chains to the kept CA.
func loadKept(ctx context.Context, e Enrollment) (*pki.Identity, error) {
	idPEM, caPEM, err := e.Store.Load(ctx)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("identity in %s: %w", e.Store, err)
	}
	id, err := CheckIdentity(idPEM, caPEM, e.Cluster)
	if err != nil {
		return nil, fmt.Errorf("identity in %s is refused (remove it to join again with a new join token): %w", e.Store, err)
	}
	return id, nil
}

// CheckIdentity parses a kept identity (certificate and key, PEM) and
// checks that it names cluster (when not "") and, unless it has expired,
// chains to the CA certificate caPEM.
func CheckIdentity(idPEM, caPEM []byte, cluster string) (*pki.Identity, error) {
	id, err := pki.NewIdentity(idPEM, idPEM)
	if err != nil {
		return nil, err
	}
	if cluster != "" && id.Cluster() != cluster {
		return nil, fmt.Errorf("the certificate names cluster %q, not %q", id.Cluster(), cluster)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate (PEM) kept with it")
	}
	if leaf := id.Certificate().Leaf; time.Now().Before(leaf.NotAfter) {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("the certificate does not chain to the CA kept with it: %w", err)
		}
	}
	return id, nil
}

// identityTransport sends requests presenting id's current certificate. A
// connection keeps the certificate of its handshake, and the control plane
// refuses it once that certificate expires, so when id changes (a renewal)
// requests go to a fresh transport, whose connections present the new one;
// the old transport's connections serve the requests already on them (a
// watch stream) and close once idle.
type identityTransport struct {
	id    *pki.Identity
	roots *x509.CertPool

	mu   sync.Mutex
	cert *tls.Certificate
	tr   *http.Transport
}

func (t *identityTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.current().RoundTrip(r)
}

// current is the transport of id's current certificate.
func (t *identityTransport) current() *http.Transport {
	cert := t.id.Certificate()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tr == nil || t.cert != cert {
		if t.tr != nil {
			t.tr.CloseIdleConnections()
		}
		t.tr = http.DefaultTransport.(*http.Transport).Clone()
		t.tr.TLSClientConfig = t.id.ClientConfig(t.roots)
		t.cert = cert
	}
	return t.tr
}

// CloseIdleConnections closes the current transport's idle connections.
func (t *identityTransport) CloseIdleConnections() { t.current().CloseIdleConnections() }

// join exchanges the join token for a certificate and keeps it in e.Store.
func join(ctx context.Context, e Enrollment) (*pki.Identity, error) {
	if _, err := pki.ParseJoinToken(e.JoinToken); err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.Roots}
	defer tr.CloseIdleConnections()
	anon, err := New(e.Server, "", Options{Logger: e.Logger, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	res, err := anon.Join(ctx, e.JoinToken, csrPEM)
	if err != nil {
		return nil, fmt.Errorf("joining the control plane: %w", err)
	}
	id, err := pki.NewIdentity([]byte(res.Certificate), keyPEM)
	if err != nil {
		return nil, err
	}
	if e.Cluster != "" && id.Cluster() != e.Cluster {
		return nil, fmt.Errorf("the join token was cluster %q's, not %q's (it is spent now)", id.Cluster(), e.Cluster)
	}
	if err := e.Store.Save(ctx, append([]byte(res.Certificate), keyPEM...), []byte(res.CA)); err != nil {
		return nil, fmt.Errorf("joined as %s, but keeping the certificate in %s failed (the token is spent): %w", id.Cluster(), e.Store, err)
	}
	return id, nil
}

// KeepRenewed renews id through c until ctx ends, keeping each new
// certificate in store; with a nil store, in memory only.
func KeepRenewed(ctx context.Context, c *Client, id *pki.Identity, store IdentityStore, log *slog.Logger) {
	var save func(certPEM, keyPEM []byte) error
	if store != nil {
		save = func(certPEM, keyPEM []byte) error {
			return store.Save(ctx, append(append([]byte{}, certPEM...), keyPEM...), nil)
		}
	}
	id.Run(ctx, c.Renew, func(certPEM, keyPEM []byte) error {
		if save != nil {
			if err := save(certPEM, keyPEM); err != nil {
				return err
			}
		}
		log.Info("cluster certificate renewed", "cluster", id.Cluster(), "expires", id.Expires())
		return nil
	}, func(err error) {
		log.Error("cluster certificate not renewed; the current one serves until it expires", "expires", id.Expires(), "err", err)
	})
}

// FollowIdentity checks store every interval until ctx ends and switches
// id to the certificate kept there when it names id's cluster, chains to
// the kept CA and expires later than id's: a component that may not write
// the store (a proxy mounting the controller's Secret) takes up the
// renewals its keeper makes. What does not pass is logged and ignored.
func FollowIdentity(ctx context.Context, id *pki.Identity, store IdentityStore, interval time.Duration, log *slog.Logger) {
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		idPEM, caPEM, err := store.Load(ctx)
		if err != nil || bytes.Equal(idPEM, last) {
			continue
		}
		last = idPEM
		kept, err := CheckIdentity(idPEM, caPEM, id.Cluster())
		if err != nil {
			log.Warn("cluster certificate in "+store.String()+" not taken up", "err", err)
			continue
		}
		if !kept.Expires().After(id.Expires()) {
			continue
		}
		if err := id.Replace(idPEM, idPEM); err != nil {
			log.Warn("cluster certificate in "+store.String()+" not taken up", "err", err)
			continue
		}
		log.Info("cluster certificate taken up from "+store.String(), "cluster", id.Cluster(), "expires", id.Expires())
	}
}

// ClusterRoots are the roots clusters' certificates chain to, as the join
// kept them in dir: what a proxy checks its peers against.
func ClusterRoots(dir string) (*x509.CertPool, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterCAFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", filepath.Join(dir, clusterCAFile))
	}
	return pool, nil
}

// DirStore keeps an identity in a directory: identity.pem (certificate
// and key) and cluster-ca.pem.
type DirStore string

// Load reads identity.pem and cluster-ca.pem.
func (d DirStore) Load(context.Context) (identityPEM, caPEM []byte, err error) {
	if identityPEM, err = os.ReadFile(filepath.Join(string(d), identityFile)); err != nil {
		return nil, nil, err
	}
	caPEM, err = os.ReadFile(filepath.Join(string(d), clusterCAFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s is there but %s is not", identityFile, clusterCAFile)
	}
	return identityPEM, caPEM, err
}

// Save writes the files aside and renames them into place, so that a crash
// leaves the old identity or the new one, never a mix.
func (d DirStore) Save(_ context.Context, identityPEM, caPEM []byte) error {
	dir := string(d)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	write := func(name string, b []byte, mode os.FileMode) error {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, mode); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, name))
	}
	if caPEM != nil {
		if err := write(clusterCAFile, caPEM, 0o644); err != nil {
			return err
		}
	}
	return write(identityFile, identityPEM, 0o600)
}

func (d DirStore) String() string { return "directory " + string(d) }
