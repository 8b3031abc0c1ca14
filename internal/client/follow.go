package client

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
)

// FollowOptions tune Follow. The zero value works.
type FollowOptions struct {
	// IdleTimeout ends a stream that has sent nothing, not even a heartbeat,
	// for this long (default 35 s: three of the server's default heartbeats
	// and some slack). The client then reconnects.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnects, which
	// doubles on each failure and resets once a stream delivers (defaults
	// 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// CacheFile, when set, keeps the last snapshot on disk: Follow delivers
	// it at once when it starts, before the control plane answers, and
	// resumes the watch from its revision. A proxy restarted during a
	// control-plane outage thereby serves its last configuration.
	CacheFile string
	// Kinds, when set, has the stream carry only these kinds (the
	// server's ?kind= filter): every snapshot's other lists are empty, and
	// the server neither decodes nor sends the objects of the others. A
	// CacheFile holds what the stream carried.
	Kinds []model.Kind
}

// Follow watches the configuration and calls apply with a complete snapshot
// after every revision it learns, in revision order, from one goroutine.
// Successive snapshots share the lists of the kinds a revision did not
// change: apply must not modify them. It
// reconnects with backoff whenever the stream breaks, resuming from the last
// revision it saw, so a control-plane outage only delays changes: whatever
// the caller built from the last snapshot keeps serving. It returns when ctx
// ends.
func (c *Client) Follow(ctx context.Context, opts FollowOptions, apply func(*model.Snapshot)) error {
	opts.IdleTimeout = cmp.Or(opts.IdleTimeout, 35*time.Second)
	opts.MinBackoff = cmp.Or(opts.MinBackoff, 100*time.Millisecond)
	opts.MaxBackoff = cmp.Or(opts.MaxBackoff, 5*time.Second)
	cache := newCache()
	if opts.CacheFile != "" {
		var saved func()
		apply, saved = c.withCacheFile(opts.CacheFile, cache, apply)
		defer saved()
	}
	backoff := opts.MinBackoff
	// tried counts the servers that failed since the last wait.
	tried := 0
	for {
		server := c.server()
		delivered, err := c.stream(ctx, server, opts.IdleTimeout, opts.Kinds, cache, apply)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if delivered {
			backoff, tried = opts.MinBackoff, 0
		}
		c.log.Warn("configuration stream broke; serving the last configuration and reconnecting",
			"server", c.bases[server].Host, "revision", cache.revision, "err", err, "retry_in", backoff)
		if tried++; c.failover(server, err) && tried < len(c.bases) {
			// Another server may be up: try it without waiting, once
			// per server; when every one has failed, back off.
			continue
		}
		tried = 0
		// Full jitter keeps a fleet of proxies from reconnecting in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, opts.MaxBackoff)
	}
}

// stream runs one watch request until it fails. delivered reports whether it
// applied at least one revision.
func (c *Client) stream(ctx context.Context, server int, idle time.Duration, kinds []model.Kind, cache *cache, apply func(*model.Snapshot)) (delivered bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := url.Values{}
	for _, k := range kinds {
		q.Add("kind", string(k))
	}
	if cache.revision > 0 {
		q.Set("revision", fmt.Sprint(cache.revision))
		if cache.store != "" {
			q.Set("store", cache.store)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(server, "/v1/watch", q), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, decodeError(resp)
	}

	// A watchdog ends a stream that went silent (a half-open connection
	// after the server's host vanished sends no FIN).
	errIdle := fmt.Errorf("no message for %s", idle)
	watchdog := time.AfterFunc(idle, func() { cancel(errIdle) })
	defer watchdog.Stop()

	lines := &lineReader{r: bufio.NewReaderSize(resp.Body, 64<<10), max: maxWatchLine}
	for {
		line, err := lines.next()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return delivered, cause
			}
			if errors.Is(err, io.EOF) {
				return delivered, errors.New("server closed the stream")
			}
			return delivered, err
		}
		watchdog.Reset(idle)
		// A changes message the server wrote is read by hand, its objects
		// (slices of line) decoded below, before the next line.
		msg, ok := parseChanges(line)
		if !ok {
			msg = api.WatchMessage{}
			if err := json.Unmarshal(line, &msg); err != nil {
				return delivered, fmt.Errorf("decoding watch message: %w", err)
			}
		}
		switch msg.Type {
		case api.WatchHeartbeat:
			continue
		case api.WatchSnapshot:
			if msg.Snapshot == nil {
				return delivered, errors.New("snapshot message without a snapshot")
			}
			msg.Snapshot.Store = msg.Store
			cache.reset(msg.Snapshot)
		case api.WatchChanges:
			if msg.Store != cache.store {
				return delivered, fmt.Errorf("changes of store %q on a watch of store %q", msg.Store, cache.store)
			}
			if err := cache.apply(msg.Revision, msg.Changes); err != nil {
				return delivered, err
			}
		default:
			return delivered, fmt.Errorf("unknown watch message type %q", msg.Type)
		}
		apply(cache.snapshot())
		delivered = true
	}
}

// maxWatchLine bounds one message of the watch stream: the snapshot it
// starts with is one line.
const maxWatchLine = 256 << 20

// lineReader reads the newline-ended lines of a stream, each at most max
// bytes. A line longer than the reader's buffer is gathered in a buffer of
// its own, dropped at the next line: a stream's one large message, the
// snapshot it starts with, does not keep its size in memory for the life of
// the stream.
type lineReader struct {
	r    *bufio.Reader
	max  int
	long []byte
}

// next returns the next line, valid until the following call.
func (lr *lineReader) next() ([]byte, error) {
	lr.long = nil
	line, err := lr.r.ReadSlice('\n')
	if err == nil || errors.Is(err, io.EOF) && len(line) > 0 {
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	lr.long = append([]byte(nil), line...)
	for {
		line, err = lr.r.ReadSlice('\n')
		if len(lr.long)+len(line) > lr.max {
			return nil, fmt.Errorf("watch message longer than %d bytes", lr.max)
		}
		lr.long = append(lr.long, line...)
		switch {
		case err == nil, errors.Is(err, io.EOF):
			return lr.long, nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return nil, err
		}
	}
}

// cache is the client's copy of every object at revision of store, each
// kind's list sorted by name. The snapshots it delivers share these lists,
// so a change never writes to a list a snapshot has: it replaces the list
// of each kind it touches by an edited copy (and leaves the others shared),
// decoding only the objects that changed.
type cache struct {
	revision int64
	store    string
	objects  model.Objects
}

func newCache() *cache {
	c := &cache{}
	c.reset(&model.Snapshot{})
	return c
}

func (c *cache) reset(s *model.Snapshot) {
	c.revision, c.store = s.Revision, s.Store
	byKind := map[model.Kind]map[string]model.Object{}
	for _, obj := range s.Each() {
		k := obj.ObjectKind()
		if byKind[k] == nil {
			byKind[k] = map[string]model.Object{}
		}
		byKind[k][obj.ObjectMeta().Name] = obj
		compact(obj)
	}
	c.objects = model.Objects{}
	for _, k := range model.Kinds {
		for _, name := range slices.Sorted(maps.Keys(byKind[k])) {
			c.objects.Add(byKind[k][name])
		}
	}
}

func (c *cache) apply(rev int64, changes []api.Change) error {
	if rev <= c.revision {
		return fmt.Errorf("watch went back from revision %d to %d", c.revision, rev)
	}
	type edit struct {
		kind model.Kind
		name string
		obj  model.Object // nil deletes
	}
	// The objects put, decoded side by side when there are many (the
	// first revision of a configuration).
	objs := make([]model.Object, len(changes))
	errs := make([]error, len(changes))
	parallel.Do(len(changes), parallelDecode, func(i int) {
		if ch := &changes[i]; ch.Op == api.OpPut {
			objs[i], errs[i] = decodeChange(ch)
		}
	})
	edits := make([]edit, 0, len(changes))
	perKind := map[model.Kind]int{}
	for i, ch := range changes {
		switch ch.Op {
		case api.OpDelete:
		case api.OpPut:
			if errs[i] != nil {
				return errs[i]
			}
		default:
			return fmt.Errorf("unknown change op %q", ch.Op)
		}
		edits = append(edits, edit{ch.Kind, ch.Name, objs[i]})
		perKind[ch.Kind]++
	}
	// A kind with few changes has them put in place, one binary search
	// and one copy of its list; one with many (a first revision of
	// everything) is merged and sorted once.
	copied := map[model.Kind]bool{}
	bulk := map[model.Kind]map[string]model.Object{}
	for _, e := range edits {
		if perKind[e.kind] > bulkEdits {
			if bulk[e.kind] == nil {
				bulk[e.kind] = map[string]model.Object{}
			}
			bulk[e.kind][e.name] = e.obj
			continue
		}
		isCopy := copied[e.kind]
		if err := c.edit(e.kind, e.name, e.obj, &isCopy); err != nil {
			return err
		}
		copied[e.kind] = isCopy
	}
	for kind, byName := range bulk {
		if err := c.merge(kind, byName); err != nil {
			return err
		}
	}
	c.revision = rev
	return nil
}

// parallelDecode is how many changes a revision has before their objects
// are decoded side by side.
const parallelDecode = 256

// decodeChange decodes the object a put change carries.
func decodeChange(ch *api.Change) (model.Object, error) {
	obj, err := model.New(ch.Kind)
	if err != nil {
		return nil, fmt.Errorf("change of unknown kind %q", ch.Kind)
	}
	if err := json.Unmarshal(ch.Object, obj); err != nil {
		return nil, fmt.Errorf("decoding %s %s: %w", ch.Kind, ch.Name, err)
	}
	// The list is kept by the name the change gives.
	obj.ObjectMeta().Name = ch.Name
	compact(obj)
	return obj, nil
}

// bulkEdits is how many changes of one kind a revision may have before
// they are merged into its list at once rather than put in one by one
// (each an insertion that moves the rest of the list).
const bulkEdits = 64

// merge replaces the list of kind by a new one sorted by name, with the
// objects of byName (nil to delete) in place of those of the same name.
func (c *cache) merge(kind model.Kind, byName map[string]model.Object) error {
	l, err := c.list(kind)
	if err != nil {
		return err
	}
	return l.Merge(byName)
}

// edit puts obj (or, for nil, deletes name) in the list of kind, first
// copying the list unless *copied says it is a copy already.
func (c *cache) edit(kind model.Kind, name string, obj model.Object, copied *bool) error {
	l, err := c.list(kind)
	if err != nil {
		return err
	}
	return l.Put(name, obj, copied)
}

// list is the cache's list of kind.
func (c *cache) list(kind model.Kind) (model.List, error) {
	l, ok := c.objects.List(kind)
	if !ok {
		return nil, fmt.Errorf("change of unknown kind %q", kind)
	}
	return l, nil
}

// snapshot returns the objects as a snapshot. It shares the cache's lists,
// which no later change writes to.
func (c *cache) snapshot() *model.Snapshot {
	return &model.Snapshot{Revision: c.revision, Store: c.store, Objects: c.objects}
}
