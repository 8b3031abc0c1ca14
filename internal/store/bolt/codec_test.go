package bolt

import (
	"errors"
	"reflect"
	"testing"

	"trellis.dev/trellis/internal/store"
)

func TestChangesRoundTrip(t *testing.T) {
	changes := []store.Change{
		{Type: store.ChangePut, KV: store.KeyValue{Key: "a/1", Value: []byte("one"), CreateRevision: 3, ModRevision: 300}},
		{Type: store.ChangeDelete, KV: store.KeyValue{Key: "b/1", ModRevision: 300}},
		{Type: store.ChangePut, KV: store.KeyValue{Key: "a/2", Value: []byte{}, CreateRevision: 300, ModRevision: 300}},
	}
	raw := encodeChanges(changes)
	tests := []struct {
		prefix string
		want   []store.Change
	}{
		{"", changes},
		{"a/", []store.Change{changes[0], changes[2]}},
		{"b/", changes[1:2]},
		{"c/", nil},
	}
	for _, tc := range tests {
		got, err := decodeChanges(300, raw, tc.prefix)
		if err != nil {
			t.Fatalf("prefix %q: %v", tc.prefix, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("prefix %q: decoded %+v, want %+v", tc.prefix, got, tc.want)
		}
	}

	// Every truncation and a trailing byte are detected, not misread.
	for n := range len(raw) {
		if _, err := decodeChanges(300, raw[:n], ""); !errors.Is(err, errCorrupt) {
			t.Errorf("truncated to %d of %d bytes: error = %v, want errCorrupt", n, len(raw), err)
		}
	}
	if _, err := decodeChanges(300, append(raw, 0), ""); !errors.Is(err, errCorrupt) {
		t.Errorf("trailing byte: error = %v, want errCorrupt", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	kv := store.KeyValue{Key: "k", Value: []byte("value"), CreateRevision: 1 << 40, ModRevision: 1<<40 + 1}
	got, err := decodeRecord("k", encodeRecord(kv))
	if err != nil || !reflect.DeepEqual(got, kv) {
		t.Errorf("decodeRecord(encodeRecord(%+v)) = %+v, %v", kv, got, err)
	}
	if _, err := decodeRecord("k", []byte{0x80}); !errors.Is(err, errCorrupt) {
		t.Errorf("truncated varint: error = %v, want errCorrupt", err)
	}
}
