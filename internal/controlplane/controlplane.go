// Package controlplane runs the control-plane server's process-level parts,
// shared by `trellis server` and `trellis up`: opening the store (embedded
// or etcd), loading the accepted tokens, and serving the API (package
// server) on a listener, over TLS when given a certificate, until the
// context ends.
//
// It owns that wiring and nothing else: the API is package server's, the
// stores are packages store/bolt and store/etcd. Its errors name the
// command-line flags the options come from, since that is what a user set.
package controlplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"trellis.dev/trellis/internal/pki"

	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/internal/store/etcd"
	"trellis.dev/trellis/internal/tlsfiles"
)

// StoreOptions choose the store.
type StoreOptions struct {
	// DataDir holds the embedded store; unused with Etcd endpoints.
	DataDir string
	// Etcd, with endpoints, keeps the store in etcd instead.
	Etcd EtcdOptions
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// EtcdOptions are the etcd store's: client URLs, key prefix, and TLS files
// (the client certificate is reloaded when its file changes).
type EtcdOptions struct {
	Endpoints                 []string
	Prefix                    string
	CAFile, CertFile, KeyFile string
}

// OpenStore opens the store opts choose: etcd when endpoints are given,
// else the embedded store in DataDir, created if need be. where says which,
// for the start-up line.
func OpenStore(ctx context.Context, opts StoreOptions) (st store.Store, where string, _ error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ec := opts.Etcd
	if len(ec.Endpoints) == 0 {
		if ec.CAFile != "" || ec.CertFile != "" || ec.KeyFile != "" {
			return nil, "", errors.New("--etcd-ca-file, --etcd-cert-file and --etcd-key-file need --etcd-endpoints")
		}
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return nil, "", err
		}
		st, err := bolt.Open(filepath.Join(opts.DataDir, "trellis.db"), bolt.Options{Logger: log})
		return st, "in " + opts.DataDir, err
	}
	if (ec.CertFile == "") != (ec.KeyFile == "") {
		return nil, "", errors.New("--etcd-cert-file and --etcd-key-file go together")
	}
	eo := etcd.Options{Endpoints: ec.Endpoints, Prefix: ec.Prefix, Logger: log}
	for _, e := range ec.Endpoints {
		if !strings.HasPrefix(e, "https://") {
			continue
		}
		cfg, err := tlsfiles.Client(ec.CAFile)
		if err != nil {
			return nil, "", fmt.Errorf("--etcd-ca-file: %w", err)
		}
		if ec.CertFile != "" {
			err := tlsfiles.ClientCert(cfg, ec.CertFile, ec.KeyFile, func(err error) {
				log.Error("etcd client certificate not reloaded; the previous one stays in use", "err", err)
			})
			if err != nil {
				return nil, "", fmt.Errorf("--etcd-cert-file: %w", err)
			}
		}
		eo.TLS = cfg
		break
	}
	if eo.TLS == nil && (ec.CAFile != "" || ec.CertFile != "") {
		return nil, "", errors.New("--etcd-ca-file and --etcd-cert-file need https:// endpoints")
	}
	st, err := etcd.Open(ctx, eo)
	return st, fmt.Sprintf("in etcd %s under %s", strings.Join(ec.Endpoints, ","), eo.Prefix), err
}

// readFieldLines calls fn with the line number and the blank-separated
// fields of each line of file that is neither empty nor a '#' comment;
// flag names the file in open and read errors.
func readFieldLines(file, flag string, fn func(n int, fields []string) error) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, strings.Fields(line)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	return nil
}

// LoadTokens merges TOKEN=CLUSTER pairs and a tokens file (one
// "TOKEN CLUSTER" per line, '#' comments) into token → cluster.
func LoadTokens(pairs []string, file string) (map[string]string, error) {
	out := map[string]string{}
	for _, t := range pairs {
		tok, cluster, ok := strings.Cut(t, "=")
		if !ok || tok == "" || cluster == "" {
			return nil, fmt.Errorf("--tokens %q: want TOKEN=CLUSTER", t)
		}
		out[tok] = cluster
	}
	if file != "" {
		err := readFieldLines(file, "--tokens-file", func(n int, fields []string) error {
			if len(fields) != 2 {
				return fmt.Errorf("%s:%d: want 'TOKEN CLUSTER'", file, n)
			}
			out[fields[0]] = fields[1]
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no tokens: give --tokens-file or --tokens")
	}
	return out, nil
}

// LoadAdminTokens reads administrator tokens, one per line ('#' comments),
// as a set. No file is no administrators.
func LoadAdminTokens(file string) (map[string]struct{}, error) {
	out := map[string]struct{}{}
	if file == "" {
		return out, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--admin-tokens-file: %w", err)
	}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("%s:%d: want one token per line", file, n+1)
		}
		out[line] = struct{}{}
	}
	return out, nil
}

// LoadCA reads a supplied CA certificate and key; none given is nil (the
// control plane then keeps a generated one).
func LoadCA(certFile, keyFile string) (*pki.CA, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--ca-cert-file and --ca-key-file go together")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert-file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-key-file: %w", err)
	}
	return pki.ParseCA(certPEM, keyPEM)
}

// ListenOptions say where and how the API listens.
type ListenOptions struct {
	Addr string
	// CertFile and KeyFile, when given, are the API's certificate and key
	// (reloaded when the files change).
	CertFile, KeyFile string
	// CAHosts, when given instead, serve TLS with a certificate for these
	// host names and addresses issued by the control plane's CA (CA), and
	// reissued before it expires: what joined components trust without
	// any other certificate authority.
	CAHosts []string
	CA      *pki.CA
	// ClientAuth adjusts the TLS configuration to take client certificates
	// (server.Server.TLSConfig); nil leaves it.
	ClientAuth func(*tls.Config) *tls.Config
	Logger     *slog.Logger
}

// Listen listens for the API, over TLS when given a certificate (files, or
// one from the CA). It returns the listener and its URL. Plain HTTP on a
// non-loopback address is served with a warning: tokens and private keys
// would cross the network in the clear.
func Listen(o ListenOptions) (net.Listener, string, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, "", errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if o.CertFile != "" && len(o.CAHosts) > 0 {
		return nil, "", errors.New("--tls-hosts and --tls-cert-file are two ways to the API's certificate: give one")
	}
	var cfg *tls.Config
	switch {
	case o.CertFile != "":
		var err error
		if cfg, err = tlsfiles.Server(o.CertFile, o.KeyFile, func(err error) {
			log.Error("API certificate not reloaded; the previous one keeps serving", "err", err)
		}); err != nil {
			return nil, "", err
		}
	case len(o.CAHosts) > 0:
		var err error
		if cfg, err = caServing(o.CA, o.CAHosts); err != nil {
			return nil, "", fmt.Errorf("--tls-hosts: %w", err)
		}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, "", err
	}
	if cfg == nil {
		if !isLoopback(ln.Addr()) {
			log.Warn("the API is served without TLS on a non-loopback address: bearer tokens and TLS private keys cross the network in the clear; give --tls-hosts, or --tls-cert-file and --tls-key-file", "addr", ln.Addr().String())
		}
		return ln, "http://" + ln.Addr().String(), nil
	}
	if o.ClientAuth != nil {
		cfg = o.ClientAuth(cfg)
	}
	return tls.NewListener(ln, cfg), "https://" + ln.Addr().String(), nil
}

// servingLifetime is the lifetime of a serving certificate issued by the
// CA; it is reissued two thirds of the way through.
const servingLifetime = 24 * time.Hour

// caServing is a TLS configuration presenting a certificate for hosts from
// ca, reissued before it expires.
func caServing(ca *pki.CA, hosts []string) (*tls.Config, error) {
	if ca == nil {
		return nil, errors.New("no CA to issue the certificate")
	}
	var mu sync.Mutex
	var cur *tls.Certificate
	var renewAt time.Time
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); cur == nil || now.After(renewAt) {
			c, err := ca.ServerCertificate(hosts, now, servingLifetime)
			if err != nil {
				if cur != nil {
					return cur, nil
				}
				return nil, err
			}
			cur, renewAt = c, now.Add(servingLifetime*2/3)
		}
		return cur, nil
	}
	if _, err := get(nil); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: get}, nil
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// shutdownTimeout bounds the graceful shutdown of the API.
const shutdownTimeout = 10 * time.Second

// Serve serves h on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
