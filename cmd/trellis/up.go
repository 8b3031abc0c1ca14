package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/standalone"
)

func newUp() *cobra.Command {
	var cfg standalone.Config
	cmd := &cobra.Command{
		Use:   "up --config DIR",
		Short: "Run control plane, file provider and proxy in one process (the quick start)",
		Long: `Run the control plane (embedded store), the file provider and a proxy in one
process. The provider reads Gateway API YAML (GatewayClass, Gateway, HTTPRoute,
Service, EndpointSlice) from --config and re-applies it when the files change;
an invalid change is reported and the last good configuration keeps serving.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			cfg.Logger = slog.Default()
			return standalone.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfigDir, "config", "", "directory of Gateway API YAML to serve (required)")
	f.StringVar(&cfg.Bind, "bind", "127.0.0.1", "address the proxy's listeners bind")
	f.StringVar(&cfg.APIListen, "api-listen", "127.0.0.1:7070", "address of the control-plane API (port 0 picks one)")
	f.StringVar(&cfg.DataDir, "data", "", "directory for the store (default: a temporary directory removed on exit)")
	f.StringVar(&cfg.Cluster, "cluster", "local", "name of this cluster, the owner of what the files define")
	f.BoolVar(&cfg.Demo, "demo", false, "serve every loopback endpoint in the config with a built-in echo backend")
	cmd.MarkFlagRequired("config")
	return cmd
}
