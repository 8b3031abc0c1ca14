package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/controlplane"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/etcd"
)

func newServer() *cobra.Command {
	var (
		listen, dataDir, tokensFile, oldTokenFile string
		certFile, keyFile                         string
		adminTokensFile, caCertFile, caKeyFile    string
		caCertOut                                 string
		lattice                                   controlplane.LatticeOptions
		tokens, oldTokens, tlsHosts               []string
		heartbeat, certTTL, leaseDuration         time.Duration
		watchLimits                               server.Config
		ec                                        controlplane.EtcdOptions
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: the API and watch stream over the embedded store or etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case watchLimits.MaxWatches <= 0:
				return fmt.Errorf("--max-watches %d: must be positive", watchLimits.MaxWatches)
			case watchLimits.MaxSnapshotBytes <= 0:
				return fmt.Errorf("--max-snapshot-bytes %d: must be positive", watchLimits.MaxSnapshotBytes)
			case watchLimits.SnapshotTimeout <= 0:
				return fmt.Errorf("--snapshot-timeout %v: must be positive", watchLimits.SnapshotTimeout)
			}
			log := slog.Default()
			auth, err := controlplane.LoadTokens(append(tokens, oldTokens...), cmp.Or(tokensFile, oldTokenFile))
			if err != nil {
				return err
			}
			admins, err := controlplane.LoadAdminTokens(adminTokensFile)
			if err != nil {
				return err
			}
			supplied, err := controlplane.LoadCA(caCertFile, caKeyFile)
			if err != nil {
				return err
			}
			st, where, err := controlplane.OpenStore(cmd.Context(), controlplane.StoreOptions{DataDir: dataDir, Etcd: ec, Logger: log})
			if err != nil {
				return err
			}
			defer st.Close()
			ca, err := server.EnsureCA(cmd.Context(), st, supplied)
			if err != nil {
				return err
			}
			if caCertOut == "" && len(ec.Endpoints) == 0 {
				caCertOut = filepath.Join(dataDir, "ca.crt")
			}
			if caCertOut != "" {
				if err := os.WriteFile(caCertOut, ca.CertPEM(), 0o644); err != nil {
					return fmt.Errorf("--ca-cert-out: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "control plane: CA certificate in %s (the --ca-file of clusters' components)\n", caCertOut)
			}
			srv := server.New(st, server.Config{Tokens: auth, AdminTokens: admins, CA: ca, CertTTL: certTTL, LeaseDuration: leaseDuration, Heartbeat: heartbeat, Logger: log,
				MaxWatches: watchLimits.MaxWatches, MaxSnapshotBytes: watchLimits.MaxSnapshotBytes, SnapshotTimeout: watchLimits.SnapshotTimeout})
			ln, url, err := controlplane.Listen(controlplane.ListenOptions{
				Addr: listen, CertFile: certFile, KeyFile: keyFile, CAHosts: tlsHosts, CA: ca, ClientAuth: srv.TLSConfig, Logger: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "control plane: API on %s (store %s)\n", url, where)
			lattice.Logger = log
			return controlplane.ServeWithLattice(cmd.Context(), ln, srv, lattice, func(url string) {
				fmt.Fprintf(cmd.OutOrStdout(), "control plane: VPC Lattice API on %s\n", url)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "address of the API")
	f.StringVar(&dataDir, "data", "trellis-data", "directory for the embedded store (unused with --etcd-endpoints)")
	f.StringSliceVar(&ec.Endpoints, "etcd-endpoints", nil, "keep the store in etcd at these client URLs (comma-separated) instead of the embedded store; every server sharing them and --etcd-prefix serves one control plane")
	f.StringVar(&ec.Prefix, "etcd-prefix", etcd.DefaultPrefix, "prefix of every key the store writes to etcd")
	f.StringVar(&ec.CAFile, "etcd-ca-file", "", "CA certificates (PEM) that etcd's serving certificate must chain to (default: the system's)")
	f.StringVar(&ec.CertFile, "etcd-cert-file", "", "client certificate (PEM) to present to etcd; reloaded when the file changes")
	f.StringVar(&ec.KeyFile, "etcd-key-file", "", "private key of --etcd-cert-file (PEM)")
	f.StringVar(&tokensFile, "tokens-file", "", "file of accepted tokens, one 'TOKEN CLUSTER' per line ('#' comments)")
	f.StringArrayVar(&tokens, "tokens", nil, "an accepted bearer token as TOKEN=CLUSTER (repeatable; prefer --tokens-file)")
	// The spellings before --tokens-file and --tokens, which on the other
	// commands name the client's own token.
	f.StringVar(&oldTokenFile, "token-file", "", "")
	f.StringArrayVar(&oldTokens, "token", nil, "")
	f.MarkDeprecated("token-file", "use --tokens-file (--token-file is the client's own token on the other commands)")
	f.MarkDeprecated("token", "use --tokens (--token is the client's own token on the other commands)")
	f.DurationVar(&heartbeat, "heartbeat", 10*time.Second, "heartbeat interval of idle watch streams")
	f.IntVar(&watchLimits.MaxWatches, "max-watches", server.DefaultMaxWatches, "watch streams one cluster may have open at once (a proxy holds one); one more is answered 429")
	f.Int64Var(&watchLimits.MaxSnapshotBytes, "max-snapshot-bytes", server.DefaultMaxSnapshotBytes,
		"store bytes, over all clusters, that watch streams not yet past their first message (the whole-store snapshot) may hold at once; one cluster gets at most a quarter, and a stream waits for its turn (503 after --snapshot-timeout)")
	f.DurationVar(&watchLimits.SnapshotTimeout, "snapshot-timeout", server.DefaultSnapshotTimeout, "how long a watch stream's message (its snapshot included) may take to be written; a client that does not read is cut off")
	f.StringVar(&certFile, "tls-cert-file", "", "serve the API over TLS with this certificate (PEM; reloaded when the file changes)")
	f.StringVar(&keyFile, "tls-key-file", "", "private key of --tls-cert-file (PEM)")
	f.StringSliceVar(&tlsHosts, "tls-hosts", nil, "serve the API over TLS with a certificate for these host names and addresses issued by the control plane's own CA (instead of --tls-cert-file); joined clusters trust it")
	f.StringVar(&adminTokensFile, "admin-tokens-file", "", "file of administrator tokens, one per line ('#' comments): they add and remove clusters (trellis cluster)")
	f.StringVar(&caCertFile, "ca-cert-file", "", "the CA (PEM) to issue cluster certificates with, on the store's first start (default: one generated and kept in the store)")
	f.StringVar(&caKeyFile, "ca-key-file", "", "private key of --ca-cert-file (PEM)")
	f.StringVar(&caCertOut, "ca-cert-out", "", "write the control plane's CA certificate here at start (default: ca.crt in --data with the embedded store)")
	f.DurationVar(&leaseDuration, "lease-duration", server.DefaultLeaseDuration, "how long a cluster's lease lives unrenewed; its components renew it every fifth of that, and other clusters' proxies stop picking its targets once it lapses")
	f.DurationVar(&certTTL, "cert-ttl", server.DefaultCertTTL, "lifetime of issued cluster certificates; holders renew them two thirds of the way through")
	f.StringVar(&lattice.Addr, "lattice-listen", "", "also serve the VPC Lattice API (aws vpc-lattice --endpoint-url) on this address, over the same store")
	f.StringVar(&lattice.CredentialsFile, "lattice-credentials-file", "", "the VPC Lattice API's access keys, one 'ACCESS_KEY SECRET OWNER' per line ('#' comments); OWNER is the cluster objects made with the key belong to")
	return cmd
}
