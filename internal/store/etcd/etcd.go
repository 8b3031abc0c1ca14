// Package etcd is the store.Store of control planes that run on etcd: for
// several `trellis server` replicas sharing one store (high availability),
// or for teams that already operate etcd.
//
// Every key lives under a prefix (Options.Prefix, "/trellis/" by default),
// so one etcd cluster can serve other users too:
//
//   - <prefix>k<key>: the value of store key <key>, as is;
//   - <prefix>id: the store's identity (store.Store.ID), written by the
//     first Open against an empty prefix.
//
// Revisions are etcd's: a transaction's revision is the etcd revision it
// committed at, and keys' create and mod revisions are etcd's. On an etcd
// cluster that only Trellis writes, they advance by one per transaction, as
// the embedded store's do; on a shared one they still only increase, but
// other writers' transactions come in between. History is etcd's too: how
// far back a watch can resume is set by etcd's compaction (its
// --auto-compaction-* flags), and a watch from before it fails with
// store.ErrCompacted.
//
// Limits are etcd's: a transaction is one etcd transaction, so one with
// more writes than etcd's --max-txn-ops (128 by default), or larger than
// its --max-request-bytes (1.5 MiB by default), is refused with an error
// that names the flag. A control plane that applies whole clusters needs
// both raised (docs/install.md).
package etcd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"trellis.dev/trellis/internal/store"
)

// Defaults for Options.
const (
	DefaultPrefix      = "/trellis/"
	DefaultWatchBuffer = 1024
	DefaultDialTimeout = 5 * time.Second
)

// listPage is how many keys one List request asks etcd for.
const listPage = 1000

// Options configure a Store.
type Options struct {
	// Endpoints are etcd's client URLs, e.g. "https://etcd-0:2379".
	Endpoints []string
	// Prefix is put before every key. Empty means DefaultPrefix.
	Prefix string
	// TLS is the client's TLS configuration (CA, client certificate) for
	// https endpoints; nil for plain http.
	TLS *tls.Config
	// Dialer, when set, makes the connections to etcd instead of a plain
	// TCP dial (a proxy, another network namespace).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// Username and Password authenticate to etcd when its auth is on.
	Username, Password string
	// DialTimeout bounds Open's wait for etcd. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// WatchBuffer is how many events may queue for a watcher that is not
	// reading before the store gives up on it and closes its channel. Zero
	// means DefaultWatchBuffer.
	WatchBuffer int
	// Logger receives warnings about watchers the store dropped. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store on an etcd cluster. It is safe for concurrent use,
// and any number of Stores, in any number of processes, may share one
// prefix: etcd orders their transactions.
type Store struct {
	cli         *clientv3.Client
	data, idKey string
	id          string
	watchBuffer int
	log         *slog.Logger

	// ctx ends when the store closes; every watch runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	wg     sync.WaitGroup // watcher goroutines
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd and reads the store's identity, creating it if the
// prefix holds no store yet.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("store: etcd: no endpoints")
	}
	if opts.WatchBuffer < 0 {
		return nil, fmt.Errorf("store: etcd: negative watch buffer %d", opts.WatchBuffer)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	dial := opts.DialTimeout
	if dial == 0 {
		dial = DefaultDialTimeout
	}
	s := &Store{
		data:        prefix + "k",
		idKey:       prefix + "id",
		watchBuffer: opts.WatchBuffer,
		log:         opts.Logger,
	}
	if s.watchBuffer == 0 {
		s.watchBuffer = DefaultWatchBuffer
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: dial,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		// The client's own logging (gRPC retries and the like) is noise
		// next to the errors every call returns.
		Logger: zap.NewNop(),
	}
	if opts.Dialer != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(opts.Dialer)}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: etcd %v: %w", opts.Endpoints, err)
	}
	s.cli = cli
	ictx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if s.id, err = s.identity(ictx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("store: etcd %v: reading the store identity at %s: %w", opts.Endpoints, s.idKey, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// identity returns the identity under the prefix, writing a new random one
// if there is none.
func (s *Store) identity(ctx context.Context) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.idKey), "=", 0)).
		Then(clientv3.OpPut(s.idKey, hex.EncodeToString(b))).
		Else(clientv3.OpGet(s.idKey)).
		Commit()
	if err != nil {
		return "", err
	}
	if resp.Succeeded {
		return hex.EncodeToString(b), nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || len(kvs[0].Value) == 0 {
		return "", errors.New("the identity key is empty")
	}
	return string(kvs[0].Value), nil
}

// ID returns the store's identity. See store.Store.ID.
func (s *Store) ID() string { return s.id }

// Get returns key's current value. See store.Store.Get.
func (s *Store) Get(ctx context.Context, key string) (store.KeyValue, error) {
	if err := s.check(ctx); err != nil {
		return store.KeyValue{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	resp, err := s.cli.Get(ctx, s.data+key)
	if err != nil {
		return store.KeyValue{}, fmt.Errorf("store: get %s: %w", key, s.callErr(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return store.KeyValue{}, fmt.Errorf("store: get %s: %w", key, store.ErrNotFound)
	}
	kv := resp.Kvs[0]
	return store.KeyValue{Key: key, Value: value(kv.Value), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}, nil
}

// List returns every key with the prefix, sorted, read at one revision. See
// store.Store.List. Large results are read in pages of listPage keys, all
// at the first page's revision.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KeyValue, int64, error) {
	if err := s.check(ctx); err != nil {
		return nil, 0, fmt.Errorf("store: list %s: %w", prefix, err)
	}
	from := s.data + prefix
	end := clientv3.GetPrefixRangeEnd(from)
	var (
		out []store.KeyValue
		rev int64
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("store: list %s: %w", prefix, s.callErr(ctx, err))
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			out = append(out, store.KeyValue{
				Key: string(kv.Key[len(s.data):]), Value: value(kv.Value),
				CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
			})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revision returns etcd's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, fmt.Errorf("store: revision: %w", err)
	}
	resp, err := s.cli.Get(ctx, s.idKey, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("store: revision: %w", s.callErr(ctx, err))
	}
	return resp.Header.Revision, nil
}

// Txn applies ops as one etcd transaction. See store.Store.Txn: the
// preconditions become the transaction's comparisons, and when one fails
// the transaction reads the compared keys instead, at the same revision, to
// say which failed and why.
func (s *Store) Txn(ctx context.Context, ops ...store.Op) (int64, error) {
	if err := store.Validate(ops); err != nil {
		return 0, fmt.Errorf("store: txn: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return 0, fmt.Errorf("store: txn: %w", err)
	}
	if len(ops) == 0 {
		return s.Revision(ctx)
	}
	var (
		cmps    []clientv3.Cmp
		writes  []clientv3.Op
		reads   []clientv3.Op
		checked []store.Op
	)
	for _, op := range ops {
		key := s.data + op.Key
		switch {
		case op.IfRevision == store.MustNotExist:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		case op.IfRevision > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", op.IfRevision))
		}
		if op.IfRevision != store.Unconditional {
			reads = append(reads, clientv3.OpGet(key))
			checked = append(checked, op)
		}
		if op.Type == store.OpPut {
			writes = append(writes, clientv3.OpPut(key, string(op.Value)))
		} else {
			writes = append(writes, clientv3.OpDelete(key))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(writes...).Else(reads...).Commit()
	if err != nil {
		return 0, fmt.Errorf("store: txn of %d ops: %w", len(ops), s.txnErr(ctx, err))
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	for i, op := range checked {
		var actual int64
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			actual = kvs[0].ModRevision
		}
		exists := actual != 0
		if op.IfRevision == store.MustNotExist && exists || op.IfRevision > 0 && actual != op.IfRevision {
			return 0, &store.ConflictError{Key: op.Key, Expected: op.IfRevision, Actual: actual}
		}
	}
	// A comparison failed, yet every key read back as expected: a writer
	// moved a key between the two, which one transaction cannot see. It
	// cannot happen in etcd; say so if it ever does.
	return 0, fmt.Errorf("store: txn: %w: a precondition failed but none reads as failed", store.ErrConflict)
}

// txnErr names the etcd flag behind a transaction etcd refused for its size.
func (s *Store) txnErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w (raise etcd's --max-txn-ops)", err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w (raise etcd's --max-request-bytes)", err)
	}
	return s.callErr(ctx, err)
}

// Watch follows the transactions after revision `after` that changed keys
// with the prefix, as one event each. See store.Store.Watch.
func (s *Store) Watch(ctx context.Context, prefix string, after int64) (<-chan store.Event, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("store: watch %s: %w", prefix, err)
	}
	// etcd reports a compacted start revision only on the stream; find out
	// now, as the interface wants, with a read at that revision.
	cur, err := s.Revision(ctx)
	if err != nil {
		return nil, err
	}
	if after < cur {
		_, err := s.cli.Get(ctx, s.idKey, clientv3.WithRev(after+1), clientv3.WithCountOnly())
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, fmt.Errorf("store: watch %s from %d: %w", prefix, after, store.ErrCompacted)
		}
		if err != nil {
			return nil, fmt.Errorf("store: watch %s from %d: %w", prefix, after, s.callErr(ctx, err))
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	// WithRequireLeader ends the watch when this member loses its leader,
	// rather than leaving it silent on a partitioned member: the caller
	// resumes, perhaps through another member.
	wch := s.cli.Watch(clientv3.WithRequireLeader(wctx), s.data+prefix, clientv3.WithPrefix(), clientv3.WithRev(after+1))
	out := make(chan store.Event, s.watchBuffer)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer stop()
		defer func() {
			cancel()
			for range wch { // let the client's watcher wind down
			}
		}()
		s.forward(wch, out, prefix)
	}()
	return out, nil
}

// forward turns etcd's watch responses into store events on out until the
// watch ends, is compacted away, or out's reader falls a whole buffer
// behind.
func (s *Store) forward(wch clientv3.WatchChan, out chan<- store.Event, prefix string) {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			s.log.Warn("store: watch outlived etcd's history; its reader starts over", "prefix", prefix, "compacted", resp.CompactRevision)
			return
		}
		if err := resp.Err(); err != nil {
			if !resp.Canceled || s.ctx.Err() == nil {
				s.log.Debug("store: etcd watch ended", "prefix", prefix, "err", err)
			}
			return
		}
		// etcd sends a revision's events together, in the order the
		// transaction made them.
		var ev store.Event
		for _, e := range resp.Events {
			kv := e.Kv
			if ev.Revision != kv.ModRevision {
				if ev.Revision != 0 && !s.send(out, ev, prefix) {
					return
				}
				ev = store.Event{Revision: kv.ModRevision}
			}
			c := store.Change{KV: store.KeyValue{Key: string(kv.Key[len(s.data):]), ModRevision: kv.ModRevision}}
			if e.Type == clientv3.EventTypeDelete {
				c.Type = store.ChangeDelete
			} else {
				c.Type = store.ChangePut
				c.KV.Value, c.KV.CreateRevision = value(kv.Value), kv.CreateRevision
			}
			ev.Changes = append(ev.Changes, c)
		}
		if ev.Revision != 0 && !s.send(out, ev, prefix) {
			return
		}
	}
}

// send queues ev for the watcher, or reports false when its buffer is full.
func (s *Store) send(out chan<- store.Event, ev store.Event, prefix string) bool {
	select {
	case out <- ev:
		return true
	default:
		s.log.Warn("store: watcher fell behind; dropping it so it resumes", "prefix", prefix, "revision", ev.Revision, "buffer", s.watchBuffer)
		return false
	}
}

// Close ends every watch (closing its channel) and the etcd client. Later
// calls return errors wrapping store.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("store: close: %w", store.ErrClosed)
	}
	s.cancel()
	s.wg.Wait()
	return s.cli.Close()
}

// check fails if the store is closed or ctx is done.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// callErr is err, or the reason behind it: the caller's context ended, or
// the store closed under the call.
func (s *Store) callErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.ctx != nil && s.ctx.Err() != nil {
		return store.ErrClosed
	}
	return err
}

// value is v, never nil: a nil Value means "deleted" in a change.
func value(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}
