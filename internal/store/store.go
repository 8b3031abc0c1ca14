// Package store is the control plane's durable, revisioned key-value store.
//
// The Store interface is shaped after etcd's (one global revision that every
// transaction advances, conditional writes, watches resumable from a
// revision) so that the embedded bbolt implementation and an etcd one are
// interchangeable. It stores opaque bytes: encoding and validation of model
// objects belong to the server.
package store

import (
	"context"
	"errors"
	"fmt"
)

// KeyValue is one stored key.
type KeyValue struct {
	Key   string
	Value []byte
	// CreateRevision is the revision at which the key was created.
	CreateRevision int64
	// ModRevision is the revision at which the key last changed.
	ModRevision int64
}

// OpType is the kind of a write.
type OpType int

// Write kinds.
const (
	OpPut OpType = iota
	OpDelete
)

// Precondition values for Op.IfRevision besides a positive revision.
const (
	// Unconditional: the op applies whatever the key's state.
	Unconditional int64 = 0
	// MustNotExist: the op applies only if the key does not exist.
	MustNotExist int64 = -1
)

// Op is one write in a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte // for OpPut
	// IfRevision makes the op conditional: Unconditional, MustNotExist, or a
	// revision the key's ModRevision must equal. Deleting a missing key with
	// Unconditional is not an error and records no change.
	IfRevision int64
}

// Put returns an unconditional put.
func Put(key string, value []byte) Op { return Op{Type: OpPut, Key: key, Value: value} }

// Delete returns an unconditional delete.
func Delete(key string) Op { return Op{Type: OpDelete, Key: key} }

// ChangeType says what happened to a key.
type ChangeType int

// Change types.
const (
	ChangePut ChangeType = iota
	ChangeDelete
)

func (t ChangeType) String() string {
	if t == ChangeDelete {
		return "delete"
	}
	return "put"
}

// Change is what one op did. For a delete, KV.Value is nil and
// KV.ModRevision is the revision of the delete.
type Change struct {
	Type ChangeType
	KV   KeyValue
}

// Event is one committed transaction as seen by a watcher: every change it
// made under the watched prefix, all at one revision.
type Event struct {
	Revision int64
	Changes  []Change
}

// Store is a durable, revisioned key-value store.
//
// A write is acknowledged (Txn returns) only once it is durable: a process
// killed after that loses nothing acknowledged.
type Store interface {
	// Get returns the key's current value, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (KeyValue, error)
	// List returns every key with the prefix, sorted by key, and the store's
	// revision at the moment of the read.
	List(ctx context.Context, prefix string) ([]KeyValue, int64, error)
	// Txn applies ops atomically at one new revision, which it returns. If any
	// precondition fails nothing is written and the error is a *ConflictError.
	// A transaction that changes nothing (only deletes of missing keys) does
	// not advance the revision and returns the current one.
	Txn(ctx context.Context, ops ...Op) (int64, error)
	// Watch delivers, in revision order, every transaction after revision
	// `after` that changed a key with the prefix. It first replays history,
	// then follows live writes. If `after` is older than the retained history
	// it returns an error wrapping ErrCompacted; the caller should List and
	// watch from that List's revision. The channel is closed when ctx ends,
	// the store closes, or the watcher falls too far behind (the caller then
	// re-watches from the last revision it saw).
	Watch(ctx context.Context, prefix string, after int64) (<-chan Event, error)
	// Revision is the store's current revision.
	Revision(ctx context.Context) (int64, error)
	// ID is the store's identity: random, fixed when the store was created,
	// the same across restarts. Revisions are comparable only between reads
	// of stores with the same ID; a store created afresh (its data lost and
	// rebuilt) has a new one, even once its revisions pass the old store's.
	ID() string
	Close() error
}

// Sentinel errors.
var (
	ErrNotFound  = errors.New("key not found")
	ErrConflict  = errors.New("revision conflict")
	ErrCompacted = errors.New("revision compacted")
	ErrClosed    = errors.New("store closed")
)

// ConflictError reports a failed precondition.
type ConflictError struct {
	Key      string
	Expected int64 // the op's IfRevision
	Actual   int64 // the key's ModRevision, 0 if it does not exist
}

func (e *ConflictError) Error() string {
	switch {
	case e.Expected == MustNotExist:
		return fmt.Sprintf("%s already exists (revision %d)", e.Key, e.Actual)
	case e.Actual == 0:
		return fmt.Sprintf("%s does not exist (expected revision %d)", e.Key, e.Expected)
	}
	return fmt.Sprintf("%s is at revision %d, not %d", e.Key, e.Actual, e.Expected)
}

// Is makes errors.Is(err, ErrConflict) true for a *ConflictError.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Validate rejects transactions that are malformed whatever the store holds:
// empty keys, unknown op types, invalid preconditions, and two ops on the
// same key (as etcd does: the outcome of such a transaction would be
// ambiguous). Every implementation's Txn applies it first.
func Validate(ops []Op) error {
	seen := make(map[string]bool, len(ops))
	for i, op := range ops {
		switch {
		case op.Key == "":
			return fmt.Errorf("op %d: empty key", i)
		case op.Type != OpPut && op.Type != OpDelete:
			return fmt.Errorf("op %d on %s: unknown op type %d", i, op.Key, op.Type)
		case op.IfRevision < MustNotExist:
			return fmt.Errorf("op %d on %s: invalid precondition %d", i, op.Key, op.IfRevision)
		case seen[op.Key]:
			return fmt.Errorf("op %d: duplicate key %s", i, op.Key)
		}
		seen[op.Key] = true
	}
	return nil
}
