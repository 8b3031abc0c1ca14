package main

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

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/internal/store/etcd"
	"trellis.dev/trellis/internal/tlsfiles"
)

func newServer() *cobra.Command {
	var (
		listen, dataDir, tokenFile string
		certFile, keyFile          string
		tokens                     []string
		heartbeat                  time.Duration
		ec                         etcdFlags
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: the API and watch stream over the embedded store or etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			auth, err := loadTokens(tokens, tokenFile)
			if err != nil {
				return err
			}
			st, where, err := openStore(cmd.Context(), dataDir, ec)
			if err != nil {
				return err
			}
			defer st.Close()
			if (certFile == "") != (keyFile == "") {
				return errors.New("--tls-cert-file and --tls-key-file go together")
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			scheme := "http"
			if certFile != "" {
				cfg, err := tlsfiles.Server(certFile, keyFile, func(err error) {
					slog.Error("API certificate not reloaded; the previous one keeps serving", "err", err)
				})
				if err != nil {
					ln.Close()
					return err
				}
				ln, scheme = tls.NewListener(ln, cfg), "https"
			} else if !isLoopback(ln.Addr()) {
				slog.Warn("the API is served without TLS on a non-loopback address: bearer tokens and TLS private keys cross the network in the clear; give --tls-cert-file and --tls-key-file", "addr", ln.Addr().String())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "control plane: API on %s://%s (store %s)\n", scheme, ln.Addr(), where)
			h := server.New(st, server.Config{Tokens: auth, Heartbeat: heartbeat, Logger: slog.Default()})
			return serveHTTP(cmd.Context(), ln, h)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "address of the API")
	f.StringVar(&dataDir, "data", "trellis-data", "directory for the embedded store (unused with --etcd-endpoints)")
	f.StringSliceVar(&ec.endpoints, "etcd-endpoints", nil, "keep the store in etcd at these client URLs (comma-separated) instead of the embedded store; every server sharing them and --etcd-prefix serves one control plane")
	f.StringVar(&ec.prefix, "etcd-prefix", etcd.DefaultPrefix, "prefix of every key the store writes to etcd")
	f.StringVar(&ec.caFile, "etcd-ca-file", "", "CA certificates (PEM) that etcd's serving certificate must chain to (default: the system's)")
	f.StringVar(&ec.certFile, "etcd-cert-file", "", "client certificate (PEM) to present to etcd; reloaded when the file changes")
	f.StringVar(&ec.keyFile, "etcd-key-file", "", "private key of --etcd-cert-file (PEM)")
	f.StringArrayVar(&tokens, "token", nil, "accepted bearer token as TOKEN=CLUSTER (repeatable; prefer --token-file)")
	f.StringVar(&tokenFile, "token-file", "", "file of accepted tokens, one 'TOKEN CLUSTER' per line ('#' comments)")
	f.DurationVar(&heartbeat, "heartbeat", 10*time.Second, "heartbeat interval of idle watch streams")
	f.StringVar(&certFile, "tls-cert-file", "", "serve the API over TLS with this certificate (PEM; reloaded when the file changes)")
	f.StringVar(&keyFile, "tls-key-file", "", "private key of --tls-cert-file (PEM)")
	return cmd
}

// etcdFlags are the server's flags for an etcd store.
type etcdFlags struct {
	endpoints                 []string
	prefix                    string
	caFile, certFile, keyFile string
}

// openStore opens the store the flags choose: etcd when endpoints are
// given, else the embedded store in dataDir. where says which, for the
// start-up line.
func openStore(ctx context.Context, dataDir string, ec etcdFlags) (st store.Store, where string, _ error) {
	if len(ec.endpoints) == 0 {
		if ec.caFile != "" || ec.certFile != "" || ec.keyFile != "" {
			return nil, "", errors.New("--etcd-ca-file, --etcd-cert-file and --etcd-key-file need --etcd-endpoints")
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, "", err
		}
		st, err := bolt.Open(filepath.Join(dataDir, "trellis.db"), bolt.Options{Logger: slog.Default()})
		return st, "in " + dataDir, err
	}
	if (ec.certFile == "") != (ec.keyFile == "") {
		return nil, "", errors.New("--etcd-cert-file and --etcd-key-file go together")
	}
	opts := etcd.Options{Endpoints: ec.endpoints, Prefix: ec.prefix, Logger: slog.Default()}
	for _, e := range ec.endpoints {
		if !strings.HasPrefix(e, "https://") {
			continue
		}
		cfg, err := tlsfiles.Client(ec.caFile)
		if err != nil {
			return nil, "", fmt.Errorf("--etcd-ca-file: %w", err)
		}
		if ec.certFile != "" {
			err := tlsfiles.ClientCert(cfg, ec.certFile, ec.keyFile, func(err error) {
				slog.Error("etcd client certificate not reloaded; the previous one stays in use", "err", err)
			})
			if err != nil {
				return nil, "", fmt.Errorf("--etcd-cert-file: %w", err)
			}
		}
		opts.TLS = cfg
		break
	}
	if opts.TLS == nil && (ec.caFile != "" || ec.certFile != "") {
		return nil, "", errors.New("--etcd-ca-file and --etcd-cert-file need https:// endpoints")
	}
	st, err := etcd.Open(ctx, opts)
	return st, fmt.Sprintf("in etcd %s under %s", strings.Join(ec.endpoints, ","), opts.Prefix), err
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// loadTokens merges --token flags and a token file into token → cluster.
func loadTokens(flags []string, file string) (map[string]string, error) {
	out := map[string]string{}
	for _, t := range flags {
		tok, cluster, ok := strings.Cut(t, "=")
		if !ok || tok == "" || cluster == "" {
			return nil, fmt.Errorf("--token %q: want TOKEN=CLUSTER", t)
		}
		out[tok] = cluster
	}
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
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
			return nil, fmt.Errorf("--token-file: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no tokens: give --token or --token-file")
	}
	return out, nil
}

// serveHTTP serves h on ln until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
