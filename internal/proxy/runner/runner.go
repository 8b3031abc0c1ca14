// Package runner runs a proxy that follows the control plane: the loop
// `trellis proxy` and `trellis up` share. It starts the proxy's admin
// listener and, when asked, the name server; it applies every snapshot the
// watch stream delivers to both, says on Out which addresses the proxy
// newly listens on, and shuts the proxy down when the stream ends.
//
// It owns that wiring and its progress lines; serving is package proxy's,
// following the stream package client's.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/nameserver"
	"trellis.dev/trellis/internal/proxy"
	"trellis.dev/trellis/internal/proxy/router"
)

// Config configures Run.
type Config struct {
	// Client follows the control plane.
	Client *client.Client
	// Follow sets the watch stream's idle timeout and cache file.
	Follow client.FollowOptions
	// Cluster is the cluster the proxy runs in; Bind the address its
	// listeners bind.
	Cluster, Bind string
	// AccessLog receives the access log; nil turns it off.
	AccessLog io.Writer
	// AdminListen is the address of the admin listener (/metrics,
	// /healthz, /readyz); empty means none.
	AdminListen string
	// DNSListen, when set, serves the service networks' names there,
	// resolving to DNSAnswer (default Bind); see nameserver.Start.
	DNSListen, DNSAnswer string
	// Applied, when set, is called after each snapshot is applied, with
	// the addresses the proxy serves.
	Applied func(snap *model.Snapshot, addrs map[router.Bind]string)
	// Out receives progress lines meant for a person.
	Out    io.Writer
	Logger *slog.Logger
}

// shutdownTimeout bounds the proxy's graceful shutdown.
const shutdownTimeout = 10 * time.Second

// Run serves until ctx ends (then it returns nil) or the watch stream
// fails for good.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	px := proxy.New(proxy.Config{Cluster: cfg.Cluster, BindAddress: cfg.Bind, Logger: log, AccessLog: cfg.AccessLog, AdminAddress: cfg.AdminListen})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		px.Shutdown(sctx)
	}()
	if cfg.AdminListen != "" {
		addr, err := px.ListenAdmin()
		if err != nil {
			return err
		}
		fmt.Fprintf(cfg.Out, "proxy: metrics and health on http://%s (/metrics, /healthz, /readyz)\n", addr)
	}
	var names *nameserver.Server
	if cfg.DNSListen != "" {
		var err error
		if names, err = nameserver.Start(cfg.DNSListen, cfg.DNSAnswer, cfg.Bind, log, cfg.Out); err != nil {
			return err
		}
		defer names.Close()
	}
	known := map[router.Bind]string{}
	err := cfg.Client.Follow(ctx, cfg.Follow, func(snap *model.Snapshot) {
		if err := px.Update(snap); err != nil {
			log.Error("configuration not fully applied", "revision", snap.Revision, "err", err)
		}
		if names != nil {
			names.Update(snap)
		}
		addrs := px.Addrs()
		for _, b := range slices.SortedFunc(maps.Keys(addrs), router.CompareBinds) {
			if addr := addrs[b]; known[b] != addr {
				fmt.Fprintf(cfg.Out, "proxy: listening on %s\n", addr)
			}
		}
		known = addrs
		log.Info("configuration applied", "revision", px.Revision())
		if cfg.Applied != nil {
			cfg.Applied(snap, addrs)
		}
	})
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}
