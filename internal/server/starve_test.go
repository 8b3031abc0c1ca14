package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
	"trellis.dev/trellis/test/testsync"
)

// stallBody starts a request of east's (by bearer token) whose body of
// unknown length stops after its first bytes and never ends, so that the
// server's body budget it reserved stays held; it returns once a small
// write of east's no longer gets through, that is once the budget is
// held. The request ends with the test.
func stallBody(t *testing.T, p *plane.Plane, method, path, first string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots}}
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req, _ := http.NewRequest(method, p.URL()+path, chunked{pr})
	req.Header.Set("Authorization", "Bearer "+tokenA)
	go func() {
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte(first))
	probe := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "PUT", p.URL()+"/v1/servicenetworks/probe", strings.NewReader(padded(10)))
		req.Header.Set("Authorization", "Bearer "+tokenA)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	}
	testsync.WaitFor(t, 10*time.Second, "east's stalled body to hold the body budget", probe)
}

// One cluster's stalled request body holds the server's whole body budget
// (an apply of unknown length reserves all of it): another cluster's
// lease renewals and health reports still go through, since each cluster
// reads those from a budget of its own. On main a renewal waited for the
// stalled body, so that every other cluster's lease lapsed (its targets
// leaving every pick) for as long as one cluster kept a body open.
func TestStalledBodyDoesNotStarveOtherClusters(t *testing.T) {
	p := plane.Start(t, server.Config{Tokens: map[string]string{tokenA: "east"}, MaxRequestBytes: 1 << 20, LeaseDuration: time.Second})
	_, west := p.Join(t, "west")
	stallBody(t, p, "POST", "/v1/apply", `{"objects":{`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := west.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy"})
	if err != nil || !res.Lease.Alive {
		t.Errorf("west's renewal while east holds the body budget: %+v, %v", res, err)
	}
	if err := west.ReportHealth(ctx, api.HealthReport{Holder: "proxy"}); err != nil {
		t.Errorf("west's health report while east holds the body budget: %v", err)
	}
}

// Callers without credentials cannot hold the budget clusters write with:
// join bodies (16 KiB at most, the one call without credentials) come
// from a budget of their own. On main, enough stalled joins held the
// whole shared budget, and every cluster's writes waited.
func TestStalledJoinsDoNotStarveWrites(t *testing.T) {
	p := plane.Start(t, server.Config{Tokens: map[string]string{tokenA: "east"}, MaxRequestBytes: 64 << 10})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	join := func(ctx context.Context, body io.Reader) error {
		req, _ := http.NewRequestWithContext(ctx, "POST", p.URL()+"/v1/join", body)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// Stalled joins of unknown length, 16 KiB reserved each, until another
	// no longer gets through: at least four (the whole shared budget).
	stalled := 0
	testsync.WaitFor(t, 30*time.Second, "stalled joins to hold the join budget", func() bool {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		go join(context.Background(), chunked{pr})
		pw.Write([]byte(`{"token":`))
		stalled++
		if stalled < 4 {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return join(ctx, chunked{strings.NewReader(`{}`)}) != nil
	})
	// Within less than the stalled bodies' own time (10 s).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := network("harbour")
	if err := p.Client(t, tokenA).Put(ctx, n); err != nil {
		t.Errorf("east's write while %d stalled joins hold their budget: %v", stalled, err)
	}
}

// One cluster at the most health report parts it keeps (128) or the most
// holders (64) takes nothing from another: the bounds are each cluster's,
// and another cluster's reports are kept and read as before.
func TestHealthBoundsArePerCluster(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	for h := range 8 {
		for i := range api.MaxHealthParts {
			if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: fmt.Sprintf("h%d", h), Part: i, Parts: api.MaxHealthParts, Groups: groupsOf("tg", i, 1)}); err != nil {
				t.Fatalf("east's holder h%d part %d: %v", h, i, err)
			}
		}
	}
	for h := 8; h < 64; h++ {
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: fmt.Sprintf("h%d", h)}); err == nil {
			t.Fatalf("east's holder h%d kept past the bound of 128 parts", h)
		}
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "more"}); apiStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("east past its bounds: %v, want 429", err)
	}
	for h := range 8 {
		if err := west.ReportHealth(ctx, api.HealthReport{Holder: fmt.Sprintf("h%d", h), Part: 0, Parts: 2, Groups: []api.GroupHealth{healthOf("tg-1", "10.0.0.1:80", "HEALTHY")}}); err != nil {
			t.Fatalf("west's holder h%d while east is at its bounds: %v", h, err)
		}
	}
	got, err := server.New(p.Store, server.Config{}).TargetHealth(ctx, "west")
	if err != nil || len(got) != 1 || got["tg-1"]["10.0.0.1:80"] != "HEALTHY" {
		t.Errorf("TargetHealth(west) = %v, %v; want west's own report alone", got, err)
	}
}
