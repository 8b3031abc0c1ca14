package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"trellis.dev/trellis/internal/store"
)

// On-disk encodings. Integers are unsigned varints; byte strings are a varint
// length followed by the bytes.
//
//	record (keys bucket value):    createRevision modRevision value...
//	changes (history bucket value): count { type(1 byte) key createRevision modRevision [value, puts only] }
//
// Revisions used as bucket keys are big-endian uint64 so that bbolt's byte
// order is revision order.

var errCorrupt = errors.New("corrupt record")

// revKey encodes a revision as a bucket key.
func revKey(rev int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(rev)) }

// revFromKey decodes revKey's output.
func revFromKey(k []byte) int64 { return int64(binary.BigEndian.Uint64(k)) }

// metaInt reads a revision from the meta bucket; a missing one is zero.
func metaInt(meta *bbolt.Bucket, name []byte) (int64, error) {
	v := meta.Get(name)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return revFromKey(v), nil
	}
	return 0, fmt.Errorf("meta %s: %w", name, errCorrupt)
}

func encodeRecord(kv store.KeyValue) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(kv.Value))
	b = binary.AppendUvarint(b, uint64(kv.CreateRevision))
	b = binary.AppendUvarint(b, uint64(kv.ModRevision))
	return append(b, kv.Value...)
}

// decodeRecord decodes a keys bucket value, copying it out of bbolt's memory
// (valid only for the transaction).
func decodeRecord(key string, raw []byte) (store.KeyValue, error) {
	create, mod, value, err := decodeHeader(raw)
	if err != nil {
		return store.KeyValue{}, fmt.Errorf("key %s: %w", key, err)
	}
	return store.KeyValue{Key: key, Value: append([]byte{}, value...), CreateRevision: create, ModRevision: mod}, nil
}

// decodeHeader splits a keys bucket value without copying the value.
func decodeHeader(raw []byte) (create, mod int64, value []byte, err error) {
	d := decoder{b: raw}
	create, mod = d.int(), d.int()
	return create, mod, d.b, d.err
}

func encodeChanges(changes []store.Change) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(changes)))
	for _, c := range changes {
		b = append(b, byte(c.Type))
		b = appendBytes(b, []byte(c.KV.Key))
		b = binary.AppendUvarint(b, uint64(c.KV.CreateRevision))
		b = binary.AppendUvarint(b, uint64(c.KV.ModRevision))
		if c.Type == store.ChangePut {
			b = appendBytes(b, c.KV.Value)
		}
	}
	return b
}

// decodeChanges decodes a history entry, keeping (and copying) only the
// changes to keys with the prefix.
func decodeChanges(rev int64, raw []byte, prefix string) ([]store.Change, error) {
	d := decoder{b: raw}
	n := d.int()
	var changes []store.Change
	for i := int64(0); i < n && d.err == nil; i++ {
		typ := store.ChangeType(d.byte())
		key := d.bytes()
		create, mod := d.int(), d.int()
		var value []byte
		switch typ {
		case store.ChangePut:
			value = d.bytes()
		case store.ChangeDelete:
		default:
			d.err = errCorrupt
		}
		if d.err != nil || !hasPrefix(key, prefix) {
			continue
		}
		if typ == store.ChangePut {
			value = append([]byte{}, value...)
		}
		changes = append(changes, store.Change{Type: typ, KV: store.KeyValue{
			Key: string(key), Value: value, CreateRevision: create, ModRevision: mod,
		}})
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("history %d: %w", rev, errCorrupt)
	}
	return changes, nil
}

// hasPrefix is strings.HasPrefix without converting key to a string, which
// would allocate for every change scanned during a replay.
func hasPrefix(key []byte, prefix string) bool {
	return len(key) >= len(prefix) && string(key[:len(prefix)]) == prefix
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decoder reads the encodings above; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return int64(v)
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// bytes returns a slice aliasing the input; callers copy what they keep.
func (d *decoder) bytes() []byte {
	n := d.int()
	if d.err != nil || n < 0 || n > int64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
