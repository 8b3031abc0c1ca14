package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/nameserver"
	"trellis.dev/trellis/internal/proxy"
	"trellis.dev/trellis/internal/proxy/router"
)

func newProxy() *cobra.Command {
	var (
		serverURL, token, cluster, bind string
		cacheFile, caFile               string
		accessLog, adminListen          string
		dnsListen, dnsAnswer            string
		idle                            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "proxy --server URL --cluster NAME",
		Short: "Run a proxy that follows the control plane's configuration",
		Long: `Run a proxy. It follows the control plane's watch stream, compiles each
configuration revision into a route table and serves it. While the control
plane is unreachable it keeps serving the last configuration and reconnects
with backoff. The token comes from --token or the TRELLIS_TOKEN variable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("TRELLIS_TOKEN")
			}
			if token == "" {
				return errors.New("no token: give --token or set TRELLIS_TOKEN")
			}
			log := slog.Default()
			cl, err := newAPIClient(serverURL, token, caFile, log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			logOut, closeLog, err := openAccessLog(accessLog, out)
			if err != nil {
				return err
			}
			defer closeLog()
			px := proxy.New(proxy.Config{Cluster: cluster, BindAddress: bind, Logger: log, AccessLog: logOut, AdminAddress: adminListen})
			if adminListen != "" {
				addr, err := px.ListenAdmin()
				if err != nil {
					px.Shutdown(context.Background())
					return err
				}
				fmt.Fprintf(out, "proxy: metrics and health on http://%s (/metrics, /healthz, /readyz)\n", addr)
			}
			var names *nameserver.Server
			if dnsListen != "" {
				if names, err = nameserver.Start(dnsListen, dnsAnswer, bind, log, out); err != nil {
					px.Shutdown(context.Background())
					return err
				}
				defer names.Close()
			}
			known := map[router.Bind]string{}
			err = cl.Follow(cmd.Context(), client.FollowOptions{IdleTimeout: idle, CacheFile: cacheFile}, func(snap *model.Snapshot) {
				if err := px.Update(snap); err != nil {
					log.Error("configuration not fully applied", "revision", snap.Revision, "err", err)
				}
				if names != nil {
					names.Update(snap)
				}
				addrs := px.Addrs()
				for _, b := range slices.SortedFunc(maps.Keys(addrs), router.CompareBinds) {
					if addr := addrs[b]; known[b] != addr {
						fmt.Fprintf(out, "proxy: listening on %s\n", addr)
					}
				}
				known = addrs
				log.Info("configuration applied", "revision", px.Revision())
			})
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			px.Shutdown(sctx)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&serverURL, "server", "http://127.0.0.1:7070", serverUsage)
	f.StringVar(&token, "token", "", "bearer token (default $TRELLIS_TOKEN)")
	f.StringVar(&caFile, "ca-file", "", caFileUsage)
	f.StringVar(&cluster, "cluster", "", "name of the cluster this proxy runs in (required)")
	f.StringVar(&bind, "bind", "127.0.0.1", "address the listeners bind")
	f.DurationVar(&idle, "idle-timeout", 35*time.Second, "reconnect when the stream is silent this long")
	f.StringVar(&cacheFile, "cache", "", "file keeping the last configuration, served at start while the control plane is unreachable")
	f.StringVar(&accessLog, "access-log", "", accessLogUsage)
	f.StringVar(&adminListen, "admin-listen", defaultAdminListen, adminListenUsage)
	f.StringVar(&dnsListen, "dns-listen", "", dnsListenUsage)
	f.StringVar(&dnsAnswer, "dns-answer", "", dnsAnswerUsage)
	cmd.MarkFlagRequired("cluster")
	return cmd
}
