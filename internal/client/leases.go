package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	repeat(ctx, log, "cluster lease not renewed; retrying", "cluster lease renewed again", callTimeout, func() time.Duration { return every }, func(ctx context.Context) error {
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
	repeat(ctx, log, "cluster leases not read; keeping the last ones", "", callTimeout, func() time.Duration { return interval }, func(ctx context.Context) error {
		leases, err := c.Leases(ctx)
		if err == nil {
			apply(leases)
		}
		return err
	})
}

// repeat calls call until ctx ends, each call bounded by timeout (none
// when 0: the call bounds its own requests), and waits next() between
// calls. A failed call is logged as failed, once until a call succeeds
// again, which is logged as recovered unless that is empty.
func repeat(ctx context.Context, log *slog.Logger, failed, recovered string, timeout time.Duration, next func() time.Duration, call func(context.Context) error) {
	failing := false
	for {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, timeout)
		}
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

// ReportHealth sends the holder's view of its cluster's targets, or a
// part of it.
func (c *Client) ReportHealth(ctx context.Context, r api.HealthReport) error {
	_, err := c.ReportHealthPart(ctx, r)
	return err
}

// ReportHealthPart is ReportHealth, returning the digest the server keeps
// the part with (empty from servers that keep none).
func (c *Client) ReportHealthPart(ctx context.Context, r api.HealthReport) (string, error) {
	var res api.HealthReported
	err := c.do(ctx, http.MethodPost, "/v1/health", nil, r, &res)
	return res.Digest, err
}

// Pacing of health reports: looked at every healthLook, sent when
// changed, and at least every healthRefresh so that the server keeps it
// fresh (it counts a report for 30 s).
const (
	healthLook    = time.Second
	healthRefresh = 10 * time.Second
)

// healthPartTimeout bounds the sending of one part of targets targets:
// callTimeout, and a millisecond for every 4 targets past 2,000, which
// gives a part at the bounds (20,000 targets, up to 2 MiB to encode, send,
// check and store) 6.5 s on a loaded machine, well within the 30 s the
// server counts the part sent before.
func healthPartTimeout(targets int) time.Duration {
	return callTimeout + time.Duration(max(targets-2000, 0))*time.Millisecond/4
}

// KeepHealthReported reports report's health of the cluster's targets as
// holder until ctx ends. report gives the report in parts, each within
// one report's bounds (at most api.MaxHealthParts; none is one empty
// part); each part is sent within about a second of its change, all of
// them when their count changes (part 0 first: the server then drops the
// parts past the count), and each every healthRefresh when nothing
// changes: by the digest the server kept it with when it gave one (a
// few bytes, not the part again), whole when it did not or refuses the
// digest. Each part is sent on its own, bounded by healthPartTimeout: a
// part that fails does not keep the others from being sent. A failed
// part is logged (once until a look sends every part due) and sent again
// a second later. A part report gives must not change once given: the
// same slice is taken to be the same part.
func KeepHealthReported(ctx context.Context, c *Client, holder string, report func() [][]api.GroupHealth, log *slog.Logger) {
	type sentPart struct {
		groups []api.GroupHealth
		parts  int
		at     time.Time
		digest string // the server's, for a refresh of an unchanged part
	}
	var sent []sentPart
	log = log.With("holder", holder)
	repeat(ctx, log, "target health not reported; retrying", "target health reported again", 0, func() time.Duration { return healthLook }, func(ctx context.Context) error {
		parts := report()
		if len(parts) == 0 {
			parts = [][]api.GroupHealth{{}}
		}
		if len(sent) < len(parts) {
			sent = append(sent, make([]sentPart, len(parts)-len(sent))...)
		}
		sent = sent[:len(parts)]
		var failed error
		for i, groups := range parts {
			if groups == nil {
				groups = []api.GroupHealth{}
			}
			last := &sent[i]
			unchanged := last.parts == len(parts) && !last.at.IsZero() && sameGroups(groups, last.groups)
			if unchanged && time.Since(last.at) < healthRefresh {
				continue
			}
			r := api.HealthReport{Holder: holder, Groups: groups}
			if len(parts) > 1 {
				r.Part, r.Parts = i, len(parts)
			}
			targets := 0
			for _, g := range groups {
				targets += len(g.Targets)
			}
			digest, err := reportPart(ctx, c, r, unchanged, last.digest, healthPartTimeout(targets))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				failed = cmp.Or(failed, fmt.Errorf("part %d of %d: %w", i, len(parts), err))
				continue
			}
			*last = sentPart{groups: groups, parts: len(parts), at: time.Now(), digest: digest}
		}
		return failed
	})
}

// reportPart sends r, by digest when the part is unchanged since the
// server gave one, whole otherwise or when the server refuses the digest
// (412; 400 from a server that knows none), each send bounded by timeout.
// It returns the server's digest of the part.
func reportPart(ctx context.Context, c *Client, r api.HealthReport, unchanged bool, digest string, timeout time.Duration) (string, error) {
	if unchanged && digest != "" {
		byDigest := api.HealthReport{Holder: r.Holder, Part: r.Part, Parts: r.Parts, Digest: digest}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := c.ReportHealthPart(cctx, byDigest)
		cancel()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusPreconditionFailed && ae.Status != http.StatusBadRequest {
			return digest, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.ReportHealthPart(cctx, r)
}

// sameGroups reports whether two reports of a part say the same. The
// parts a report gives are not changed once given, so the same slice is
// the same report, known without comparing its targets.
func sameGroups(a, b []api.GroupHealth) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.EqualFunc(a, b, func(a, b api.GroupHealth) bool {
		return a.TargetGroup == b.TargetGroup && slices.Equal(a.Targets, b.Targets)
	})
}
