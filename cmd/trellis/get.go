package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/inspect"
	"trellis.dev/trellis/internal/model"
)

func newGet() *cobra.Command {
	var (
		serverURL, caFile, output string
		tok                       tokenFlags
	)
	kinds := make([]string, len(model.Kinds))
	for i, k := range model.Kinds {
		kinds[i] = strings.ToLower(string(k)) + "s"
	}
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show what the control plane holds: " + strings.Join(kinds, ", "),
		Long: `Show the objects of one kind that the control plane holds, or one of them,
as a table, YAML or JSON. Certificate private keys are never shown. The token
comes from --token, --token-file (trellis up writes one next to its store and
prints where) or the TRELLIS_TOKEN variable; any cluster's token may read.
"get clusters" shows each admitted cluster's status instead: its lease
(alive or lapsed, and when it was last renewed), its peers (reached by
other clusters' proxies / published), the median round trip those proxies
measured to them, and when its controller last synchronised.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := model.ParseKind(args[0])
			if err != nil {
				return fmt.Errorf("%w; kinds: %s", err, strings.Join(kinds, ", "))
			}
			token, err := tok.get()
			if err != nil {
				return err
			}
			cl, err := newAPIClient(serverURL, token, caFile, slog.Default())
			if err != nil {
				return err
			}
			if k == model.KindCluster {
				clusters, err := cl.Clusters(cmd.Context())
				if err != nil {
					return err
				}
				if len(args) == 2 {
					clusters = slices.DeleteFunc(clusters, func(c api.Cluster) bool { return c.Name != args[1] })
					if len(clusters) == 0 {
						return fmt.Errorf("cluster %q is not admitted", args[1])
					}
				}
				return inspect.WriteClusters(cmd.OutOrStdout(), output, clusters, time.Now())
			}
			var objs []model.Object
			if len(args) == 2 {
				obj, err := model.New(k)
				if err != nil {
					return err
				}
				obj.ObjectMeta().Name = args[1]
				if err := cl.Get(cmd.Context(), obj); err != nil {
					return err
				}
				objs = []model.Object{obj}
			} else if objs, _, err = cl.List(cmd.Context(), k); err != nil {
				return err
			}
			return inspect.Write(cmd.OutOrStdout(), output, k, objs)
		},
	}
	f := cmd.Flags()
	f.StringVar(&serverURL, "server", "http://127.0.0.1:7070", serverUsage)
	tok.register(f)
	f.StringVar(&caFile, "ca-file", "", caFileUsage)
	f.StringVarP(&output, "output", "o", "table", "output format: "+strings.Join(inspect.Formats, ", "))
	return cmd
}
