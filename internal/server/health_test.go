package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/testsync"
)

func healthOf(group string, targets ...string) api.GroupHealth {
	g := api.GroupHealth{TargetGroup: group}
	for i := 0; i+1 < len(targets); i += 2 {
		g.Targets = append(g.Targets, api.TargetHealth{Address: targets[i], Status: targets[i+1]})
	}
	return g
}

// A cluster's proxies report its targets' health, by token as by
// certificate; the server keeps each holder's latest report, and
// TargetHealth gives the status most of them report, a tie going to the
// worse.
func TestHealthReportsMerged(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	reports := map[string][]api.GroupHealth{
		"a": {healthOf("tg-1", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "UNHEALTHY", "10.0.0.3:80", "HEALTHY")},
		"b": {healthOf("tg-1", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "HEALTHY", "10.0.0.3:80", "INITIAL")},
		"c": {healthOf("tg-1", "10.0.0.1:80", "UNHEALTHY", "[::1]:80", "INITIAL"), healthOf("tg-2", "10.0.0.9:8080", "UNAVAILABLE")},
	}
	for holder, groups := range reports {
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: holder, Groups: groups}); err != nil {
			t.Fatalf("holder %s: %v", holder, err)
		}
	}
	if err := west.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{healthOf("tg-1", "10.0.0.1:80", "UNHEALTHY")}}); err != nil {
		t.Fatalf("by certificate: %v", err)
	}
	got, err := server.New(p.Store, server.Config{}).TargetHealth(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"tg-1": {"10.0.0.1:80": "HEALTHY", "10.0.0.2:80": "UNHEALTHY", "10.0.0.3:80": "INITIAL", "[::1]:80": "INITIAL"},
		"tg-2": {"10.0.0.9:8080": "UNAVAILABLE"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TargetHealth(east) = %v, want %v", got, want)
	}
	// Another cluster's reports are its own.
	if got, _ := server.New(p.Store, server.Config{}).TargetHealth(ctx, "west"); got["tg-1"]["10.0.0.1:80"] != "UNHEALTHY" || len(got) != 1 {
		t.Errorf("TargetHealth(west) = %v", got)
	}
	// A holder reporting again within a second is refused, not kept.
	err = p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{}})
	if apiStatus(err) != http.StatusTooManyRequests {
		t.Errorf("a second report at once: %v", err)
	}
	// Removing the cluster removes its reports.
	if _, err := p.admin.RemoveCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	p.checkHealthRecords(t, "west/", 0, "after west's removal")
}

// checkHealthRecords checks that want reports, and as many report times,
// are stored under holder (a cluster's "name/", or "name/holder").
func (p *clusterPlane) checkHealthRecords(t *testing.T, holder string, want int, when string) {
	t.Helper()
	for _, prefix := range []string{"health/" + holder, "healthat/" + holder} {
		if kvs, _, err := p.Store.List(t.Context(), prefix); err != nil || len(kvs) != want {
			t.Errorf("%d records under %s %s, want %d (%v)", len(kvs), prefix, when, want, err)
		}
	}
}

// The worst reporter: every bad field named, and sizes and holders bounded.
func TestHealthReportsBounded(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "Bad Holder", Groups: []api.GroupHealth{
		healthOf("tg/1", "10.0.0.1", "HEALTHY", "10.0.0.2:80", "SICK"),
	}})
	for _, field := range []string{"holder", "groups[0].targetGroup", "groups[0].targets[0].address", "groups[0].targets[1].status"} {
		if apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), field) {
			t.Errorf("a bad report: want 422 naming %s, got %v", field, err)
		}
	}
	big := api.GroupHealth{TargetGroup: "tg-big"}
	for i := range 20001 {
		big.Targets = append(big.Targets, api.TargetHealth{Address: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&255, i&255), Status: "HEALTHY"})
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{big}}); apiStatus(err) != http.StatusUnprocessableEntity ||
		!strings.Contains(err.Error(), "at most 20000 targets") {
		t.Errorf("20,001 targets: %v", err)
	}
	many := make([]api.GroupHealth, 1001)
	for i := range many {
		many[i] = healthOf(fmt.Sprintf("tg-%d", i))
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: many}); apiStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("1,001 groups: %v", err)
	}
	p.fillHolders(t, 64)
	if kvs, _, err := p.Store.List(ctx, "health/east/"); err != nil || len(kvs) != 64 {
		t.Errorf("%d reports kept, want 64 (%v)", len(kvs), err)
	}
}

// fillHolders has east report as holders proxy-0 to proxy-<n-1>, which
// must make 64 holders with those east has, and checks that one more is
// refused with 429.
func (p *clusterPlane) fillHolders(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if err := p.east.ReportHealth(t.Context(), api.HealthReport{Holder: fmt.Sprintf("proxy-%d", i)}); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
	}
	if err := p.east.ReportHealth(t.Context(), api.HealthReport{Holder: fmt.Sprintf("proxy-%d", n)}); apiStatus(err) != http.StatusTooManyRequests {
		t.Errorf("the 65th holder: %v, want 429", err)
	}
}

// groupsOf is n target groups named prefix-00000 on, one HEALTHY target
// each.
func groupsOf(prefix string, from, n int) []api.GroupHealth {
	out := make([]api.GroupHealth, n)
	for i := range out {
		j := from + i
		out[i] = healthOf(fmt.Sprintf("%s-%05d", prefix, j), fmt.Sprintf("10.%d.%d.1:80", j>>8, j&255), "HEALTHY")
	}
	return out
}

// A holder with more target groups than one report holds reports them in
// parts, each kept on its own: TargetHealth merges them all, with an
// old-style report (no parts) beside them. A report in fewer parts drops
// the parts past its count. Parts count as their holder once among the
// cluster's reporters, and each part has its own pace.
func TestHealthReportsInParts(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	srv := server.New(p.Store, server.Config{})
	all := groupsOf("tg", 0, 2500)
	parts := [][]api.GroupHealth{all[:1000], all[1000:2000], all[2000:]}
	for i, groups := range parts {
		// Right after one another: the pace is each part's.
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Part: i, Parts: 3, Groups: groups}); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	// Right after (not after the reads below, which take seconds with
	// -race on a loaded machine): a part is kept at most once a second.
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Part: 2, Parts: 3, Groups: parts[2]}); apiStatus(err) != http.StatusTooManyRequests {
		t.Errorf("part 2 again at once: %v, want 429", err)
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "old", Groups: []api.GroupHealth{healthOf("tg-old", "10.9.9.9:80", "UNHEALTHY")}}); err != nil {
		t.Fatalf("a report without parts: %v", err)
	}
	got, err := srv.TargetHealth(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2501 || got["tg-02499"]["10.9.195.1:80"] != "HEALTHY" || got["tg-01000"]["10.3.232.1:80"] != "HEALTHY" || got["tg-old"]["10.9.9.9:80"] != "UNHEALTHY" {
		t.Fatalf("TargetHealth after 3 parts and an old-style report: %d groups (tg-02499 %v, tg-01000 %v, tg-old %v), want 2501",
			len(got), got["tg-02499"], got["tg-01000"], got["tg-old"])
	}

	// 62 more holders make 64: a 65th is refused, but not holder a's
	// fourth part (its parts count as one holder).
	p.fillHolders(t, 62)
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Part: 3, Parts: 4, Groups: groupsOf("tg-more", 0, 1)}); err != nil {
		t.Errorf("holder a's fourth part among 64 holders: %v", err)
	}

	// Back to one part: a's other parts are dropped and count no more.
	testsync.WaitFor(t, 5*time.Second, "holder a's part 0 kept again", func() bool {
		err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: parts[0]})
		if err != nil && apiStatus(err) != http.StatusTooManyRequests {
			t.Fatal(err)
		}
		return err == nil
	})
	got, err = srv.TargetHealth(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1001 || got["tg-00999"] == nil || got["tg-01000"] != nil || got["tg-more-00000"] != nil {
		t.Errorf("TargetHealth after a report in one part: %d groups, want a's first 1000 and tg-old", len(got))
	}
	p.checkHealthRecords(t, "east/a", 1, "after a report in one part")
}

// Bad part numbers are named; no holder keeps more than
// api.MaxHealthParts parts.
func TestHealthReportPartsBounded(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	for _, tc := range []struct {
		part, parts int
		field       string
	}{
		{0, api.MaxHealthParts + 1, "parts"},
		{api.MaxHealthParts, api.MaxHealthParts + 1, "parts"},
		{0, -1, "parts"},
		{3, 3, "part"},
		{-1, 2, "part"},
		{1, 0, "part"},
		{1, 1, "part"},
	} {
		err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Part: tc.part, Parts: tc.parts})
		if apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("part %d of %d: %v, want 422 naming %s", tc.part, tc.parts, err, tc.field)
		}
	}
	for i := range api.MaxHealthParts {
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Part: i, Parts: api.MaxHealthParts, Groups: groupsOf("tg", i, 1)}); err != nil {
			t.Fatalf("part %d of %d: %v", i, api.MaxHealthParts, err)
		}
	}
	if kvs, _, err := p.Store.List(ctx, "health/east/"); err != nil || len(kvs) != api.MaxHealthParts {
		t.Errorf("%d records kept, want %d (%v)", len(kvs), api.MaxHealthParts, err)
	}
	if got, _ := server.New(p.Store, server.Config{}).TargetHealth(ctx, "east"); len(got) != api.MaxHealthParts {
		t.Errorf("TargetHealth: %d groups, want %d", len(got), api.MaxHealthParts)
	}

	// Over all holders a cluster keeps at most 128 fresh parts: seven more
	// holders of every part fill it (8 × 16), and then a ninth holder's
	// part, or a holder's added part, is refused; a holder's kept part
	// may still be reported again.
	for h := 1; h < 8; h++ {
		for i := range api.MaxHealthParts {
			if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: fmt.Sprintf("h%d", h), Part: i, Parts: api.MaxHealthParts, Groups: groupsOf("tg", i, 1)}); err != nil {
				t.Fatalf("holder h%d part %d: %v", h, i, err)
			}
		}
	}
	err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "h8", Groups: groupsOf("tg", 0, 1)})
	if apiStatus(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "fresh report parts") {
		t.Errorf("a 129th part: %v, want 429 saying the cluster keeps the most parts", err)
	}
	if kvs, _, err := p.Store.List(ctx, "health/east/"); err != nil || len(kvs) != 128 {
		t.Errorf("%d records kept, want 128 (%v)", len(kvs), err)
	}
	time.Sleep(time.Second) // a holder's part is kept at most once a second
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "h3", Part: 5, Parts: api.MaxHealthParts, Groups: groupsOf("tg", 5, 1)}); err != nil {
		t.Errorf("a kept part reported again at the bound: %v", err)
	}
}

// A part reported again unchanged is kept by its stamp alone; a holder
// may report it by the digest the server gave (a few bytes). The digest
// counts only for the part it was given for, in the caller's cluster,
// as long as that part is kept fresh with it: anything else is 412 and
// keeps nothing.
func TestHealthReportByDigest(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	groups := []api.GroupHealth{healthOf("tg-1", "10.0.0.1:80", "HEALTHY", "[fd00:0::0001]:80", "UNHEALTHY")}
	report := api.HealthReport{Holder: "a", Part: 1, Parts: 2, Groups: groups}
	digest, err := p.east.ReportHealthPart(ctx, report)
	if err != nil || len(digest) != 64 {
		t.Fatalf("report: digest %q, %v", digest, err)
	}
	revs := func() (record, stamp int64) {
		t.Helper()
		r, err := p.Store.Get(ctx, "health/east/a/1")
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.Store.Get(ctx, "healthat/east/a/1")
		if err != nil {
			t.Fatal(err)
		}
		return r.ModRevision, s.ModRevision
	}
	record, stamp := revs()
	again := func(r api.HealthReport, by ...*client.Client) (string, error) {
		t.Helper()
		c := p.east
		if len(by) > 0 {
			c = by[0]
		}
		var d string
		testsync.WaitFor(t, 5*time.Second, "a report past the second between reports", func() bool {
			d, err = c.ReportHealthPart(ctx, r)
			return apiStatus(err) != http.StatusTooManyRequests
		})
		return d, err
	}

	// The same part again, whole (what a proxy before digests sends):
	// the same digest, the record as it was, a new stamp.
	if d, err := again(report); err != nil || d != digest {
		t.Fatalf("the same part again: digest %q, %v; want %q", d, err, digest)
	}
	r2, s2 := revs()
	if r2 != record || s2 == stamp {
		t.Errorf("the same part again: record at %d (was %d), stamp at %d (was %d); want the record as it was and a new stamp", r2, record, s2, stamp)
	}
	// By digest: the same.
	byDigest := api.HealthReport{Holder: "a", Part: 1, Parts: 2, Digest: digest}
	if d, err := again(byDigest); err != nil || d != digest {
		t.Fatalf("by digest: %q, %v", d, err)
	}
	r3, s3 := revs()
	if r3 != record || s3 == s2 {
		t.Errorf("by digest: record at %d (was %d), stamp at %d (was %d)", r3, record, s3, s2)
	}
	if got, _ := server.New(p.Store, server.Config{}).TargetGroupHealth(ctx, "east", "tg-1"); fmt.Sprint(got) != "map[10.0.0.1:80:HEALTHY [fd00::1]:80:UNHEALTHY]" {
		t.Errorf("tg-1 after a report by digest: %v (addresses as ListTargets looks them up)", got)
	}

	// What a digest does not stand for is refused, and changes nothing.
	for _, tc := range []struct {
		name string
		by   *client.Client
		r    api.HealthReport
	}{
		{"another cluster", west, byDigest},
		{"another holder", p.east, api.HealthReport{Holder: "b", Part: 1, Parts: 2, Digest: digest}},
		{"another part", p.east, api.HealthReport{Holder: "a", Part: 0, Parts: 2, Digest: digest}},
		{"another count of parts", p.east, api.HealthReport{Holder: "a", Part: 1, Parts: 3, Digest: digest}},
		{"a forged digest", p.east, api.HealthReport{Holder: "a", Part: 1, Parts: 2, Digest: strings.Repeat("0", 64)}},
	} {
		if _, err := again(tc.r, tc.by); apiStatus(err) != http.StatusPreconditionFailed {
			t.Errorf("%s: %v, want 412", tc.name, err)
		}
	}
	if r, s := revs(); r != record || s != s3 {
		t.Errorf("after refused reports by digest: record at %d, stamp at %d; want %d, %d", r, s, record, s3)
	}
	for _, prefix := range []string{"health/west/", "healthat/west/", "healthat/east/b", "healthat/east/a/2"} {
		if kvs, _, _ := p.Store.List(ctx, prefix); len(kvs) != 0 {
			t.Errorf("%d keys under %s after refused reports by digest", len(kvs), prefix)
		}
	}

	// Changed, the part has a new digest; the old one no longer counts.
	changed := api.HealthReport{Holder: "a", Part: 1, Parts: 2, Groups: []api.GroupHealth{healthOf("tg-1", "10.0.0.1:80", "UNHEALTHY")}}
	d2, err := again(changed)
	if err != nil || d2 == digest {
		t.Fatalf("a changed part: digest %q (was %q), %v", d2, digest, err)
	}
	if _, err := again(byDigest); apiStatus(err) != http.StatusPreconditionFailed {
		t.Errorf("the old digest after a change: %v, want 412", err)
	}
	if got, _ := server.New(p.Store, server.Config{}).TargetGroupHealth(ctx, "east", "tg-1"); fmt.Sprint(got) != "map[10.0.0.1:80:UNHEALTHY]" {
		t.Errorf("tg-1 after the change: %v", got)
	}

	// Bad reports by digest are named.
	for _, tc := range []struct {
		r     api.HealthReport
		field string
	}{
		{api.HealthReport{Holder: "a", Digest: "abc"}, "digest"},
		{api.HealthReport{Holder: "a", Digest: strings.Repeat("A", 64)}, "digest"},
		{api.HealthReport{Holder: "a", Digest: d2, Groups: []api.GroupHealth{}}, "groups"},
	} {
		if err := p.east.ReportHealth(ctx, tc.r); apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%+v: %v, want 422 naming %s", tc.r, err, tc.field)
		}
	}
	// An address with a zone is refused: it names no target.
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "z", Groups: []api.GroupHealth{healthOf("tg-1", "[fe80::1%eth0]:80", "HEALTHY")}}); apiStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("an address with a zone: %v, want 422", err)
	}
}
