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
	"time"

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
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--tokens-file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			fields := strings.Fields(line)
			if len(fields) != 2 {
				return nil, fmt.Errorf("%s:%d: want 'TOKEN CLUSTER'", file, n)
			}
			out[fields[0]] = fields[1]
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--tokens-file: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no tokens: give --tokens-file or --tokens")
	}
	return out, nil
}

// Listen listens on addr for the API, over TLS with the certificate and key
// files when given (reloaded when the files change). It returns the
// listener and its URL. Plain HTTP on a non-loopback address is served with
// a warning: tokens and private keys would cross the network in the clear.
func Listen(addr, certFile, keyFile string, log *slog.Logger) (net.Listener, string, error) {
	if log == nil {
		log = slog.Default()
	}
	if (certFile == "") != (keyFile == "") {
		return nil, "", errors.New("--tls-cert-file and --tls-key-file go together")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	scheme := "http"
	if certFile != "" {
		cfg, err := tlsfiles.Server(certFile, keyFile, func(err error) {
			log.Error("API certificate not reloaded; the previous one keeps serving", "err", err)
		})
		if err != nil {
			ln.Close()
			return nil, "", err
		}
		ln, scheme = tls.NewListener(ln, cfg), "https"
	} else if !isLoopback(ln.Addr()) {
		log.Warn("the API is served without TLS on a non-loopback address: bearer tokens and TLS private keys cross the network in the clear; give --tls-cert-file and --tls-key-file", "addr", ln.Addr().String())
	}
	return ln, scheme + "://" + ln.Addr().String(), nil
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
