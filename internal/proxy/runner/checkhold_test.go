package runner

import "testing"

func TestCheckHold(t *testing.T) {
	var h CheckHold
	holds, releases := 0, 0
	hold := func() func() {
		holds++
		return func() { releases++ }
	}
	h.Begin() // no proxy yet
	h.End()
	h.attach(hold)
	h.Begin()
	h.Begin() // joins the hold under way
	if holds != 1 || releases != 0 {
		t.Fatalf("two Begins: %d holds, %d releases; want 1, 0", holds, releases)
	}
	h.End()
	h.End()
	if releases != 1 {
		t.Fatalf("End: %d releases, want 1", releases)
	}
	h.Begin()
	h.attach(nil) // Run returned: the hold under way ends
	h.Begin()
	if holds != 2 || releases != 2 {
		t.Errorf("after detach: %d holds, %d releases; want 2, 2", holds, releases)
	}
}
