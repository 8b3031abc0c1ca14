package client

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"trellis.dev/trellis/internal/api"
)

// RenewLease renews the lease of the cluster the client's certificate
// names, with the holder's peer report when r carries one.
func (c *Client) RenewLease(ctx context.Context, r api.LeaseRenewal) (api.LeaseRenewed, error) {
	var res api.LeaseRenewed
	err := c.do(ctx, http.MethodPost, "/v1/lease", nil, r, &res)
	return res, err
}

// Leases reads every admitted cluster's lease, as the server judges it now.
func (c *Client) Leases(ctx context.Context) ([]api.Lease, error) {
	var res api.Leases
	err := c.do(ctx, http.MethodGet, "/v1/leases", nil, nil, &res)
	return res.Leases, err
}

// Lease renewal pacing, until the server says otherwise.
const (
	defaultRenewEvery = time.Second
	minRenewEvery     = 100 * time.Millisecond
	maxRenewEvery     = 10 * time.Second
	// callTimeout bounds one renewal or one lease read.
	callTimeout = 2 * time.Second
)

// KeepLease renews the cluster's lease as holder until ctx ends, as often
// as the server asks. When report is not nil it is called about as often
// as the server keeps reports, and its peers go with that renewal. A
// failed renewal is logged (once until one succeeds again) and retried at
// the next tick: the lease outlives a few.
func KeepLease(ctx context.Context, c *Client, holder string, report func() []api.PeerReport, log *slog.Logger) {
	every, reportEvery := defaultRenewEvery, time.Duration(0)
	var lastReport time.Time
	log = log.With("holder", holder)
	repeat(ctx, log, "cluster lease not renewed; retrying", "cluster lease renewed again", func() time.Duration { return every }, func(ctx context.Context) error {
		req := api.LeaseRenewal{Holder: holder}
		if report != nil && reportEvery > 0 && time.Since(lastReport) >= reportEvery {
			req.Peers = report()
			if req.Peers == nil {
				req.Peers = []api.PeerReport{}
			}
			lastReport = time.Now()
		}
		res, err := c.RenewLease(ctx, req)
		if err != nil {
			return err
		}
		if d := time.Duration(res.RenewEveryMillis) * time.Millisecond; d > 0 {
			every = min(max(d, minRenewEvery), maxRenewEvery)
		}
		reportEvery = time.Duration(res.ReportEveryMillis) * time.Millisecond
		return nil
	})
}

// FollowLeases reads the leases every interval until ctx ends and hands
// each answer to apply. A read that fails hands nothing: the caller keeps
// what it last had (a control plane out of reach lapses no lease).
func FollowLeases(ctx context.Context, c *Client, interval time.Duration, apply func([]api.Lease), log *slog.Logger) {
	repeat(ctx, log, "cluster leases not read; keeping the last ones", "", func() time.Duration { return interval }, func(ctx context.Context) error {
		leases, err := c.Leases(ctx)
		if err == nil {
			apply(leases)
		}
		return err
	})
}

// repeat calls call until ctx ends, each call bounded by callTimeout, and
// waits next() between calls. A failed call is logged as failed, once
// until a call succeeds again, which is logged as recovered unless that
// is empty.
func repeat(ctx context.Context, log *slog.Logger, failed, recovered string, next func() time.Duration, call func(context.Context) error) {
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := call(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				log.Warn(failed, "err", err)
			}
			failing = true
		default:
			if failing && recovered != "" {
				log.Info(recovered)
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next()):
		}
	}
}

// ReportHealth sends the holder's view of its cluster's targets.
func (c *Client) ReportHealth(ctx context.Context, r api.HealthReport) error {
	return c.do(ctx, http.MethodPost, "/v1/health", nil, r, &api.HealthReported{})
}

// Pacing of health reports: looked at every healthLook, sent when
// changed, and at least every healthRefresh so that the server keeps it
// fresh (it counts a report for 30 s).
const (
	healthLook    = time.Second
	healthRefresh = 10 * time.Second
)

// KeepHealthReported reports report's health of the cluster's targets as
// holder until ctx ends. report gives the report in parts, each within
// one report's bounds (at most api.MaxHealthParts; none is one empty
// part); each part is sent within about a second of its change, all of
// them when their count changes (part 0 first: the server then drops the
// parts past the count), and each every healthRefresh when nothing
// changes. A failed report is logged (once until one succeeds again) and
// sent again a second later, with the parts not sent yet.
func KeepHealthReported(ctx context.Context, c *Client, holder string, report func() [][]api.GroupHealth, log *slog.Logger) {
	type sentPart struct {
		groups []api.GroupHealth
		parts  int
		at     time.Time
	}
	var sent []sentPart
	log = log.With("holder", holder)
	repeat(ctx, log, "target health not reported; retrying", "target health reported again", func() time.Duration { return healthLook }, func(ctx context.Context) error {
		parts := report()
		if len(parts) == 0 {
			parts = [][]api.GroupHealth{{}}
		}
		for i, groups := range parts {
			if groups == nil {
				groups = []api.GroupHealth{}
			}
			if i < len(sent) && sent[i].parts == len(parts) && !sent[i].at.IsZero() && time.Since(sent[i].at) < healthRefresh &&
				slices.EqualFunc(groups, sent[i].groups, func(a, b api.GroupHealth) bool {
					return a.TargetGroup == b.TargetGroup && slices.Equal(a.Targets, b.Targets)
				}) {
				continue
			}
			r := api.HealthReport{Holder: holder, Groups: groups}
			if len(parts) > 1 {
				r.Part, r.Parts = i, len(parts)
			}
			if err := c.ReportHealth(ctx, r); err != nil {
				return err
			}
			if i >= len(sent) {
				sent = append(sent, make([]sentPart, i+1-len(sent))...)
			}
			sent[i] = sentPart{groups: groups, parts: len(parts), at: time.Now()}
		}
		sent = sent[:min(len(sent), len(parts))]
		return nil
	})
}
