package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/internal/store/etcd"
	"trellis.dev/trellis/test/kube"
)

// boundsPart is a health report part at the API's bounds, and as large as
// they let its stored record be: 1,000 target groups of 253-byte names and
// 20,000 IPv6 targets of the longest canonical address, every status.
func boundsPart() api.HealthReport {
	groups := make([]api.GroupHealth, api.MaxHealthGroups)
	per := api.MaxHealthTargets / len(groups)
	for i := range groups {
		name := fmt.Sprintf("tg-%04d-", i)
		groups[i] = api.GroupHealth{TargetGroup: name + strings.Repeat("x", 253-len(name))}
		for j := range per {
			addr := fmt.Sprintf("[ffff:ffff:ffff:ffff:ffff:ffff:%04x:%04x]:65535", 0x1000+i, 0x1000+j)
			groups[i].Targets = append(groups[i].Targets, api.TargetHealth{Address: addr, Status: targetStatuses[j%len(targetStatuses)]})
		}
	}
	return api.HealthReport{Holder: strings.Repeat("h", 63), Part: 1, Parts: api.MaxHealthParts, Groups: groups}
}

// On etcd with its default limits (--max-request-bytes 1.5 MiB,
// --max-txn-ops 128), as operators run it: a report part at the API's
// bounds is kept and read back (its record in the API's form, as kept
// before, was 2.0 MB: refused); and a keep after 100 parts went stale
// at once is kept too, deleting them over a few keeps (one transaction
// deleting them all, as before, was 202 writes: refused).
func TestHealthPartAtBoundsOnEtcd(t *testing.T) {
	e := kube.StartEtcd(t)
	st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{e.Endpoint}, Dialer: e.Dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(st, Config{})
	ctx := t.Context()

	req := boundsPart()
	body, _ := json.Marshal(req)
	if len(body) > maxHealthBody {
		t.Fatalf("the part is %d bytes, over the API's %d", len(body), maxHealthBody)
	}
	if fields := checkHealthReport(&req); len(fields) > 0 {
		t.Fatal(fields)
	}
	if _, kept, err := s.keepHealthPart(ctx, "east", &req, time.Now()); !kept || err != nil {
		t.Fatalf("a %d-byte part at the bounds: kept %v, %v", len(body), kept, err)
	}
	kv, err := st.Get(ctx, healthPrefix+"east/"+partName(req.Holder, req.Part))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a part at the bounds: %d bytes sent, %d stored (at most %d)", len(body), len(kv.Value), maxHealthRecord)
	g := req.Groups[999]
	h, err := s.TargetGroupHealth(ctx, "east", g.TargetGroup)
	if err != nil || len(h) != len(g.Targets) || h[g.Targets[7].Address] != g.Targets[7].Status {
		t.Errorf("the last group read back: %d targets (want %d), %v", len(h), len(g.Targets), err)
	}

	// 100 parts of 7 holders, stale, then one report.
	long := time.Now().Add(-2 * HealthFresh)
	for h := range 7 {
		var ops []store.Op
		for part := range api.MaxHealthParts {
			if h*api.MaxHealthParts+part >= 100 {
				break
			}
			name := partName(fmt.Sprintf("old-%d", h), part)
			stamp, _ := json.Marshal(healthStamp{Reported: long, Parts: api.MaxHealthParts})
			ops = append(ops, store.Put(healthPrefix+"east/"+name, []byte(`{}`)), store.Put(healthStampPrefix+"east/"+name, stamp))
		}
		if _, err := st.Txn(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	stale := func() int {
		kvs, _, err := st.List(ctx, healthStampPrefix+"east/old-")
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	for i, want := range []int{68, 36, 4, 0} {
		r := api.HealthReport{Holder: "a", Groups: []api.GroupHealth{}}
		if _, kept, err := s.keepHealthPart(ctx, "east", &r, time.Now().Add(time.Duration(i)*healthKeepEvery)); !kept || err != nil {
			t.Fatalf("keep %d after 100 stale parts: kept %v, %v", i, kept, err)
		}
		if n := stale(); n != want {
			t.Errorf("after keep %d: %d stale parts, want %d", i, n, want)
		}
	}
}
