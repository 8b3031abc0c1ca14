package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/teststore"
	"trellis.dev/trellis/test/testsync"
)

// healthGroups is n target groups, tg-00000 on, one target each of status.
func healthGroups(from, n int, status string) []api.GroupHealth {
	out := make([]api.GroupHealth, n)
	for i := range out {
		j := from + i
		out[i] = api.GroupHealth{TargetGroup: fmt.Sprintf("tg-%05d", j),
			Targets: []api.TargetHealth{{Address: fmt.Sprintf("10.%d.%d.1:80", j>>8, j&255), Status: status}}}
	}
	return out
}

// eastOf serves h for the test and returns a client of it with east's
// token.
func eastOf(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	east, err := client.New(hs.URL, tokenA, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return east
}

// KeepHealthReported sends a report in parts, each part when it changes:
// 2,500 target groups in 3 parts all reach TargetHealth; a change of the
// last part sends it alone; back to one part, the others stop counting.
func TestKeepHealthReportedInParts(t *testing.T) {
	st := teststore.Bolt(t)
	east := eastOf(t, serve(st))
	ctx := t.Context()
	srv := server.New(st, server.Config{}) // reads what hs keeps

	var mu sync.Mutex
	parts := [][]api.GroupHealth{healthGroups(0, 1000, "HEALTHY"), healthGroups(1000, 1000, "HEALTHY"), healthGroups(2000, 500, "HEALTHY")}
	set := func(p [][]api.GroupHealth) { mu.Lock(); parts = p; mu.Unlock() }
	go client.KeepHealthReported(ctx, east, "proxy-a", func() [][]api.GroupHealth { mu.Lock(); defer mu.Unlock(); return parts }, slog.New(slog.DiscardHandler))

	health := func() map[string]map[string]string {
		t.Helper()
		got, err := srv.TargetHealth(ctx, "east")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	testsync.WaitFor(t, 10*time.Second, "2,500 groups in TargetHealth", func() bool { return len(health()) == 2500 })
	stamps := func() map[string]int64 {
		t.Helper()
		kvs, _, err := st.List(ctx, "healthat/east/")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, kv := range kvs {
			out[kv.Key] = kv.ModRevision
		}
		return out
	}
	before := stamps()
	if len(before) != 3 {
		t.Fatalf("stamps %v, want 3", before)
	}

	set([][]api.GroupHealth{parts[0], parts[1], healthGroups(2000, 500, "UNHEALTHY")})
	testsync.WaitFor(t, 10*time.Second, "the last part's change in TargetHealth", func() bool { return health()["tg-02499"]["10.9.195.1:80"] == "UNHEALTHY" })
	after := stamps()
	for _, key := range []string{"healthat/east/proxy-a", "healthat/east/proxy-a/1"} {
		if after[key] != before[key] {
			t.Errorf("%s sent again (revision %d, was %d) though its part did not change", key, after[key], before[key])
		}
	}
	if after["healthat/east/proxy-a/2"] == before["healthat/east/proxy-a/2"] {
		t.Error("the changed part's stamp did not move")
	}

	set([][]api.GroupHealth{healthGroups(0, 10, "HEALTHY")})
	testsync.WaitFor(t, 10*time.Second, "only the one part in TargetHealth", func() bool { return len(health()) == 10 })
	if got := stamps(); len(got) != 1 {
		t.Errorf("stamps after one part: %v, want proxy-a's only", got)
	}
	if kvs, _, err := st.List(ctx, "health/east/"); err != nil || len(kvs) != 1 {
		t.Errorf("%d records after one part, want 1 (%v)", len(kvs), err)
	}
}

// healthReports wraps h so that each health report's body is handed to
// report first, with the request's body still to be read by h; report
// answers it itself by returning false. Other requests go to h.
func healthReports(h http.Handler, report func(w http.ResponseWriter, r *http.Request, body []byte) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health" {
			h.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if report(w, r, body) {
			h.ServeHTTP(w, r)
		}
	})
}

// slowPart wraps h so that the health reports of part 1 are answered
// only after delay (or when the request ends) with what answer(w) writes,
// or by h when answer is nil; the others go to h at once. seen counts
// part 1's reports.
func slowPart(h http.Handler, delay time.Duration, answer func(http.ResponseWriter), seen *atomic.Int64) http.Handler {
	return healthReports(h, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		var part struct{ Part int }
		if json.Unmarshal(body, &part) == nil && part.Part == 1 {
			seen.Add(1)
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return false
			}
			if answer != nil {
				answer(w)
				return false
			}
		}
		return true
	})
}

// Each part of a report is a call of its own, bounded by its own timeout:
// a part the server takes 2.5 s to keep (over the 2 s that once bounded
// all parts together) is kept, and a part the server never answers does
// not keep the parts after it from being kept. Both fail on the code
// before, which bounded one look's parts by 2 s in all and stopped at the
// first failed part.
func TestKeepHealthReportedPartByPart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delay  time.Duration
		answer func(http.ResponseWriter)
		want   int // groups in TargetHealth
	}{
		{"part 1 takes 2.5 s", 2500 * time.Millisecond, nil, 3000},
		{"part 1 refused", 0, func(w http.ResponseWriter) { http.Error(w, "busy", http.StatusServiceUnavailable) }, 2000},
		{"part 1 never answered", time.Hour, nil, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := teststore.Bolt(t)
			var seen atomic.Int64
			east := eastOf(t, slowPart(serve(st), tc.delay, tc.answer, &seen))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// Part 1 has 10,000 targets, as the proxy's parts at scale.
			slow := healthGroups(1000, 1000, "HEALTHY")
			for i := range slow {
				for j := range 9 {
					slow[i].Targets = append(slow[i].Targets, api.TargetHealth{Address: fmt.Sprintf("10.%d.%d.%d:80", 100+i>>8, i&255, 2+j), Status: "HEALTHY"})
				}
			}
			parts := [][]api.GroupHealth{healthGroups(0, 1000, "HEALTHY"), slow, healthGroups(2000, 1000, "HEALTHY")}
			done := make(chan struct{})
			go func() {
				defer close(done)
				client.KeepHealthReported(ctx, east, "proxy-a", func() [][]api.GroupHealth { return parts }, slog.New(slog.DiscardHandler))
			}()
			srv := server.New(st, server.Config{})
			testsync.WaitFor(t, 20*time.Second, fmt.Sprintf("%d groups in TargetHealth", tc.want), func() bool {
				got, err := srv.TargetHealth(ctx, "east")
				if err != nil {
					t.Fatal(err)
				}
				return len(got) == tc.want && seen.Load() > 0
			})
			cancel()
			<-done
		})
	}
}

// bodies wraps h to count the bytes of the health reports it is sent, and
// answers a report by digest 400 when old (as a server before digests
// does: an unknown field).
func bodies(h http.Handler, old bool, sent *atomic.Int64, byDigest *atomic.Int64) http.Handler {
	return healthReports(h, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		sent.Add(int64(len(body)))
		if bytes.Contains(body, []byte(`"digest"`)) {
			byDigest.Add(1)
			if old {
				http.Error(w, `{"message":"unknown field \"digest\""}`, http.StatusBadRequest)
				return false
			}
		}
		return true
	})
}

// An unchanged report is refreshed every 10 s by its parts' digests: a
// few hundred bytes, not the parts again, and the records stay as they
// were; against a server that refuses reports by digest, the parts are
// sent whole instead and still kept.
func TestKeepHealthReportedRefreshByDigest(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("old server %v", old), func(t *testing.T) {
			t.Parallel()
			st := teststore.Bolt(t)
			var sent, byDigest atomic.Int64
			east := eastOf(t, bodies(serve(st), old, &sent, &byDigest))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			parts := [][]api.GroupHealth{healthGroups(0, 1000, "HEALTHY"), healthGroups(1000, 1000, "HEALTHY")}
			done := make(chan struct{})
			go func() {
				defer close(done)
				client.KeepHealthReported(ctx, east, "proxy-a", func() [][]api.GroupHealth { return parts }, slog.New(slog.DiscardHandler))
			}()
			revs := func() (records, stamps []int64) {
				for _, prefix := range []string{"health/east/", "healthat/east/"} {
					kvs, _, err := st.List(t.Context(), prefix)
					if err != nil {
						t.Fatal(err)
					}
					for _, kv := range kvs {
						if prefix == "health/east/" {
							records = append(records, kv.ModRevision)
						} else {
							stamps = append(stamps, kv.ModRevision)
						}
					}
				}
				return records, stamps
			}
			testsync.WaitFor(t, 10*time.Second, "both parts kept", func() bool { r, _ := revs(); return len(r) == 2 })
			records, stamps := revs()
			first := sent.Load()
			testsync.WaitFor(t, 20*time.Second, "both parts refreshed", func() bool {
				_, s := revs()
				return len(s) == 2 && s[0] != stamps[0] && s[1] != stamps[1]
			})
			cancel()
			<-done
			again := sent.Load() - first
			if r, _ := revs(); fmt.Sprint(r) != fmt.Sprint(records) {
				t.Errorf("records at %v after the refresh, were at %v: rewritten though unchanged", r, records)
			}
			if byDigest.Load() < 2 {
				t.Errorf("%d reports by digest, want one a part", byDigest.Load())
			}
			if !old && again > 1000 {
				t.Errorf("the refresh sent %d bytes (the parts were %d): want the digests alone", again, first)
			}
			if old && again < first {
				t.Errorf("the refresh to a server without digests sent %d bytes, want the parts whole (%d)", again, first)
			}
		})
	}
}
