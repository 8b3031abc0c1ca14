package server

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/test/teststore"
)

// BenchmarkKeepHealthPart is the store work of keeping one health report
// part (issue 15) while the cluster keeps 16 other holders' reports of 3
// parts of 1,000 groups each: "stamps" is keepHealthPart, which reads the
// parts' small stamps; "records" is keepHolderRecord over the same
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
			doc, _ := json.Marshal(healthRecord{Holder: fmt.Sprintf("proxy-%d", h), Reported: ahead, Part: part, Parts: 3, Groups: groups})
			stamp, _ := json.Marshal(healthStamp{Reported: ahead, Parts: 3})
			ops = append(ops, store.Put(healthPrefix+"east/"+name, doc), store.Put(healthStampPrefix+"east/"+name, stamp))
		}
	}
	if _, err := st.Txn(ctx, ops...); err != nil {
		b.Fatal(err)
	}
	small := &api.HealthReport{Holder: "x", Groups: groups[:1]}
	doc, _ := json.Marshal(healthRecord{Holder: "x", Reported: base, Groups: small.Groups})
	b.Run("stamps", func(b *testing.B) {
		now := base
		for b.Loop() {
			now = now.Add(2 * healthKeepEvery)
			if kept, err := s.keepHealthPart(ctx, "east", small, now); !kept || err != nil {
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

// Whatever a reporter sends, a report checkHealthReport passes names a
// part within the bounds, and its record's name gives back its holder
// and part.
func FuzzHealthReportParts(f *testing.F) {
	f.Add([]byte(`{"holder":"a","part":2,"parts":3,"groups":[]}`))
	f.Add([]byte(`{"holder":"a","groups":[]}`))
	f.Add([]byte(`{"holder":"a","part":1}`))
	f.Add([]byte(`{"holder":"a","part":-1,"parts":17}`))
	f.Add([]byte(`{"holder":"a/1","part":0,"parts":2}`))
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
	})
}
