package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

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

// putUUID writes the 16 bytes of hi and lo, each from its lowest byte, as
// the hex text of a UUID, as encoding/hex would, for edge and random values.
func TestPutUUID(t *testing.T) {
	values := [][2]uint64{{0, 0}, {^uint64(0), ^uint64(0)}, {0x0123456789abcdef, 0xfedcba9876543210}, {0x9a9a9a9a9a9a9a9a, 0x0a0b0c0d0e0f1011}}
	for range 1000 {
		values = append(values, [2]uint64{rand.Uint64(), rand.Uint64()})
	}
	for _, v := range values {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], v[0])
		binary.LittleEndian.PutUint64(b[8:], v[1])
		want := hex.EncodeToString(b[:4]) + "-" + hex.EncodeToString(b[4:6]) + "-" + hex.EncodeToString(b[6:8]) + "-" +
			hex.EncodeToString(b[8:10]) + "-" + hex.EncodeToString(b[10:])
		var s [36]byte
		putUUID(s[:], v[0], v[1])
		if string(s[:]) != want {
			t.Fatalf("putUUID(%#x, %#x) = %s, want %s", v[0], v[1], s[:], want)
		}
	}
}
