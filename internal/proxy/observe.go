package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/internal/proxy/router"
)

// observability is the part of a Proxy that watches traffic rather than
// routes it: target health, metrics, the access log and the admin listener.
type observability struct {
	health    *health.Checker
	metrics   *metrics
	accessLog *accesslog.Logger
	limits    limits
	// ready is set by the first Update that programs a route table and
	// cleared when Shutdown starts; /readyz reports it.
	ready        atomic.Bool
	adminAddress string
	// healthFrom is what health last followed: a snapshot's target
	// groups and its LocalFirst imports' local targets. Update's lock
	// guards it.
	healthFrom struct {
		set        bool
		groups     []model.TargetGroup
		localFirst []model.TargetGroup
	}
	// targetMetrics is Config.TargetMetrics.
	targetMetrics bool
	admin         *adminServer
	// sinks are the access-log sinks the configuration names.
	sinks *sinks
}

// initObservability sets up health, metrics and the access log; New calls
// it once the rest of p is built.
func (p *Proxy) initObservability(cfg Config) {
	p.health = health.New(health.Config{
		Cluster: cfg.Cluster, Logger: p.log, Outlier: cfg.test.outlier, Second: cfg.test.healthSecond,
	})
	p.targetMetrics = cfg.TargetMetrics
	p.metrics = newMetrics(p)
	if cfg.AccessLog != nil {
		opts := cfg.test.accessLog
		opts.Logger = p.log
		p.accessLog = accesslog.New(cfg.AccessLog, opts)
	}
	p.sinks = &sinks{dir: cfg.AccessLogDir, log: p.log}
	p.limits = newLimits(cfg)
	p.adminAddress = cfg.AdminAddress
	p.compiler.Hooks = router.CompileHooks{Health: p.health.Group, Annotate: p.metrics.annotate, Forget: p.metrics.forget, Cluster: p.cluster, Reachable: p.clusterReachable}
}

// closeObservability stops the health checks, writes out the access log
// and closes the admin listener; Shutdown calls it last.
func (p *Proxy) closeObservability(ctx context.Context) error {
	p.health.Close()
	p.sinks.closeAll(ctx)
	var errs []error
	if p.accessLog != nil {
		if err := p.accessLog.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("access log: %w", err))
		}
	}
	if p.admin != nil {
		p.admin.close()
	}
	return errors.Join(errs...)
}

// observeAttempts sits under the reverse proxy (and its retries) and sees
// every attempt sent to a target: it times the last one for the access log
// and reports each outcome to the target's health for outlier ejection.
type observeAttempts struct{ base http.RoundTripper }

func (o observeAttempts) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	h := attemptHealth(ctx, req.URL.Host)
	sent := time.Now()
	resp, err := o.base.RoundTrip(req)
	if x, _ := ctx.Value(exchangeKey{}).(*exchange); x != nil {
		x.attemptAddr, x.sent, x.answered = req.URL.Host, sent, time.Now()
	}
	switch {
	case err != nil:
		// Only the target's faults count against it: not a client that
		// went away, nor its body.
		if _, reason := forwardFailure(err, false, errors.Is(ctx.Err(), context.Canceled)); targetFault(reason) {
			h.Observe(false)
		}
	default:
		h.Observe(resp.StatusCode < 500)
	}
	return resp, err
}

// attemptHealth returns the health of the target at addr: the target the
// request was forwarded to, or another of its group that a retry picked.
func attemptHealth(ctx context.Context, addr string) *health.Target {
	t, _ := ctx.Value(targetKey{}).(*router.Target)
	if t == nil || t.Health == nil {
		return nil
	}
	if t.Addr == addr {
		return t.Health
	}
	return t.Health.Group().Target(addr)
}

// compile brings target health up to snap's target groups and compiles
// snap, annotating its rules with their metrics. Health goes first because
// the table links to it; if compilation then fails, the table serving
// keeps the health objects it links to, frozen for targets that are gone.
func (p *Proxy) compile(snap *model.Snapshot) (*router.Table, error) {
	if snap != nil {
		// The checker follows the target groups only when they changed:
		// a list the last snapshot had too is unchanged (model.SameList).
		lf := router.LocalFirstHealth(snap, p.cluster)
		if !p.healthFrom.set || !model.SameList(p.healthFrom.groups, snap.TargetGroups) || !reflect.DeepEqual(p.healthFrom.localFirst, lf) {
			tgs := localTargets(snap.TargetGroups, p.cluster)
			if len(lf) > 0 {
				tgs = slices.Concat(tgs, lf)
			}
			p.health.Update(tgs)
			p.healthFrom.set, p.healthFrom.groups, p.healthFrom.localFirst = true, snap.TargetGroups, lf
		}
	}
	p.metrics.beginCompile()
	t, err := p.compiler.Compile(snap)
	if err != nil {
		p.metrics.compileFailed()
		return nil, err
	}
	p.metrics.compiled()
	return t, nil
}

// programmed records that t serves, its snapshot having arrived at
// received, and makes the proxy ready.
func (p *Proxy) programmed(t *router.Table, received time.Time) {
	p.metrics.programmedTable(t.Revision(), time.Since(received))
	p.ready.Store(true)
}

// localTargets is tgs with only the targets in cluster: this proxy checks
// the health of those alone. It cannot dial another cluster's addresses
// (they are in that cluster's network, and may be in use in its own), so
// another cluster's targets are judged by the peer hop's outcomes. When
// every target is in cluster it is tgs itself, not a copy.
func localTargets(tgs []model.TargetGroup, cluster string) []model.TargetGroup {
	foreign := func(t model.Target) bool { return t.Cluster != cluster }
	first := slices.IndexFunc(tgs, func(tg model.TargetGroup) bool { return slices.ContainsFunc(tg.Targets, foreign) })
	if first < 0 {
		return tgs
	}
	out := append(make([]model.TargetGroup, 0, len(tgs)), tgs[:first]...)
	for _, tg := range tgs[first:] {
		if slices.ContainsFunc(tg.Targets, foreign) {
			tg.Targets = slices.DeleteFunc(slices.Clone(tg.Targets), foreign)
		}
		out = append(out, tg)
	}
	return out
}

// HoldChecks keeps the health checks from starting new checks until
// release, for at most health.DefaultMaxHold (health.Checker.Hold), so
// that a configuration change under way has the CPU first.
func (p *Proxy) HoldChecks() (release func()) { return p.health.Hold() }

// HealthGeneration returns a number that moves whenever TargetHealth may
// have changed, so that a caller that polls it builds it only then.
func (p *Proxy) HealthGeneration() uint64 { return p.health.Generation() }

// TargetHealth is the health of this proxy's cluster's targets by target
// group, as its active checks see them: the target groups of the
// configuration only, not the groups it makes itself for local-first
// imports (whose names have a '/').
func (p *Proxy) TargetHealth() []health.GroupReport {
	return slices.DeleteFunc(p.health.Report(), func(g health.GroupReport) bool { return strings.Contains(g.Name, "/") })
}
