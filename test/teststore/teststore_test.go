package teststore

import (
	"context"
	"errors"
	"testing"

	"trellis.dev/trellis/internal/store"
)

// Each call is a new, empty, working store, and the test's end closes it.
func TestBoltIsEmptyAndClosedAtTheEnd(t *testing.T) {
	var first store.Store
	t.Run("open", func(t *testing.T) {
		first = Bolt(t)
		ctx := context.Background()
		if _, err := first.Txn(ctx, store.Put("/k", []byte("v"))); err != nil {
			t.Fatal(err)
		}
		kvs, _, err := Bolt(t).List(ctx, "/")
		if err != nil || len(kvs) != 0 {
			t.Fatalf("a second store holds %v (%v), want nothing", kvs, err)
		}
	})
	if err := first.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Close after the test ended: %v, want ErrClosed", err)
	}
}
