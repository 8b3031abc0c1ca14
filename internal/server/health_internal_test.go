package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/test/teststore"
)

// BenchmarkKeepHealthPart is the store work of keeping one health report
// part (issue 15) while the cluster keeps 16 other holders' reports of 3
// parts of 1,000 groups each: "stamps" is keepHealthPart, which reads the
// parts' small stamps (and, the part being the same each time, rewrites
// only its stamp); "records" is keepHolderRecord over the same
// records, which decodes every full report (what keeping a report did
// before the stamps), for the A/B.
func BenchmarkKeepHealthPart(b *testing.B) {
	st := teststore.Bolt(b)
	s := New(st, Config{})
	ctx := context.Background()
	base := time.Now()
	ahead := base.Add(24 * time.Hour).UTC() // the others stay fresh while the bench's clock runs
	groups := make([]api.GroupHealth, 1000)
	for i := range groups {
		groups[i] = api.GroupHealth{TargetGroup: fmt.Sprintf("tg-%05d", i), Targets: []api.TargetHealth{{Address: fmt.Sprintf("10.0.%d.%d:8080", i>>8, i&255), Status: "HEALTHY"}}}
	}
	var ops []store.Op
	for h := range 16 {
		for part := range 3 {
			name := partName(fmt.Sprintf("proxy-%d", h), part)
			doc, _ := json.Marshal(reportedRecord{healthRecord{Holder: fmt.Sprintf("proxy-%d", h), Part: part, Parts: 3, Groups: groups}, ahead})
			stamp, _ := json.Marshal(healthStamp{Reported: ahead, Parts: 3})
			ops = append(ops, store.Put(healthPrefix+"east/"+name, doc), store.Put(healthStampPrefix+"east/"+name, stamp))
		}
	}
	if _, err := st.Txn(ctx, ops...); err != nil {
		b.Fatal(err)
	}
	small := &api.HealthReport{Holder: "x", Groups: groups[:1]}
	doc, _ := json.Marshal(reportedRecord{healthRecord{Holder: "x", Groups: small.Groups}, base})
	b.Run("stamps", func(b *testing.B) {
		now := base
		for b.Loop() {
			now = now.Add(2 * healthKeepEvery)
			if _, kept, err := s.keepHealthPart(ctx, "east", small, now); !kept || err != nil {
				b.Fatal(kept, err)
			}
		}
	})
	b.Run("records", func(b *testing.B) {
		now := base
		for b.Loop() {
			now = now.Add(2 * healthKeepEvery)
			if kept, err := s.keepHolderRecord(ctx, healthPrefix+"east/", "x", doc, now, healthKeepEvery, HealthFresh); !kept || err != nil {
				b.Fatal(kept, err)
			}
		}
	})
}

// BenchmarkKeepHealthPartAtScale is the server's work for one part of
// 20,000 targets (1,000 groups of 20, the proxy's part at 100,000
// targets), checked and kept, as a proxy's refresh every 10 s: "changed"
// alternates two contents (the record rewritten each time: what every
// refresh did before digests), "same" sends the same part whole (a proxy
// before digests: only the stamp rewritten), "digest" reports it by its
// digest.
func BenchmarkKeepHealthPartAtScale(b *testing.B) {
	s := New(teststore.Bolt(b), Config{})
	part := func(status string) []api.GroupHealth {
		groups := make([]api.GroupHealth, 1000)
		for i := range groups {
			groups[i] = api.GroupHealth{TargetGroup: fmt.Sprintf("tg-%05d", i)}
			for j := range 20 {
				groups[i].Targets = append(groups[i].Targets, api.TargetHealth{Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>8, i&255, j), Status: status})
			}
		}
		return groups
	}
	contents := [][]api.GroupHealth{part("HEALTHY"), part("UNHEALTHY")}
	var bodies [2][]byte
	for i, c := range contents {
		bodies[i], _ = json.Marshal(api.HealthReport{Holder: "proxy", Part: 1, Parts: 5, Groups: c})
	}
	now := time.Now()
	keep := func(b *testing.B, req api.HealthReport) string {
		now = now.Add(2 * healthKeepEvery)
		if fields := checkHealthReport(&req); len(fields) > 0 {
			b.Fatal(fields)
		}
		d, kept, err := s.keepHealthPart(b.Context(), "east", &req, now)
		if !kept || err != nil {
			b.Fatal(kept, err)
		}
		return d
	}
	for _, mode := range []string{"changed", "same", "digest"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			digest := keep(b, api.HealthReport{Holder: "proxy", Part: 1, Parts: 5, Groups: contents[0]})
			i := 0
			for b.Loop() {
				i++
				switch mode {
				case "changed", "same":
					body := bodies[0]
					if mode == "changed" {
						body = bodies[i%2]
					}
					var req api.HealthReport // decoded, as the server does
					if err := json.Unmarshal(body, &req); err != nil {
						b.Fatal(err)
					}
					keep(b, req)
				case "digest":
					keep(b, api.HealthReport{Holder: "proxy", Part: 1, Parts: 5, Digest: digest})
				}
			}
		})
	}
}

// reportedRecord is a record as keepHolderRecord reads it: with its time.
type reportedRecord struct {
	healthRecord
	Reported time.Time `json:"reported"`
}

// Whatever a reporter sends, a report checkHealthReport passes names a
// part within the bounds, and its record's name gives back its holder
// and part; a report by digest has a digest of the server's form and no
// groups; every address it keeps is canonical, without a zone.
func FuzzHealthReportParts(f *testing.F) {
	f.Add([]byte(`{"holder":"a","part":2,"parts":3,"groups":[]}`))
	f.Add([]byte(`{"holder":"a","groups":[]}`))
	f.Add([]byte(`{"holder":"a","part":1}`))
	f.Add([]byte(`{"holder":"a","part":-1,"parts":17}`))
	f.Add([]byte(`{"holder":"a/1","part":0,"parts":2}`))
	f.Add([]byte(`{"holder":"a","part":1,"parts":2,"digest":"` + strings.Repeat("0f", 32) + `"}`))
	f.Add([]byte(`{"holder":"a","digest":"x","groups":[]}`))
	f.Add([]byte(`{"holder":"a","groups":[{"targetGroup":"tg","targets":[{"address":"[fd00::0001]:0080","status":"HEALTHY"},{"address":"[fe80::1%eth0]:80","status":"HEALTHY"}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.HealthReport
		if json.Unmarshal(body, &req) != nil || len(checkHealthReport(&req)) > 0 {
			return
		}
		if req.Parts < 0 || req.Parts > api.MaxHealthParts || req.Part < 0 || req.Part >= max(req.Parts, 1) {
			t.Fatalf("part %d of %d passed", req.Part, req.Parts)
		}
		if h, p, ok := splitPartName(partName(req.Holder, req.Part)); !ok || h != req.Holder || p != req.Part {
			t.Fatalf("%q part %d named %q: back as %q part %d (%v)", req.Holder, req.Part, partName(req.Holder, req.Part), h, p, ok)
		}
		if req.Digest != "" && (!validDigest(req.Digest) || req.Groups != nil) {
			t.Fatalf("report by digest %q with %d groups passed", req.Digest, len(req.Groups))
		}
		for _, g := range req.Groups {
			for _, tg := range g.Targets {
				if ap, err := netip.ParseAddrPort(tg.Address); err != nil || ap.Addr().Zone() != "" || ap.String() != tg.Address {
					t.Fatalf("address %q kept", tg.Address)
				}
			}
		}
	})
}

// healthParts16 has s keep, for cluster east, 4 holders' reports in 4
// parts each (16 parts) of 200 target groups of 50 targets: 10,000
// targets a part, about 0.6 MB of JSON.
func healthParts16(tb testing.TB, s *Server) {
	tb.Helper()
	now := time.Now()
	for h := range 4 {
		for part := range 4 {
			groups := make([]api.GroupHealth, 200)
			for g := range groups {
				groups[g] = api.GroupHealth{TargetGroup: fmt.Sprintf("tg-%05d", part*200+g)}
				for t := range 50 {
					groups[g].Targets = append(groups[g].Targets, api.TargetHealth{Address: fmt.Sprintf("10.%d.%d.%d:8080", part, g, t), Status: targetStatuses[(h+t)%3]})
				}
			}
			req := &api.HealthReport{Holder: fmt.Sprintf("proxy-%d", h), Part: part, Parts: 4, Groups: groups}
			if _, kept, err := s.keepHealthPart(tb.Context(), "east", req, now); !kept || err != nil {
				tb.Fatal(kept, err)
			}
		}
	}
}

// BenchmarkTargetHealth is the server's part of one Lattice ListTargets
// call while the owner cluster keeps 16 fresh report parts of 10,000
// targets each: the health of one target group ("group", what
// ListTargets reads), and of every group ("all", TargetHealth).
func BenchmarkTargetHealth(b *testing.B) {
	s := New(teststore.Bolt(b), Config{})
	healthParts16(b, s)
	b.Run("group", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h, err := s.TargetGroupHealth(b.Context(), "east", "tg-00007")
			if err != nil || len(h) != 50 {
				b.Fatal(len(h), err)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			all, err := s.TargetHealth(b.Context(), "east")
			if err != nil || len(all["tg-00007"]) != 50 {
				b.Fatal(len(all["tg-00007"]), err)
			}
		}
	})
}

// Concurrent reads of an unchanged cluster's health decode each report
// part once, whatever their number; a part reported again is decoded
// again, alone; and what they read is what the parts say.
func TestTargetHealthDecodesOncePerReport(t *testing.T) {
	s := New(teststore.Bolt(t), Config{})
	healthParts16(t, s)
	check := func(h map[string]string, err error, when string) {
		t.Helper()
		// tg-00007 is in every holder's part 0; target t is given
		// status (h+t)%3 by holder h of 4: two votes decide.
		if err != nil || len(h) != 50 {
			t.Errorf("%s: %d targets of tg-00007, want 50 (%v)", when, len(h), err)
		} else if h["10.0.7.0:8080"] != "UNHEALTHY" || h["10.0.7.1:8080"] != "INITIAL" || h["10.0.7.2:8080"] != "HEALTHY" {
			t.Errorf("%s: tg-00007 = %v", when, h)
		}
	}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			h, err := s.TargetGroupHealth(t.Context(), "east", "tg-00007")
			check(h, err, "32 reads at once")
		})
	}
	wg.Wait()
	if n := s.health.decodes.Load(); n != 16 {
		t.Fatalf("32 reads at once of 16 parts decoded %d parts, want 16", n)
	}
	all, err := s.TargetHealth(t.Context(), "east")
	if err != nil || len(all) != 800 {
		t.Fatalf("TargetHealth: %d groups, want 800 (%v)", len(all), err)
	}
	check(all["tg-00007"], nil, "TargetHealth")
	if n := s.health.decodes.Load(); n != 16 {
		t.Fatalf("after TargetHealth: %d decodes, want 16", n)
	}

	// proxy-1 reports part 0 again, every target UNHEALTHY now: target 1
	// ties (INITIAL, UNHEALTHY twice each) and goes to the worse.
	groups := make([]api.GroupHealth, 200)
	for g := range groups {
		groups[g] = api.GroupHealth{TargetGroup: fmt.Sprintf("tg-%05d", g)}
		for tg := range 50 {
			groups[g].Targets = append(groups[g].Targets, api.TargetHealth{Address: fmt.Sprintf("10.0.%d.%d:8080", g, tg), Status: "UNHEALTHY"})
		}
	}
	if _, kept, err := s.keepHealthPart(t.Context(), "east", &api.HealthReport{Holder: "proxy-1", Part: 0, Parts: 4, Groups: groups}, time.Now().Add(2*healthKeepEvery)); !kept || err != nil {
		t.Fatal(kept, err)
	}
	for range 8 {
		wg.Go(func() {
			h, err := s.TargetGroupHealth(t.Context(), "east", "tg-00007")
			if err != nil || h["10.0.7.1:8080"] != "UNHEALTHY" || h["10.0.7.0:8080"] != "UNHEALTHY" || h["10.0.7.2:8080"] != "HEALTHY" {
				t.Errorf("after proxy-1's new part 0: %v (%v)", h, err)
			}
		})
	}
	wg.Wait()
	if n := s.health.decodes.Load(); n != 17 {
		t.Fatalf("after one part reported again: %d decodes, want 17", n)
	}
	if n := len(s.health.clusters["east"]); n != 16 {
		t.Errorf("%d parts kept for east, want 16", n)
	}
}

// Parts no longer fresh, or no longer stored, are not kept: a cluster
// keeps no more decoded parts than it has fresh ones in the store.
func TestTargetHealthPartsExpire(t *testing.T) {
	st := teststore.Bolt(t)
	s := New(st, Config{})
	long := time.Now().Add(-HealthFresh - time.Second)
	for _, c := range []string{"east", "west"} {
		for part := range 2 {
			req := &api.HealthReport{Holder: "a", Part: part, Parts: 2, Groups: []api.GroupHealth{{TargetGroup: "tg", Targets: []api.TargetHealth{{Address: fmt.Sprintf("10.0.0.%d:80", part), Status: "HEALTHY"}}}}}
			if _, kept, err := s.keepHealthPart(t.Context(), c, req, time.Now()); !kept || err != nil {
				t.Fatal(kept, err)
			}
		}
		if h, err := s.TargetGroupHealth(t.Context(), c, "tg"); err != nil || len(h) != 2 {
			t.Fatalf("%s: %v (%v)", c, h, err)
		}
	}
	if len(s.health.clusters) != 2 || len(s.health.clusters["west"]) != 2 {
		t.Fatalf("kept %v, want two clusters of two parts", s.health.clusters)
	}
	// west's part 1 goes (a report in one part drops it); east's parts
	// all grow old.
	req := &api.HealthReport{Holder: "a", Groups: []api.GroupHealth{{TargetGroup: "tg", Targets: []api.TargetHealth{{Address: "10.0.0.9:80", Status: "UNHEALTHY"}}}}}
	if _, kept, err := s.keepHealthPart(t.Context(), "west", req, time.Now().Add(2*healthKeepEvery)); !kept || err != nil {
		t.Fatal(kept, err)
	}
	if h, err := s.TargetGroupHealth(t.Context(), "west", "tg"); err != nil || len(h) != 1 || h["10.0.0.9:80"] != "UNHEALTHY" {
		t.Fatalf("west after a report in one part: %v (%v)", h, err)
	}
	if n := len(s.health.clusters["west"]); n != 1 {
		t.Errorf("west keeps %d parts, want 1", n)
	}
	s.health.mu.Lock()
	for _, p := range s.health.clusters["east"] {
		p.reported = long
	}
	s.health.swept = long
	s.health.mu.Unlock()
	if _, err := s.TargetGroupHealth(t.Context(), "west", "tg"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.health.clusters["east"]; ok || len(s.health.clusters) != 1 {
		t.Errorf("after east's parts grew old: kept %v, want west's alone", s.health.clusters)
	}
}

// A part reported again unchanged, whole or by digest, keeps its record
// as it was (the same revision: nothing rewritten, no history) and only
// its stamp moves, yet counts as long after its last report as any part:
// written 50 s ago and reported again since, it is fresh now, and read
// without being decoded again. A digest whose part was last kept over HealthFresh
// ago no longer counts: the part must be reported whole.
func TestHealthPartUnchangedKeepsRecord(t *testing.T) {
	st := teststore.Bolt(t)
	s := New(st, Config{})
	ctx := t.Context()
	now := time.Now()
	groups := func() []api.GroupHealth {
		return []api.GroupHealth{{TargetGroup: "tg", Targets: []api.TargetHealth{{Address: "10.0.0.1:80", Status: "HEALTHY"}}}}
	}
	keep := func(r api.HealthReport, at time.Time) (string, error) {
		t.Helper()
		if fields := checkHealthReport(&r); len(fields) > 0 {
			t.Fatal(fields)
		}
		d, kept, err := s.keepHealthPart(ctx, "east", &r, at)
		if err == nil && !kept {
			t.Fatalf("report at %v not kept", at)
		}
		return d, err
	}
	revs := func() (int64, int64) {
		t.Helper()
		r, err := st.Get(ctx, "health/east/a")
		if err != nil {
			t.Fatal(err)
		}
		s, err := st.Get(ctx, "healthat/east/a")
		if err != nil {
			t.Fatal(err)
		}
		return r.ModRevision, s.ModRevision
	}
	digest, err := keep(api.HealthReport{Holder: "a", Groups: groups()}, now.Add(-50*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	record, stamp := revs()
	s.health.swept = now // no sweep of parts kept in the past
	if h, err := s.TargetGroupHealth(ctx, "east", "tg"); err != nil || h != nil {
		t.Fatalf("a part kept 50 s ago counts: %v, %v", h, err)
	}
	// Kept again unchanged: whole at -25 s, by digest at -5 s.
	if d, err := keep(api.HealthReport{Holder: "a", Groups: groups()}, now.Add(-25*time.Second)); err != nil || d != digest {
		t.Fatalf("the same part whole: %q, %v; want %q", d, err, digest)
	}
	r, sr := revs()
	if r != record || sr == stamp {
		t.Errorf("whole: record at %d (kept at %d), stamp at %d (was %d): want the record untouched, the stamp moved", r, record, sr, stamp)
	}
	if h, err := s.TargetGroupHealth(ctx, "east", "tg"); err != nil || h["10.0.0.1:80"] != "HEALTHY" {
		t.Fatalf("written 50 s ago, reported unchanged 25 s ago: %v, %v; want fresh", h, err)
	}
	decodes := s.health.decodes.Load()
	if _, err := keep(api.HealthReport{Holder: "a", Digest: digest}, now.Add(-5*time.Second)); err != nil {
		t.Fatal(err)
	}
	r, sr2 := revs()
	if r != record || sr2 == sr {
		t.Errorf("by digest: record at %d (kept at %d), stamp at %d (was %d): want the record untouched, the stamp moved", r, record, sr2, sr)
	}
	if h, err := s.TargetGroupHealth(ctx, "east", "tg"); err != nil || h["10.0.0.1:80"] != "HEALTHY" {
		t.Errorf("reported by digest 5 s ago: %v, %v; want fresh", h, err)
	}
	if n := s.health.decodes.Load(); n != decodes {
		t.Errorf("an unchanged part was decoded again (%d decodes, was %d)", n, decodes)
	}
	// 31 s after its last report, the digest is stale.
	if _, err := keep(api.HealthReport{Holder: "a", Digest: digest}, now.Add(26*time.Second)); statusOf(err) != http.StatusPreconditionFailed {
		t.Errorf("by digest 31 s after the last report: %v, want 412", err)
	}
	if _, sr3 := revs(); sr3 != sr2 {
		t.Errorf("a refused report by digest moved the stamp")
	}
	// Whole, the same part is kept again (its record rewritten).
	if d, err := keep(api.HealthReport{Holder: "a", Groups: groups()}, now.Add(27*time.Second)); err != nil || d != digest {
		t.Errorf("whole after the digest went stale: %q, %v", d, err)
	}
	if r, _ := revs(); r == record {
		t.Errorf("a part kept whole after its stamp went stale kept its old record")
	}
}

// statusOf is the HTTP status of a server error, 0 for none.
func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.status
	}
	return 0
}
