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
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/nameserver"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/proxy"
	"trellis.dev/trellis/internal/proxy/health"
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
	// AccessLogDir is where the configuration's access-log sinks are
	// written (see proxy.Config.AccessLogDir); empty writes none.
	AccessLogDir string
	// AdminListen is the address of the admin listener (/metrics,
	// /healthz, /readyz); empty means none.
	AdminListen string
	// TargetMetrics exports one health series per target (see
	// proxy.Config.TargetMetrics).
	TargetMetrics bool
	// DNSListen, when set, serves the service networks' names there,
	// resolving to DNSAnswer (default Bind); see nameserver.Start.
	DNSListen, DNSAnswer string
	// Applied, when set, is called after each snapshot is applied, with
	// the addresses the proxy serves.
	Applied func(snap *model.Snapshot, addrs map[router.Bind]string)
	// Limits are the proxy's request limits (zero values: the defaults).
	Limits Limits
	// CheckHold, when set, lets a provider in this process hold the
	// proxy's health checks while a change it saw is on its way.
	CheckHold *CheckHold
	// Peer, when set, serves the peer hop: other clusters' proxies hand
	// requests for this cluster's targets to it, and this proxy hands
	// requests for theirs to them.
	Peer *PeerConfig
	// LeaseHolder, when set, renews the cluster's lease as this holder
	// (Client must authenticate by the cluster's certificate), with a
	// report of the peers this proxy probes when Peer is set.
	LeaseHolder string
	// HealthHolder, when set, reports the health of the cluster's targets
	// as this holder (POST /v1/health; by token or certificate), for the
	// VPC Lattice API's ListTargets.
	HealthHolder string
	// LeasePoll is how often a proxy with Peer set reads the clusters'
	// leases (default DefaultLeasePoll); a lapsed cluster's targets leave
	// its picks.
	LeasePoll time.Duration
	// Out receives progress lines meant for a person.
	Out    io.Writer
	Logger *slog.Logger
}

// Limits are the proxy's limits a command line sets (see proxy.Config).
type Limits struct {
	RequestBodyIdleTimeout, ResponseIdleTimeout time.Duration
	MaxRequestBodyBytes                         int64
	// TLSKeyExchange limits the key exchange groups of HTTPS listeners
	// (proxy.Config.TLSKeyExchange); empty is Go's default.
	TLSKeyExchange []tls.CurveID
}

// PeerConfig configures the peer hop of a proxy.
type PeerConfig struct {
	// Listen is the address of the peer listener (mutual TLS, HTTP/2).
	Listen string
	// Advertise is the address other clusters' proxies reach it at,
	// published as a model.Peer named Name (default: Listen).
	Advertise, Name string
	// Identity is the cluster's certificate, presented to peers; Roots
	// are what peers' certificates must chain to.
	Identity *pki.Identity
	Roots    *x509.CertPool
}

// CheckHold lets a provider in the proxy's process hold the proxy's health
// checks while a configuration change it saw is on its way, from when it
// sees it until the proxy applied a snapshot (or the provider found nothing
// to send), for at most health.DefaultMaxHold: at 10,000 services, the
// checks of 100,000 targets (thousands a second) would otherwise take the
// CPU the change's reading, write and compile need. Before Run's proxy
// exists, and after Run returns, Begin does nothing. The zero value is
// ready to use; it is safe for concurrent use.
type CheckHold struct {
	mu      sync.Mutex
	hold    func() (release func())
	release func()
}

// Begin holds the checks, unless a hold is under way.
func (h *CheckHold) Begin() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold != nil && h.release == nil {
		h.release = h.hold()
	}
}

// End releases the hold under way, if any.
func (h *CheckHold) End() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.release != nil {
		h.release()
		h.release = nil
	}
}

// attach makes Begin hold with hold (nil: Begin does nothing).
func (h *CheckHold) attach(hold func() (release func())) {
	h.mu.Lock()
	h.hold = hold
	h.mu.Unlock()
	if hold == nil {
		h.End()
	}
}

// DefaultLeasePoll is how often a proxy reads the leases: a lapse takes
// at most this long to reach its picks.
const DefaultLeasePoll = 500 * time.Millisecond

// probeTimeout bounds one probe of a peer for the lease's report.
const probeTimeout = time.Second

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
	pcfg := proxy.Config{Cluster: cfg.Cluster, BindAddress: cfg.Bind, Logger: log, AccessLog: cfg.AccessLog, AccessLogDir: cfg.AccessLogDir, AdminAddress: cfg.AdminListen,
		TargetMetrics: cfg.TargetMetrics, RequestBodyIdleTimeout: cfg.Limits.RequestBodyIdleTimeout, ResponseIdleTimeout: cfg.Limits.ResponseIdleTimeout,
		MaxRequestBodyBytes: cfg.Limits.MaxRequestBodyBytes, TLSKeyExchange: cfg.Limits.TLSKeyExchange}
	if cfg.Peer != nil {
		pcfg.Peer = peer.NewClient(cfg.Peer.Identity, cfg.Peer.Roots)
		defer pcfg.Peer.Close()
	}
	px := proxy.New(pcfg)
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
	if cfg.Peer != nil {
		stop, err := servePeers(ctx, cfg, px)
		if err != nil {
			return err
		}
		defer stop()
	}
	var names *nameserver.Server
	if cfg.DNSListen != "" {
		var err error
		if names, err = nameserver.Start(cfg.DNSListen, cfg.DNSAnswer, cfg.Bind, cfg.Cluster, log, cfg.Out); err != nil {
			return err
		}
		defer names.Close()
	}
	if cfg.Peer != nil {
		go client.FollowLeases(ctx, cfg.Client, cmp.Or(cfg.LeasePoll, DefaultLeasePoll), func(leases []api.Lease) {
			lapsed := map[string]bool{}
			for _, l := range leases {
				if !l.Alive {
					lapsed[l.Cluster] = true
				}
			}
			px.SetLapsed(lapsed)
			if names != nil {
				names.SetLapsed(lapsed)
			}
		}, log)
	}
	if cfg.LeaseHolder != "" {
		var report func() []api.PeerReport
		if pcfg.Peer != nil {
			report = func() []api.PeerReport { return probePeers(ctx, pcfg.Peer) }
		}
		go client.KeepLease(ctx, cfg.Client, cfg.LeaseHolder, report, log)
	}
	if cfg.HealthHolder != "" {
		truncated := false
		reports := &healthReports{px: px}
		go client.KeepHealthReported(ctx, cfg.Client, cfg.HealthHolder, func() [][]api.GroupHealth {
			parts, all, fresh := reports.report()
			reported := 0
			for _, p := range parts {
				reported += len(p)
			}
			// Said once each time the report starts or stops being cut.
			if cut := reported < all; fresh && cut != truncated {
				truncated = cut
				if cut {
					log.Warn("target health reported for the first target groups only: a report holds at most api.MaxHealthParts parts of api.MaxHealthGroups groups and api.MaxHealthTargets targets",
						"reported", reported, "groups", all, "maxParts", api.MaxHealthParts, "maxGroups", api.MaxHealthGroups, "maxTargets", api.MaxHealthTargets)
				} else {
					log.Info("target health reported for every target group again", "groups", all)
				}
			}
			return parts
		}, log)
	}
	if cfg.CheckHold != nil {
		cfg.CheckHold.attach(px.HoldChecks)
		defer cfg.CheckHold.attach(nil)
	}
	known := map[router.Bind]string{}
	err := cfg.Client.Follow(ctx, cfg.Follow, func(snap *model.Snapshot) {
		// The compile goes before the checks that fall due meanwhile.
		release := px.HoldChecks()
		err := px.Update(snap)
		release()
		if cfg.CheckHold != nil {
			cfg.CheckHold.End()
		}
		if err != nil {
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

// probePeers probes every peer pc knows, at once, and reports what it
// measured.
func probePeers(ctx context.Context, pc *peer.Client) []api.PeerReport {
	peers := pc.Peers()
	out := make([]api.PeerReport, 0, len(peers))
	results := make(chan api.PeerReport, len(peers))
	for addr, cluster := range peers {
		go func() {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			r := api.PeerReport{Cluster: cluster, Address: addr}
			if rtt, err := pc.Probe(pctx, addr); err == nil {
				r.Reached, r.RTTMicros = true, max(rtt.Microseconds(), 1)
			}
			results <- r
		}()
	}
	for range peers {
		out = append(out, <-results)
	}
	slices.SortFunc(out, func(a, b api.PeerReport) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// servePeers opens the peer listener and publishes its address, retrying
// in the background while the control plane cannot be reached. stop
// closes the listener and withdraws the address.
func servePeers(ctx context.Context, cfg Config, px *proxy.Proxy) (stop func(), _ error) {
	pc, log := cfg.Peer, cfg.Logger
	ln, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		return nil, fmt.Errorf("peer listener: %w", err)
	}
	srv := peer.NewHTTPServer(px.PeerHandler(), log)
	go srv.Serve(tls.NewListener(ln, peer.TLSConfig(pc.Identity, pc.Roots)))
	advertise := cmp.Or(pc.Advertise, ln.Addr().String())
	fmt.Fprintf(cfg.Out, "proxy: peer hop on %s (advertised as %s)\n", ln.Addr(), advertise)
	obj := &model.Peer{Meta: model.Meta{Name: model.PeerName(cfg.Cluster, cmp.Or(pc.Name, "proxy"))}, Address: advertise}
	pctx, cancel := context.WithCancel(ctx)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for {
			put := *obj
			err := cfg.Client.Put(pctx, &put)
			if err == nil {
				log.Info("peer address published", "name", obj.Name, "address", advertise)
				return
			}
			log.Warn("peer address not published yet; retrying", "err", err)
			select {
			case <-pctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	return func() {
		cancel()
		<-published
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		if err := cfg.Client.Delete(dctx, &model.Peer{Meta: model.Meta{Name: obj.Name}}); err != nil && !client.IsNotFound(err) {
			log.Warn("peer address not withdrawn", "name", obj.Name, "err", err)
		}
		sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer scancel()
		srv.Shutdown(sctx)
	}, nil
}

// healthReports makes px's reports of its cluster's targets' health for
// a poller that looks every second: it builds a report (a copy of every
// target's state) only when the health moved since the last, and hands
// the last one on otherwise.
type healthReports struct {
	px    *proxy.Proxy
	built bool
	gen   uint64
	parts [][]api.GroupHealth
	all   int
	// builds counts the reports built.
	builds int
}

// report returns px's health as reported (splitHealth), how many target
// groups px has, and whether the report was built now.
func (r *healthReports) report() (_ [][]api.GroupHealth, all int, fresh bool) {
	// Read before the report: a change while it is built moves it again.
	gen := r.px.HealthGeneration()
	if r.built && gen == r.gen {
		return r.parts, r.all, false
	}
	groups := r.px.TargetHealth()
	r.parts, r.all, r.gen, r.built = splitHealth(groups), len(groups), gen, true
	r.builds++
	return r.parts, r.all, true
}

// splitHealth is the report of groups (sorted by name) in parts, each
// within one report's bounds (api.MaxHealthGroups, api.MaxHealthTargets),
// so that the server never refuses one: the first groups that fit in
// api.MaxHealthParts parts, but for a group with more targets than a
// report holds. No groups are one empty part.
func splitHealth(groups []health.GroupReport) [][]api.GroupHealth {
	parts := [][]api.GroupHealth{make([]api.GroupHealth, 0, min(len(groups), api.MaxHealthGroups))}
	targets := 0
	for i, g := range groups {
		if len(g.Targets) > api.MaxHealthTargets {
			continue // fits in no report
		}
		last := parts[len(parts)-1]
		if len(last) == api.MaxHealthGroups || targets+len(g.Targets) > api.MaxHealthTargets {
			if len(parts) == api.MaxHealthParts {
				break
			}
			parts = append(parts, make([]api.GroupHealth, 0, min(len(groups)-i, api.MaxHealthGroups)))
			last, targets = parts[len(parts)-1], 0
		}
		targets += len(g.Targets)
		gh := api.GroupHealth{TargetGroup: g.Name, Targets: make([]api.TargetHealth, 0, len(g.Targets))}
		for _, t := range g.Targets {
			gh.Targets = append(gh.Targets, api.TargetHealth{Address: t.Addr, Status: t.Status.String()})
		}
		parts[len(parts)-1] = append(last, gh)
	}
	return parts
}
