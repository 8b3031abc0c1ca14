package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/tlsfiles"
)

const (
	dnsListenUsage = "serve the service networks' DNS names here (UDP and TCP), e.g. 127.0.0.1:5353; empty: no DNS"
	dnsAnswerUsage = "comma-separated addresses the names resolve to (default: --bind)"
)

const caFileUsage = "CA certificate (PEM) the control plane's TLS certificate must chain to; default: the system's roots"

// newAPIClient returns a control-plane client for serverURL, trusting the
// CA in caFile for an https URL.
func newAPIClient(serverURL, token, caFile string, log *slog.Logger) (*client.Client, error) {
	tlsCfg, err := tlsfiles.Client(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return client.New(serverURL, token, client.Options{Logger: log, HTTPClient: &http.Client{Transport: tr}})
}

// serverUsage is the usage of --server, which every API client shares.
const serverUsage = "control-plane API address; several servers of one control plane (one etcd store) as a comma-separated list, used in turn when one cannot be reached"

// tokenFlags are the flags of an API client's own bearer token, the same
// on every command that is one: --token, --token-file, or $TRELLIS_TOKEN.
type tokenFlags struct{ token, file string }

func (t *tokenFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.token, "token", "", "bearer token (default $TRELLIS_TOKEN)")
	f.StringVar(&t.file, "token-file", "", "file holding the bearer token (trellis up writes one next to its store and prints where)")
}

// get returns the token: --token, else the contents of --token-file, else
// $TRELLIS_TOKEN.
func (t *tokenFlags) get() (string, error) {
	if t.token != "" {
		return t.token, nil
	}
	if t.file != "" {
		b, err := os.ReadFile(t.file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("--token-file %s is empty", t.file)
	}
	if tok := os.Getenv("TRELLIS_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("no token: give --token, --token-file or set TRELLIS_TOKEN")
}

// identityFlags are the flags of a component that authenticates with its
// cluster's certificate: where it keeps it, and the join token for the
// first one. store, when the command sets it (the controller's
// --identity-secret), is used instead of --identity-dir.
type identityFlags struct {
	dir, joinTokenFile string
	readOnly           bool
	store              client.IdentityStore
}

func (i *identityFlags) register(f *pflag.FlagSet) {
	f.StringVar(&i.dir, "identity-dir", "", "keep the cluster certificate here and authenticate with it instead of a token (joined with --join-token-file the first time, renewed before it expires)")
	f.StringVar(&i.joinTokenFile, "join-token-file", "", "file holding a one-time join token from `trellis cluster add NAME`, exchanged for the cluster certificate when the identity store holds none")
}

// clusterFlags are the flags of a component that speaks to the control
// plane for its cluster (the proxy, the controller): --server, a token or
// the cluster's certificate, --ca-file and --cluster.
type clusterFlags struct {
	serverURL, caFile, cluster string
	tok                        tokenFlags
	ident                      identityFlags
}

// register registers the flags; clusterUsage says what --cluster names.
func (cf *clusterFlags) register(f *pflag.FlagSet, clusterUsage string) {
	f.StringVar(&cf.serverURL, "server", "http://127.0.0.1:7070", serverUsage)
	cf.tok.register(f)
	cf.ident.register(f)
	f.StringVar(&cf.caFile, "ca-file", "", caFileUsage)
	f.StringVar(&cf.cluster, "cluster", "", clusterUsage+" (required with a token; with --identity-dir the certificate names it)")
}

// registerReadOnly registers --identity-read-only (the proxy's).
func (i *identityFlags) registerReadOnly(f *pflag.FlagSet) {
	f.BoolVar(&i.readOnly, "identity-read-only", false, "never write --identity-dir (a mounted Secret the controller keeps with --identity-secret): take up the certificates written there, and renew in memory should one not come in time")
}

// identityFollowInterval is how often a read-only identity directory is
// checked for a certificate its keeper renewed.
const identityFollowInterval = 10 * time.Second

// connect returns a control-plane client: with an identity store, one that
// authenticates with the cluster's certificate (joining first if need be,
// and renewing it until ctx ends); otherwise one with the bearer token.
// --cluster, when set, must be the certificate's; the cluster the client
// speaks for is returned.
func (cf *clusterFlags) connect(ctx context.Context, log *slog.Logger) (*client.Client, string, *pki.Identity, error) {
	id := cf.ident
	store := id.store
	if store == nil && id.dir != "" {
		store = client.DirStore(id.dir)
	}
	if store == nil {
		if id.joinTokenFile != "" {
			return nil, "", nil, errors.New("--join-token-file needs --identity-dir, where the certificate it gets is kept")
		}
		if id.readOnly {
			return nil, "", nil, errors.New("--identity-read-only needs --identity-dir")
		}
		if cf.cluster == "" {
			return nil, "", nil, errors.New("--cluster is required with a token (with --identity-dir the certificate names the cluster)")
		}
		token, err := cf.tok.get()
		if err != nil {
			return nil, "", nil, err
		}
		c, err := newAPIClient(cf.serverURL, token, cf.caFile, log)
		return c, cf.cluster, nil, err
	}
	if id.readOnly && id.joinTokenFile != "" {
		return nil, "", nil, errors.New("--join-token-file cannot be used with --identity-read-only: the certificate it gets could not be kept")
	}
	tlsCfg, err := tlsfiles.Client(cf.caFile)
	if err != nil {
		return nil, "", nil, err
	}
	// A missing token file is no token: once the identity is kept, the
	// token (spent) may be removed, as a Kubernetes Secret mounted
	// optionally is.
	var joinToken string
	tokenMissing := false
	if id.joinTokenFile != "" {
		b, err := os.ReadFile(id.joinTokenFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			tokenMissing = true
		case err != nil:
			return nil, "", nil, fmt.Errorf("--join-token-file: %w", err)
		}
		joinToken = strings.TrimSpace(string(b))
	}
	c, ident, err := client.Enroll(ctx, client.Enrollment{Server: cf.serverURL, Roots: tlsCfg.RootCAs, Store: store, JoinToken: joinToken, Cluster: cf.cluster, Logger: log})
	if err != nil {
		if tokenMissing {
			return nil, "", nil, fmt.Errorf("%w (--join-token-file %s does not exist)", err, id.joinTokenFile)
		}
		return nil, "", nil, err
	}
	if id.readOnly {
		go client.KeepRenewed(ctx, c, ident, nil, log)
		go client.FollowIdentity(ctx, ident, store, identityFollowInterval, log)
	} else {
		go client.KeepRenewed(ctx, c, ident, store, log)
	}
	return c, ident.Cluster(), ident, nil
}
