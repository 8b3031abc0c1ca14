package proxy

import "testing"

// TestRequestIDsBatched checks that a connection's batched request IDs
// are UUIDs of version 4, all different, across batch boundaries, and that
// a batch is one allocation.
func TestRequestIDsBatched(t *testing.T) {
	var ids requestIDs
	seen := map[string]bool{}
	for i := range 100 {
		id := ids.next()
		if !uuidRE.MatchString(id) {
			t.Fatalf("ID %d = %q, want a random UUID", i, id)
		}
		if seen[id] {
			t.Fatalf("ID %d = %q again", i, id)
		}
		seen[id] = true
	}
	if ids.batch != maxIDBatch {
		t.Errorf("batch = %d after 100 IDs, want %d", ids.batch, maxIDBatch)
	}
	allocs := testing.AllocsPerRun(10, func() {
		for range maxIDBatch {
			ids.next()
		}
	})
	if allocs != 1 {
		t.Errorf("%d IDs made %v allocations, want 1", maxIDBatch, allocs)
	}
}
