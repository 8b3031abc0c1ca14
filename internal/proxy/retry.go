package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"trellis.dev/trellis/internal/proxy/router"
)

// replayBody is a request body read ahead by bufferBody.
type replayBody struct {
	data []byte
	// ok is true when data is the whole body (or there is none), so that
	// the request can be sent again.
	ok bool
}

// reader returns a fresh reader of the body, or nil when there is none.
func (b *replayBody) reader() io.ReadCloser {
	if len(b.data) == 0 {
		return nil
	}
	return io.NopCloser(bytes.NewReader(b.data))
}

// bufferBody reads r's body ahead, up to maxReplayBody, and replaces it with
// what it read followed by whatever is left.
func bufferBody(r *http.Request) *replayBody {
	if r.Body == nil || r.Body == http.NoBody {
		return &replayBody{ok: true}
	}
	if r.ContentLength > maxReplayBody {
		return &replayBody{}
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxReplayBody+1))
	switch {
	case err != nil:
		// The client failed mid-body: forward what came and the failure.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), errReader{err}))
		return &replayBody{}
	case len(data) > maxReplayBody:
		r.Body = readCloser{io.MultiReader(bytes.NewReader(data), r.Body), r.Body}
		return &replayBody{}
	}
	b := &replayBody{data: data, ok: true}
	r.ContentLength = int64(len(data))
	if len(data) == 0 {
		r.Body = http.NoBody
	} else {
		r.Body = b.reader()
	}
	r.GetBody = func() (io.ReadCloser, error) {
		if rc := b.reader(); rc != nil {
			return rc, nil
		}
		return http.NoBody, nil
	}
	return b
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type readCloser struct {
	io.Reader
	io.Closer
}

// planKey is the request context key of an *attemptPlan.
type planKey struct{}

// attemptPlan tells retryingTransport how to send one forwarded request:
// with a timeout per attempt and, when the body can be replayed, retries on
// further picks from the same target group.
type attemptPlan struct {
	group          *router.Group
	retry          *router.RetryPolicy
	backendTimeout time.Duration
	// body is the request body read ahead, nil when it was not (no retry
	// policy): then only a request without a body can be sent again.
	body *replayBody
}

// replayable reports whether req can be sent again: its body was read
// ahead whole, or it has none.
func (plan *attemptPlan) replayable(req *http.Request) bool {
	if plan.body != nil {
		return plan.body.ok
	}
	return req.Body == nil || req.Body == http.NoBody
}

// maxUnsent bounds the further picks of one request after attempts that
// reached no target (hopUnsent): one per cluster that might be down,
// without waiting for the peer hop's probes to say so.
const maxUnsent = 3

// errBackendTimeout is the cause of an attempt that ran out of time.
var errBackendTimeout = errors.New("backend request timeout")

// retryingTransport carries out a request's attemptPlan, if it has one, on
// base. It sits under the reverse proxy, so every attempt gets the same
// outbound request (headers, rewrites) and only the response of the last
// attempt reaches the client.
//
// Two kinds of failure pick another target of the plan's group (any
// cluster's, local or through the peer hop): a failure the route's retry
// policy retries, up to its attempts, after its backoff; and, whether or
// not the route has a policy, an attempt that reached no target (the peer
// hop could not connect, or the peer refused before delivering), at once
// and up to maxUnsent times, when the request can be replayed.
type retryingTransport struct {
	base http.RoundTripper
}

func (rt retryingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	plan, _ := req.Context().Value(planKey{}).(*attemptPlan)
	if plan == nil {
		return rt.base.RoundTrip(req)
	}
	retries := 0
	if plan.retry != nil && plan.body != nil && plan.body.ok && req.Header.Get("Upgrade") == "" {
		retries = plan.retry.Attempts
	}
	parent := req.Context()
	unsent := 0
	for attempt := 0; ; {
		resp, err := rt.attempt(req, plan)
		if err != nil && unsent < maxUnsent && parent.Err() == nil && unsentByHop(err) && plan.replayable(req) {
			unsent++
			req = nextAttempt(req, plan)
			continue
		}
		if attempt == retries || parent.Err() != nil || err == nil && !plan.retry.RetriesStatus(resp.StatusCode) {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
			resp.Body.Close()
		}
		if !sleep(parent, backoff(plan.retry.Backoff, attempt)) {
			return nil, context.Cause(parent)
		}
		attempt++
		req = nextAttempt(req, plan)
	}
}

// attempt sends req once, bounded by the plan's backend timeout until the
// response body is closed. Upgrades are not bounded: their response never
// ends while the connection lives.
func (rt retryingTransport) attempt(req *http.Request, plan *attemptPlan) (*http.Response, error) {
	if plan.backendTimeout <= 0 || req.Header.Get("Upgrade") != "" {
		return rt.base.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), plan.backendTimeout, errBackendTimeout)
	resp, err := rt.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if context.Cause(ctx) == errBackendTimeout && req.Context().Err() == nil {
			err = fmt.Errorf("%w of %v: %w", errBackendTimeout, plan.backendTimeout, err)
		}
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// nextAttempt returns req aimed at another pick of the plan's group, with a
// fresh copy of the body: a target of any cluster, this proxy's or another
// reached through the peer hop (the pick passes over clusters that cannot
// be reached). It keeps req's target when the group offers no other.
func nextAttempt(req *http.Request, plan *attemptPlan) *http.Request {
	cur, _ := req.Context().Value(targetKey{}).(*router.Target)
	t := cur
	for range 3 {
		if next := plan.group.Pick(); next != nil {
			t = next
			if cur == nil || next.Addr != cur.Addr || next.Cluster != cur.Cluster {
				break
			}
		}
	}
	ctx := req.Context()
	if t != cur {
		ctx = context.WithValue(ctx, targetKey{}, t)
		if x := exchangeOf(req); x != nil {
			// The transport runs on the request's goroutine, which owns x.
			x.target = t
		}
	}
	out := req.WithContext(ctx)
	u := *req.URL
	if t != nil {
		u.Host = t.Addr
	}
	out.URL = &u
	if plan.body != nil {
		out.Body = plan.body.reader()
	}
	return out
}

// backoff is the wait before retry number attempt+1: the policy's least
// backoff doubled per earlier retry, at most ten times it, plus up to half
// again of jitter.
func backoff(least time.Duration, attempt int) time.Duration {
	d := min(least<<min(attempt, 10), 10*least)
	return d + rand.N(d/2+1)
}

// sleep waits d or until ctx ends, reporting whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
