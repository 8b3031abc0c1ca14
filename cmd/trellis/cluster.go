package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
)

const exportNamespacesUsage = "namespaces the cluster may export Services from, comma-separated, or '*' for all"

const podNetworkUsage = "the flat pod network the cluster is in, shared with the clusters given the same name (an RFC 1123 label; '' for its own, isolated): Headless imports' names then answer the pods' own addresses there"

// newCluster is `trellis cluster`: admitting clusters to the control plane
// and revoking them, with an administrator's token.
func newCluster() *cobra.Command {
	var (
		serverURL, caFile string
		tok               tokenFlags
	)
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Admit clusters to the control plane (one-time join tokens), list them, revoke them",
		Long: `Manage the clusters of a control plane. "add" admits a cluster and prints a
one-time join token; a component of that cluster (trellis controller or
trellis proxy with --identity-dir and --join-token-file) exchanges it for a
short-lived certificate naming the cluster, renewed before it expires.
"set" changes the namespaces an admitted cluster may export Services
from (--export-namespaces on "add" sets them first; '*', all, by default)
and the pod network it is in (--pod-network; its own, isolated, by
default).
"remove" revokes the cluster: its certificates stop working within a
second. Adding, setting and removing need an administrator token (trellis server
--admin-tokens-file) from --token, --token-file or TRELLIS_TOKEN.`,
	}
	connect := func() (*client.Client, error) {
		token, err := tok.get()
		if err != nil {
			return nil, err
		}
		return newAPIClient(serverURL, token, caFile, slog.Default())
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&serverURL, "server", "http://127.0.0.1:7070", serverUsage)
	tok.register(pf)
	pf.StringVar(&caFile, "ca-file", "", caFileUsage)

	var ttl time.Duration
	var caOut string
	var addExports, setExports []string
	var addPodNetwork, setPodNetwork string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Admit a cluster and print a one-time join token for it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			req := api.AddClusterRequest{Name: args[0], TokenTTLSeconds: int64(ttl / time.Second)}
			if cmd.Flags().Changed("export-namespaces") {
				req.ExportNamespaces = addExports
			}
			if cmd.Flags().Changed("pod-network") {
				req.PodNetwork = &addPodNetwork
			}
			res, err := c.AdmitCluster(cmd.Context(), req)
			if err != nil {
				return err
			}
			if caOut != "" {
				if err := os.WriteFile(caOut, []byte(res.CA), 0o644); err != nil {
					return fmt.Errorf("--ca-out: %w", err)
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, res.JoinToken)
			fmt.Fprintf(cmd.ErrOrStderr(), "cluster %s admitted; the join token above works once, until %s\n", res.Name, res.Expires.UTC().Format(time.RFC3339))
			if caOut != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "the control plane's CA certificate is in %s: give it to the cluster's components with --ca-file\n", caOut)
			}
			return nil
		},
	}
	add.Flags().DurationVar(&ttl, "token-ttl", time.Hour, "how long the join token stays valid (at most a week)")
	add.Flags().StringVar(&caOut, "ca-out", "", "write the control plane's CA certificate (PEM) here, for the cluster's --ca-file")
	add.Flags().StringSliceVar(&addExports, "export-namespaces", nil, exportNamespacesUsage+" (default *; for a cluster admitted already, replaces its list)")
	add.Flags().StringVar(&addPodNetwork, "pod-network", "", podNetworkUsage+" (for a cluster admitted already, replaces its network)")

	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Change an admitted cluster: the namespaces it may export Services from, its pod network",
		Long: `Change an admitted cluster. --export-namespaces replaces the namespaces the
cluster may export Services from (ServiceExports), or '*' for all. Narrowing
the list takes the cluster's exports outside it out of every cluster's
imports and proxies at once; the cluster's controller marks those
ServiceExports Valid=False, reason NamespaceNotAllowed, and the control
plane refuses their writes. --pod-network declares the flat, routable pod
network the cluster is in ('' for its own, isolated): for a Headless
import whose exporting clusters with ready endpoints are all in the asking
proxy's cluster's network, every proxy of that network answers the
clusterset names with the pods' own addresses rather than its own. Only an
administrator declares it: the clusters of one network put their exported
endpoint addresses in each other's clients' DNS answers.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.SetClusterRequest
			if cmd.Flags().Changed("export-namespaces") {
				req.ExportNamespaces = setExports
			}
			if cmd.Flags().Changed("pod-network") {
				req.PodNetwork = &setPodNetwork
			}
			if req.ExportNamespaces == nil && req.PodNetwork == nil {
				return errors.New("nothing to set: give --export-namespaces or --pod-network")
			}
			c, err := connect()
			if err != nil {
				return err
			}
			res, err := c.SetCluster(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s may export from %s\n", res.Name, strings.Join(res.ExportNamespaces, ","))
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s is in %s\n", res.Name, podNetworkText(res.PodNetwork))
			return nil
		},
	}
	set.Flags().StringSliceVar(&setExports, "export-namespaces", nil, exportNamespacesUsage)
	set.Flags().StringVar(&setPodNetwork, "pod-network", "", podNetworkUsage)

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Revoke a cluster: its certificates stop working, its open streams end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			res, err := c.RemoveCluster(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s removed; %d of its objects deleted\n", args[0], res.Deleted)
			for _, n := range res.Kept {
				fmt.Fprintf(cmd.OutOrStdout(), "network %s kept: other clusters' services still join it\n", n)
			}
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the admitted clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			clusters, err := c.Clusters(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tADDED\tEXPORT NAMESPACES\tPOD NETWORK")
			for _, cl := range clusters {
				exports := strings.Join(cl.ExportNamespaces, ",")
				if exports == "" {
					exports = model.AllNamespaces
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", cl.Name, cl.Added.UTC().Format(time.RFC3339), exports, cmp.Or(cl.PodNetwork, "-"))
			}
			return w.Flush()
		},
	}
	cmd.AddCommand(add, set, remove, list)
	return cmd
}

// podNetworkText says which pod network a cluster is in.
func podNetworkText(name string) string {
	if name == "" {
		return "its own, isolated pod network"
	}
	return "pod network " + name
}
