package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/gcfloor"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/proxy"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/runner"
)

// Defaults of the proxy's observability flags, shared by `trellis proxy`
// and `trellis up`.
const (
	defaultAdminListen = "127.0.0.1:9901"
	accessLogUsage     = `write one JSON line per request to this file (appended; reopened on SIGHUP, after a rotation), or "-" for standard output`
	adminListenUsage   = "address of the admin listener serving /metrics, /healthz and /readyz (empty: none)"
	targetMetricsUsage = "export trellis_target_health and trellis_target_ejected, one series each per target (default: per target group counts only)"
)

func newProxy() *cobra.Command {
	var (
		accessLog string
		memLimit  string
		procs     int
		conn      clusterFlags
		peerCfg   runner.PeerConfig
		cfg       runner.Config
	)
	cmd := &cobra.Command{
		Use:   "proxy --server URL --cluster NAME",
		Short: "Run a proxy that follows the control plane's configuration",
		Long: `Run a proxy. It follows the control plane's watch stream, compiles each
configuration revision into a route table and serves it. While the control
plane is unreachable it keeps serving the last configuration and reconnects
with backoff. The token comes from --token, --token-file or the
TRELLIS_TOKEN variable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger, cfg.Out = slog.Default(), cmd.OutOrStdout()
			if err := setMemoryLimit(memLimit, cfg.Logger); err != nil {
				return err
			}
			if err := setProcs(procs, cfg.Logger); err != nil {
				return err
			}
			var err error
			var id *pki.Identity
			if cfg.Client, cfg.Cluster, id, err = conn.connect(cmd.Context(), cfg.Logger); err != nil {
				return err
			}
			if peerCfg.Listen != "" {
				if id == nil {
					return errors.New("--peer-listen needs --identity-dir: peers prove their cluster with its certificate")
				}
				if peerCfg.Roots, err = client.ClusterRoots(conn.ident.dir); err != nil {
					return fmt.Errorf("the control plane's CA, kept at the join: %w", err)
				}
				peerCfg.Identity = id
				cfg.Peer = &peerCfg
			}
			if id != nil {
				if !model.ValidClusterName(peerCfg.Name) {
					return fmt.Errorf("--peer-name %q: at most 63 lower-case alphanumerics, '-' or '.' (it also names the proxy's lease renewals)", peerCfg.Name)
				}
				cfg.LeaseHolder = peerCfg.Name
			}
			if !model.ValidClusterName(peerCfg.Name) {
				return fmt.Errorf("--peer-name %q: at most 63 lower-case alphanumerics, '-' or '.' (it also names the proxy's health reports)", peerCfg.Name)
			}
			cfg.HealthHolder = peerCfg.Name
			defer gcfloor.Keep(gcfloor.DefaultFloor)()
			return withAccessLog(accessLog, cfg.Out, cfg.Logger, &cfg.AccessLog, func() error { return runner.Run(cmd.Context(), cfg) })
		},
	}
	f := cmd.Flags()
	conn.register(f, "name of the cluster this proxy runs in")
	conn.ident.registerReadOnly(f)
	f.StringVar(&cfg.Bind, "bind", "127.0.0.1", "address the listeners bind")
	f.DurationVar(&cfg.Follow.IdleTimeout, "idle-timeout", 35*time.Second, "reconnect when the stream is silent this long")
	f.StringVar(&cfg.Follow.CacheFile, "cache", "", "file keeping the last configuration, served at start while the control plane is unreachable")
	registerProxyFlags(f, &accessLog, &cfg.AdminListen, &cfg.TargetMetrics, &cfg.DNSListen, &cfg.DNSAnswer, &cfg.Limits)
	f.StringVar(&cfg.AccessLogDir, "access-log-dir", "", "write the access-log sinks that networks and services name (VPC Lattice access log subscriptions) here, sink NAME to DIR/NAME.log (empty: none)")
	f.StringVar(&peerCfg.Listen, "peer-listen", "", "serve the peer hop here (mutual TLS with the cluster's certificate): other clusters' proxies send requests for this cluster's targets to it; needs --identity-dir")
	f.StringVar(&peerCfg.Advertise, "peer-advertise", "", "the address other clusters reach --peer-listen at, published to the control plane (default: --peer-listen)")
	f.StringVar(&peerCfg.Name, "peer-name", "proxy", "this proxy's name among its cluster's proxies (each needs its own): it names its lease renewals and target health reports")
	registerMemoryLimit(f, &memLimit, &procs)
	return cmd
}

// registerMemoryLimit registers --memory-limit and --procs, shared by
// `trellis proxy` and `trellis up`.
func registerMemoryLimit(f *pflag.FlagSet, limit *string, procs *int) {
	f.StringVar(limit, "memory-limit", "", "the garbage collector's soft memory limit, such as 400MiB (units B, KiB, MiB, GiB, TiB), or none; empty: nine tenths of the cgroup's memory limit, if any. A set GOMEMLIMIT stands")
	f.IntVar(procs, "procs", 0, "how many threads run the process's Go code at once (GOMAXPROCS); 0: Go's default, the CPUs the process may use (its cgroup's CPU limit, at least 2). Fewer caps the proxy at about N CPUs; it can shorten the latency tail only where the proxy shares a few CPUs with busy processes and needs less than N (docs/reference/limits.md); not with GOMAXPROCS set")
}

// setProcs applies --procs: n threads run Go code at once, or Go's
// default for 0. The GOMAXPROCS variable and the flag together are
// refused rather than one of them ignored.
func setProcs(n int, log *slog.Logger) error {
	if n < 0 {
		return fmt.Errorf("--procs %d: want 0 (Go's default) or more", n)
	}
	if n == 0 {
		return nil
	}
	if v, set := os.LookupEnv("GOMAXPROCS"); set {
		return fmt.Errorf("--procs %d: GOMAXPROCS=%s is set too; set one of them", n, v)
	}
	runtime.GOMAXPROCS(n)
	log.Debug("threads running Go code at once", "procs", n)
	return nil
}

// setMemoryLimit applies --memory-limit (gcfloor.SetLimit) and logs the
// limit in force.
func setMemoryLimit(flag string, log *slog.Logger) error {
	limit, err := gcfloor.ParseLimit(flag)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	n, from := gcfloor.SetLimit(limit)
	log.Debug("garbage collector's memory limit", "bytes", n, "from", from)
	return nil
}

// registerProxyFlags registers the flags of the proxy's outputs and
// limits, shared by `trellis proxy` and `trellis up`.
func registerProxyFlags(f *pflag.FlagSet, accessLog, adminListen *string, targetMetrics *bool, dnsListen, dnsAnswer *string, l *runner.Limits) {
	f.StringVar(accessLog, "access-log", "", accessLogUsage)
	f.StringVar(adminListen, "admin-listen", defaultAdminListen, adminListenUsage)
	f.BoolVar(targetMetrics, "target-metrics", false, targetMetricsUsage)
	f.StringVar(dnsListen, "dns-listen", "", dnsListenUsage)
	f.StringVar(dnsAnswer, "dns-answer", "", dnsAnswerUsage)
	registerLimits(f, l)
}

// withAccessLog opens the --access-log destination path, sets *dst to
// it and runs run, closing it after.
func withAccessLog(path string, out io.Writer, logger *slog.Logger, dst *io.Writer, run func() error) error {
	w, closeLog, err := accesslog.OpenDestination(path, out, logger)
	if err != nil {
		return fmt.Errorf("--access-log: %w", err)
	}
	defer closeLog()
	*dst = w
	return run()
}

// registerLimits registers the proxy's request limits, shared by `trellis
// proxy` and `trellis up`.
func registerLimits(f *pflag.FlagSet, l *runner.Limits) {
	f.DurationVar(&l.RequestBodyIdleTimeout, "request-body-idle-timeout", proxy.DefaultIdleTimeout, "answer 408 when a client's request body stalls this long (negative: no limit but the request's)")
	f.DurationVar(&l.ResponseIdleTimeout, "response-idle-timeout", proxy.DefaultIdleTimeout, "cut a target's response off when it stalls this long (negative: no limit but the request's)")
	f.Int64Var(&l.MaxRequestBodyBytes, "max-request-body-bytes", 0, "answer 413 to a request body larger than this (0: no limit)")
	f.Var(keyExchangeFlag{&l.TLSKeyExchange}, "tls-key-exchange", "the key exchange groups HTTPS listeners accept, comma-separated, from X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519, P256, P384, P521 (empty: Go's default, which prefers the post-quantum hybrid X25519MLKEM768)")
}

// keyExchangeFlag is --tls-key-exchange (proxy.ParseKeyExchange).
type keyExchangeFlag struct{ ids *[]tls.CurveID }

func (f keyExchangeFlag) Set(s string) error {
	ids, err := proxy.ParseKeyExchange(s)
	if err != nil {
		return err
	}
	*f.ids = ids
	return nil
}

func (f keyExchangeFlag) String() string {
	if f.ids == nil {
		return ""
	}
	names := make([]string, len(*f.ids))
	for i, id := range *f.ids {
		names[i] = id.String()
	}
	return strings.Join(names, ",")
}

func (keyExchangeFlag) Type() string { return "groups" }
