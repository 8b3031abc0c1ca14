// Package teststore opens real stores for tests: the one way a test gets
// an empty embedded (bolt) store of its own that is closed when it ends.
// Test support only; nothing in the product imports it.
package teststore

import (
	"path/filepath"
	"testing"

	"trellis.dev/trellis/internal/store/bolt"
)

// Bolt opens an empty bolt store in a directory of t's, which t closes
// when it ends (a test may close it earlier itself).
func Bolt(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
