package main

import (
	"testing"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
)

// TestGenInterval: gen -interval writes a TargetGroupPolicy per Service,
// which the file provider takes without a problem, and every target group
// checks at that interval.
func TestGenInterval(t *testing.T) {
	dir := t.TempDir()
	if err := generate(dir, shape{services: 5, endpoints: 2, perFile: 2, interval: 7}); err != nil {
		t.Fatal(err)
	}
	in, err := file.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	in.Cluster = "local"
	out := translate.Translate(in)
	if len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	if len(in.TargetGroupPolicies) != 5 || len(out.TargetGroups) != 5 {
		t.Fatalf("%d policies and %d target groups; want 5 of each", len(in.TargetGroupPolicies), len(out.TargetGroups))
	}
	for _, tg := range out.TargetGroups {
		if tg.HealthCheck.IntervalSeconds != 7 {
			t.Errorf("target group %s checks every %d s, want 7", tg.Name, tg.HealthCheck.IntervalSeconds)
		}
	}
	if err := generate(t.TempDir(), shape{services: 1, endpoints: 1, perFile: 1, interval: 4}); err == nil {
		t.Error("gen took -interval 4")
	}
}
