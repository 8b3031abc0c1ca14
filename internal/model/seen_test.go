package model

import "testing"

// TestSeenAgreesWithUnchanged: what Seen keeps of an object tells the
// same as Unchanged on the object itself, with and without revisions.
func TestSeenAgreesWithUnchanged(t *testing.T) {
	g := func(name, owner string, rev int64, port int32) TargetGroup {
		return TargetGroup{Meta: Meta{Name: name, Owner: owner, Revision: rev}, Port: port, Targets: []Target{{Address: "10.0.0.1", Cluster: owner}}}
	}
	objs := []TargetGroup{
		g("a", "east", 3, 80), g("a", "east", 3, 81), g("a", "east", 4, 80), g("a", "west", 3, 80), g("b", "east", 3, 80),
		g("a", "east", 0, 80), g("a", "east", 0, 81), g("b", "east", 0, 80),
	}
	for i := range objs {
		s := See(&objs[i])
		if s.meta.Revision != 0 && s.full != nil {
			t.Errorf("%d: a copy kept of an object with a revision", i)
		}
		for j := range objs {
			if got, want := s.Unchanged(&objs[j]), Unchanged(&objs[i], &objs[j]); got != want {
				t.Errorf("See(%d).Unchanged(%d) = %v, Unchanged = %v", i, j, got, want)
			}
		}
	}
}
