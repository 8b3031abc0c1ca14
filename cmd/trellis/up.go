package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/gcfloor"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/up"
)

func newUp() *cobra.Command {
	var (
		cfg       up.Config
		pool      string
		accessLog string
		memLimit  string
		procs     int
	)
	cmd := &cobra.Command{
		Use:   "up (--config DIR | --kubeconfig FILE)",
		Short: "Run control plane, a provider and proxy in one process (the quick start)",
		Long: `Run the control plane (embedded store), a provider and a proxy in one
process. With --config the file provider reads Gateway API YAML (GatewayClass,
Gateway, HTTPRoute, ReferenceGrant, Namespace, Service, EndpointSlice) from the
directory and re-applies it when the files change; an invalid change is
reported and the last good configuration keeps serving. With --kubeconfig the
Kubernetes controller watches that cluster instead and writes status back; it
installs trellis's own CRDs when they are missing, and exits naming any
missing Gateway API CRD. Edge Gateways get addresses from --gateway-addresses;
without it they are served on --bind, which their status publishes when it is
one IP address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pool != "" {
				p, err := netip.ParsePrefix(pool)
				if err != nil {
					return fmt.Errorf("--gateway-addresses: %w", err)
				}
				cfg.GatewayAddresses = p
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.Logger = slog.Default()
			if err := setMemoryLimit(memLimit, cfg.Logger); err != nil {
				return err
			}
			if err := setProcs(procs, cfg.Logger); err != nil {
				return err
			}
			defer gcfloor.Keep(gcfloor.DefaultFloor)()
			return withAccessLog(accessLog, cfg.Out, cfg.Logger, &cfg.AccessLog, func() error { return up.Run(cmd.Context(), cfg) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfigDir, "config", "", "directory of Gateway API YAML to serve")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "serve the Gateway API objects of this cluster instead of a directory")
	f.StringVar(&pool, "gateway-addresses", "", "with --kubeconfig: CIDR edge Gateways get their addresses from, e.g. 198.18.100.0/24")
	f.StringVar(&cfg.Bind, "bind", "127.0.0.1", "address the proxy's listeners bind")
	f.StringVar(&cfg.APIListen, "api-listen", "127.0.0.1:7070", "address of the control-plane API (port 0 picks one)")
	f.StringVar(&cfg.DataDir, "data", "", "directory for the store (default: a temporary directory removed on exit)")
	f.StringVar(&cfg.Cluster, "cluster", "local", "name of this cluster, the owner of what the files define")
	f.BoolVar(&cfg.Demo, "demo", false, "serve every loopback endpoint in the config with a built-in echo backend")
	registerProxyFlags(f, &accessLog, &cfg.AdminListen, &cfg.TargetMetrics, &cfg.DNSListen, &cfg.DNSAnswer, &cfg.Limits)
	registerMemoryLimit(f, &memLimit, &procs)
	f.DurationVar(&cfg.SettlePeriod, "settle-period", file.DefaultSettlePeriod, "how long a config file that became empty or lost a policy, Gateway or listener must stay so before the removal applies (a deleted file applies at once)")
	f.Int64Var(&cfg.MaxFileSize, "max-config-file-bytes", file.DefaultMaxFileSize, "config files larger than this are reported and keep their last content")
	cmd.MarkFlagsOneRequired("config", "kubeconfig")
	cmd.MarkFlagsMutuallyExclusive("config", "kubeconfig")
	return cmd
}
