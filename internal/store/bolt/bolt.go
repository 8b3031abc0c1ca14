// Package bolt is the embedded implementation of store.Store: one bbolt file
// on local disk, for control planes that run without etcd.
//
// The file holds three buckets:
//
//   - meta: the global revision, the newest revision whose watch history has
//     been trimmed ("compacted"), the file format version, and the store's
//     random identity (store.Store.ID), written when the file is created;
//   - keys: key → {createRevision, modRevision, value};
//   - history: revision (big-endian uint64) → every change that revision
//     made, so a watcher can resume from a revision even across restarts.
//     It keeps the newest revisions up to a count and a size
//     (Options.HistoryLimit, HistoryBytes), whichever is reached first.
//
// Every transaction that changes something advances the revision by one and
// writes its keys, its history entry and the trimmed history in one bbolt
// transaction, which fsyncs before Txn returns: an acknowledged write
// survives a crash (kill -9, power loss on a disk that honours fsync).
// Transactions are serialized and each pays for its own fsync.
//
// Values are opaque bytes: encoding and validating model objects belongs to
// the server, not here. Events handed to watchers share their Value slices
// between watchers; consumers must treat them as read-only.
package bolt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"trellis.dev/trellis/internal/store"
)

// Defaults for Options.
const (
	DefaultHistoryLimit = 10000
	DefaultHistoryBytes = 64 << 20
	DefaultWatchBuffer  = 1024
)

const (
	// formatVersion is written to new files and checked on open, so a future
	// change of encoding cannot silently misread an old file.
	formatVersion = 1
	// openTimeout bounds the wait for bbolt's exclusive file lock, so a second
	// process opening the same file fails instead of hanging forever.
	openTimeout = 5 * time.Second
	// initialMmapSize is the address space bbolt maps at open. Growing the
	// map past it means remapping the file, which waits for every read
	// transaction to end: at 10,000 services (a 73 MB store) the first apply
	// spent about a third of a second remapping as the file doubled. It is
	// address space, not memory: only the pages the file has are resident.
	initialMmapSize = 256 << 20
)

var (
	bucketMeta    = []byte("meta")
	bucketKeys    = []byte("keys")
	bucketHistory = []byte("history")

	metaRevision  = []byte("revision")
	metaCompacted = []byte("compacted")
	metaFormat    = []byte("format")
	metaID        = []byte("id")
)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// HistoryLimit is how many revisions of watch history are retained.
	// Watching from an older revision fails with store.ErrCompacted. Zero
	// means DefaultHistoryLimit.
	HistoryLimit int
	// HistoryBytes bounds the size of the retained history (the encoded
	// changes, values included): the oldest revisions are trimmed past it,
	// though never the newest. A history bounded by count alone grows
	// with the values written: a proxy's health report at 100,000
	// targets is kept every 10 s in parts of up to 2 MB, each written
	// again into its revision's entry, so 10,000 revisions of them made
	// a file of gigabytes, mapped and resident in the process. Zero means
	// DefaultHistoryBytes.
	HistoryBytes int64
	// WatchBuffer is how many events may queue for a watcher that is not
	// reading before the store gives up on it and closes its channel, so a
	// slow watcher never blocks writers. Zero means DefaultWatchBuffer.
	WatchBuffer int
	// Logger receives warnings about watchers the store had to drop. Nil
	// means slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store backed by a bbolt file. It is safe for concurrent
// use. Only one process may have the file open at a time.
type Store struct {
	db           *bbolt.DB
	path         string
	historyLimit int64
	historyBytes int64
	watchBuffer  int
	log          *slog.Logger
	id           string

	// writeMu serializes commit and publish, so watchers receive events in
	// revision order.
	writeMu sync.Mutex
	// historySize is the size of the retained history's entries, read
	// at open and kept by Txn under writeMu.
	historySize int64

	mu        sync.Mutex
	rev       int64 // last revision committed and published to watchers
	compacted int64 // newest revision whose history has been trimmed
	closed    bool
	watchers  map[*watcher]struct{}
	done      chan struct{} // closed by Close to stop watcher goroutines

	wg sync.WaitGroup // watcher goroutines
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.HistoryLimit < 0 {
		return nil, fmt.Errorf("store: open %s: negative history limit %d", path, opts.HistoryLimit)
	}
	if opts.HistoryBytes < 0 {
		return nil, fmt.Errorf("store: open %s: negative history size %d", path, opts.HistoryBytes)
	}
	if opts.WatchBuffer < 0 {
		return nil, fmt.Errorf("store: open %s: negative watch buffer %d", path, opts.WatchBuffer)
	}
	s := &Store{
		path:         path,
		historyLimit: int64(opts.HistoryLimit),
		historyBytes: opts.HistoryBytes,
		watchBuffer:  opts.WatchBuffer,
		log:          opts.Logger,
		watchers:     make(map[*watcher]struct{}),
		done:         make(chan struct{}),
	}
	if s.historyLimit == 0 {
		s.historyLimit = DefaultHistoryLimit
	}
	if s.historyBytes == 0 {
		s.historyBytes = DefaultHistoryBytes
	}
	if s.watchBuffer == 0 {
		s.watchBuffer = DefaultWatchBuffer
	}
	if s.log == nil {
		s.log = slog.Default()
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: openTimeout, InitialMmapSize: initialMmapSize})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketKeys, bucketHistory} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaFormat); {
		case v == nil:
			if err := meta.Put(metaFormat, revKey(formatVersion)); err != nil {
				return fmt.Errorf("write format version: %w", err)
			}
		case len(v) != 8 || revFromKey(v) != formatVersion:
			return fmt.Errorf("unsupported file format %x (want %d)", v, formatVersion)
		}
		id := meta.Get(metaID)
		if id == nil {
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("store identity: %w", err)
			}
			id = []byte(hex.EncodeToString(b[:]))
			if err := meta.Put(metaID, id); err != nil {
				return fmt.Errorf("write store identity: %w", err)
			}
		}
		s.id = string(id)
		rev, err := metaInt(meta, metaRevision)
		if err != nil {
			return err
		}
		compacted, err := metaInt(meta, metaCompacted)
		s.rev, s.compacted = rev, compacted
		// The cursor reads each entry's length from its page header, not
		// its value.
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			s.historySize += int64(len(v))
		}
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s.db = db
	return s, nil
}

// Get returns the key's current value, or an error wrapping store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KeyValue, error) {
	if err := s.check(ctx); err != nil {
		return store.KeyValue{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	var kv store.KeyValue
	err := s.db.View(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketKeys).Get([]byte(key))
		if raw == nil {
			return store.ErrNotFound
		}
		var err error
		kv, err = decodeRecord(key, raw)
		return err
	})
	if err != nil {
		return store.KeyValue{}, fmt.Errorf("store: get %s: %w", key, closedErr(err))
	}
	return kv, nil
}

// List returns every key with the prefix, sorted by key, and the revision
// the read observed; both come from one read transaction, so they agree.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KeyValue, int64, error) {
	if err := s.check(ctx); err != nil {
		return nil, 0, fmt.Errorf("store: list %s: %w", prefix, err)
	}
	var (
		kvs []store.KeyValue
		rev int64
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rev, err = metaInt(tx.Bucket(bucketMeta), metaRevision); err != nil {
			return err
		}
		p := []byte(prefix)
		c := tx.Bucket(bucketKeys).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decodeRecord(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %s: %w", prefix, closedErr(err))
	}
	return kvs, rev, nil
}

// Revision is the revision of the last acknowledged transaction.
// ID implements store.Store: a random identity kept in the file's meta
// bucket from its creation.
func (s *Store) ID() string { return s.id }

// Revision implements store.Store.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store: revision: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("store: revision: %w", store.ErrClosed)
	}
	return s.rev, nil
}

// errNoChange rolls back a bbolt transaction whose ops changed nothing, so
// it neither advances the revision nor pays for an fsync.
var errNoChange = errors.New("no change")

// Txn applies ops atomically at one new revision and returns it once the
// write is on disk. See store.Store.Txn. Besides conflicts it rejects empty
// keys, unknown op types, invalid preconditions, and two ops on the same key
// (as etcd does): the outcome of such a transaction would be ambiguous.
func (s *Store) Txn(ctx context.Context, ops ...store.Op) (int64, error) {
	if err := store.Validate(ops); err != nil {
		return 0, fmt.Errorf("store: txn: %w", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, fmt.Errorf("store: txn: %w", err)
	}

	var (
		ev        store.Event
		compacted int64
		size      int64
	)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		var err error
		ev, compacted, size, err = s.apply(tx, ops)
		return err
	})
	var conflict *store.ConflictError
	switch {
	case errors.Is(err, errNoChange):
		return ev.Revision, nil
	case errors.As(err, &conflict):
		return 0, conflict
	case err != nil:
		return 0, fmt.Errorf("store: txn: %w", closedErr(err))
	}
	s.historySize = size
	s.publish(ev, compacted)
	return ev.Revision, nil
}

// apply checks every precondition, then writes ops, their history entry and
// the trimmed history at the next revision. It returns the resulting event
// (Revision is the current revision and Changes empty, with errNoChange, if
// nothing changed), the newest compacted revision and the retained
// history's size.
func (s *Store) apply(tx *bbolt.Tx, ops []store.Op) (store.Event, int64, int64, error) {
	meta, keys, history := tx.Bucket(bucketMeta), tx.Bucket(bucketKeys), tx.Bucket(bucketHistory)
	cur, err := metaInt(meta, metaRevision)
	if err != nil {
		return store.Event{}, 0, 0, err
	}
	rev := cur + 1

	// Work out every change before writing any, so a conflict in a later op
	// returns before anything is touched.
	changes := make([]store.Change, 0, len(ops))
	for _, op := range ops {
		var oldCreate, oldMod int64
		raw := keys.Get([]byte(op.Key))
		exists := raw != nil
		if exists {
			if oldCreate, oldMod, _, err = decodeHeader(raw); err != nil {
				return store.Event{}, 0, 0, fmt.Errorf("key %s: %w", op.Key, err)
			}
		}
		if op.IfRevision == store.MustNotExist && exists || op.IfRevision > 0 && oldMod != op.IfRevision {
			return store.Event{}, 0, 0, &store.ConflictError{Key: op.Key, Expected: op.IfRevision, Actual: oldMod}
		}
		switch {
		case op.Type == store.OpPut:
			create := rev
			if exists {
				create = oldCreate
			}
			// Copy: the caller may reuse its buffer once Txn returns, but
			// watchers keep this slice. Never nil, so nil means "deleted".
			value := append([]byte{}, op.Value...)
			changes = append(changes, store.Change{Type: store.ChangePut, KV: store.KeyValue{
				Key: op.Key, Value: value, CreateRevision: create, ModRevision: rev,
			}})
		case exists: // a delete of a missing key changes nothing
			changes = append(changes, store.Change{Type: store.ChangeDelete, KV: store.KeyValue{
				Key: op.Key, ModRevision: rev,
			}})
		}
	}
	if len(changes) == 0 {
		return store.Event{Revision: cur}, 0, 0, errNoChange
	}

	for _, c := range changes {
		if c.Type == store.ChangeDelete {
			err = keys.Delete([]byte(c.KV.Key))
		} else {
			err = keys.Put([]byte(c.KV.Key), encodeRecord(c.KV))
		}
		if err != nil {
			return store.Event{}, 0, 0, fmt.Errorf("%s %s: %w", c.Type, c.KV.Key, err)
		}
	}
	entry := encodeChanges(changes)
	if err := history.Put(revKey(rev), entry); err != nil {
		return store.Event{}, 0, 0, fmt.Errorf("write history %d: %w", rev, err)
	}
	if err := meta.Put(metaRevision, revKey(rev)); err != nil {
		return store.Event{}, 0, 0, fmt.Errorf("write revision %d: %w", rev, err)
	}

	// Trim history to the newest historyLimit revisions, and then to
	// historyBytes, keeping at least this revision. Every revision has an
	// entry, so the retained ones are exactly (compacted, rev].
	compacted, err := metaInt(meta, metaCompacted)
	if err != nil {
		return store.Event{}, 0, 0, err
	}
	size := s.historySize + int64(len(entry))
	trimmed := compacted
	for r := compacted + 1; r < rev && (r <= rev-s.historyLimit || size > s.historyBytes); r++ {
		size -= int64(len(history.Get(revKey(r))))
		if err := history.Delete(revKey(r)); err != nil {
			return store.Event{}, 0, 0, fmt.Errorf("trim history %d: %w", r, err)
		}
		trimmed = r
	}
	if trimmed > compacted {
		compacted = trimmed
		if err := meta.Put(metaCompacted, revKey(compacted)); err != nil {
			return store.Event{}, 0, 0, fmt.Errorf("write compacted revision %d: %w", compacted, err)
		}
	}
	return store.Event{Revision: rev, Changes: changes}, compacted, size, nil
}

// Close stops every watcher (closing its channel), waits for in-flight
// transactions and closes the file. Later calls, including Close, return an
// error wrapping store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("store: close %s: %w", s.path, store.ErrClosed)
	}
	s.closed = true
	close(s.done)
	for w := range s.watchers {
		s.dropLocked(w)
	}
	s.mu.Unlock()

	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// check fails if ctx is done or the store is closed.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// closedErr maps bbolt's "database not open", which an operation racing with
// Close can hit, to store.ErrClosed.
func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}
