package client

import (
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

// Enrollment is what Enroll needs: where the control plane is and which CA
// it chains to, where the component keeps its cluster certificate, and the
// join token that gets the first one.
type Enrollment struct {
	// Server is the control plane's URL (https; several comma-separated).
	Server string
	// Roots are the CAs the control plane's serving certificate chains to
	// (its own CA, which `trellis cluster add --ca-out` writes).
	Roots *x509.CertPool
	// Dir keeps the certificate and key (identity.pem) across restarts.
	Dir string
	// JoinToken is exchanged for the first certificate when Dir holds none
	// (or only an expired one). It is not needed after that.
	JoinToken string
	Logger    *slog.Logger
}

// Enroll returns a client authenticated by the component's cluster
// certificate, and the identity behind it: the certificate kept in
// e.Dir if it is still valid, else one got by exchanging e.JoinToken. Run
// the identity's renewal with KeepRenewed.
func Enroll(ctx context.Context, e Enrollment) (*Client, *pki.Identity, error) {
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	id, err := loadIdentity(e.Dir)
	switch {
	case err == nil && time.Now().Before(id.Expires()):
		e.Logger.Info("cluster certificate loaded", "cluster", id.Cluster(), "dir", e.Dir, "expires", id.Expires())
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("identity in %s: %w", e.Dir, err)
	case e.JoinToken == "":
		if err == nil {
			return nil, nil, fmt.Errorf("the cluster certificate in %s expired %s and there is no join token to get another: make one with `trellis cluster add NAME` and pass it with --join-token-file",
				e.Dir, id.Expires().UTC().Format(time.RFC3339))
		}
		return nil, nil, fmt.Errorf("no cluster certificate in %s and no join token: make one with `trellis cluster add NAME` on the control plane and pass it with --join-token-file", e.Dir)
	default:
		if id, err = join(ctx, e); err != nil {
			return nil, nil, err
		}
		e.Logger.Info("joined the control plane", "cluster", id.Cluster(), "dir", e.Dir, "expires", id.Expires())
	}
	c, err := New(e.Server, "", Options{Logger: e.Logger, HTTPClient: &http.Client{Transport: identityTransport(id, e.Roots)}})
	if err != nil {
		return nil, nil, err
	}
	return c, id, nil
}

func identityTransport(id *pki.Identity, roots *x509.CertPool) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = id.ClientConfig(roots)
	return tr
}

// join exchanges the join token for a certificate and keeps it in e.Dir.
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
	if err := saveIdentity(e.Dir, []byte(res.Certificate), keyPEM); err != nil {
		return nil, fmt.Errorf("joined as %s, but keeping the certificate failed (the token is spent): %w", id.Cluster(), err)
	}
	if err := os.WriteFile(filepath.Join(e.Dir, clusterCAFile), []byte(res.CA), 0o644); err != nil {
		return nil, fmt.Errorf("joined as %s, but keeping the CA certificate failed: %w", id.Cluster(), err)
	}
	return id, nil
}

// KeepRenewed renews id through c until ctx ends, keeping each new
// certificate in dir.
func KeepRenewed(ctx context.Context, c *Client, id *pki.Identity, dir string, log *slog.Logger) {
	id.Run(ctx, c.Renew, func(certPEM, keyPEM []byte) error {
		if err := saveIdentity(dir, certPEM, keyPEM); err != nil {
			return err
		}
		log.Info("cluster certificate renewed", "cluster", id.Cluster(), "expires", id.Expires())
		return nil
	}, func(err error) {
		log.Error("cluster certificate not renewed; the current one serves until it expires", "expires", id.Expires(), "err", err)
	})
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

func loadIdentity(dir string) (*pki.Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		return nil, err
	}
	return pki.NewIdentity(b, b)
}

// saveIdentity writes the certificate and key aside and renames them into
// place, so that a crash leaves the old pair or the new one, never a mix.
func saveIdentity(dir string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+identityFile+".tmp")
	if err := os.WriteFile(tmp, append(append([]byte{}, certPEM...), keyPEM...), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, identityFile))
}
