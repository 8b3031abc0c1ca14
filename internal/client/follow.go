package client

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
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
}

// Follow watches the configuration and calls apply with a complete snapshot
// after every revision it learns, in revision order, from one goroutine. It
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
		apply = c.withCacheFile(opts.CacheFile, cache, apply)
	}
	backoff := opts.MinBackoff
	// tried counts the servers that failed since the last wait.
	tried := 0
	for {
		server := c.server()
		delivered, err := c.stream(ctx, server, opts.IdleTimeout, cache, apply)
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
func (c *Client) stream(ctx context.Context, server int, idle time.Duration, cache *cache, apply func(*model.Snapshot)) (delivered bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := url.Values{}
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

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 256<<20)
	for sc.Scan() {
		watchdog.Reset(idle)
		var msg api.WatchMessage
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return delivered, fmt.Errorf("decoding watch message: %w", err)
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
	if err := context.Cause(ctx); err != nil {
		return delivered, err
	}
	if err := sc.Err(); err != nil {
		return delivered, err
	}
	return delivered, errors.New("server closed the stream")
}

// cache is the client's copy of every object, keyed by kind and name, at
// revision of store.
type cache struct {
	revision int64
	store    string
	objects  map[model.Kind]map[string]model.Object
}

func newCache() *cache {
	c := &cache{}
	c.reset(&model.Snapshot{})
	return c
}

func (c *cache) reset(s *model.Snapshot) {
	c.revision, c.store = s.Revision, s.Store
	c.objects = map[model.Kind]map[string]model.Object{}
	for _, k := range model.Kinds {
		c.objects[k] = map[string]model.Object{}
	}
	for _, obj := range s.Each() {
		c.objects[obj.ObjectKind()][obj.ObjectMeta().Name] = obj
	}
}

func (c *cache) apply(rev int64, changes []api.Change) error {
	if rev <= c.revision {
		return fmt.Errorf("watch went back from revision %d to %d", c.revision, rev)
	}
	for _, ch := range changes {
		byName, ok := c.objects[ch.Kind]
		if !ok {
			return fmt.Errorf("change of unknown kind %q", ch.Kind)
		}
		switch ch.Op {
		case api.OpDelete:
			delete(byName, ch.Name)
		case api.OpPut:
			obj, err := model.New(ch.Kind)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(ch.Object, obj); err != nil {
				return fmt.Errorf("decoding %s %s: %w", ch.Kind, ch.Name, err)
			}
			byName[ch.Name] = obj
		default:
			return fmt.Errorf("unknown change op %q", ch.Op)
		}
	}
	c.revision = rev
	return nil
}

// snapshot builds a fresh snapshot, sorted by name so equal configurations
// compile identically.
func (c *cache) snapshot() *model.Snapshot {
	s := &model.Snapshot{Revision: c.revision, Store: c.store}
	for _, k := range model.Kinds {
		names := make([]string, 0, len(c.objects[k]))
		for name := range c.objects[k] {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			s.Add(c.objects[k][name])
		}
	}
	return s
}
