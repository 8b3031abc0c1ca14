package client_test

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
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

// KeepHealthReported sends a report in parts, each part when it changes:
// 2,500 target groups in 3 parts all reach TargetHealth; a change of the
// last part sends it alone; back to one part, the others stop counting.
func TestKeepHealthReportedInParts(t *testing.T) {
	st := teststore.Bolt(t)
	hs := httptest.NewServer(serve(st))
	t.Cleanup(hs.Close)
	east, err := client.New(hs.URL, tokenA, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
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
