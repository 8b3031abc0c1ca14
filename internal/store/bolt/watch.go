package bolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/bbolt"

	"trellis.dev/trellis/internal/store"
)

// replayBatch bounds how many revisions one read transaction scans during a
// replay. bbolt cannot grow its memory map while a read transaction is open,
// so a replay must not hold one while it waits on a slow consumer.
const replayBatch = 256

// watcher is one Watch call's registration. Writers hand it events through
// live without ever blocking; its goroutine (serve) forwards them to the
// caller's channel.
type watcher struct {
	prefix string
	// live is closed, under Store.mu, by whoever removes the watcher from
	// Store.watchers: a writer that found it full, Close, or serve on exit.
	live chan store.Event
}

// Watch delivers every transaction after revision `after` that changed a key
// with the prefix: first from the on-disk history, then live. See
// store.Store.Watch.
//
// The channel is closed when ctx ends, when the store closes, and when the
// caller falls WatchBuffer events behind; in the last case it first delivers
// everything queued, so the caller can re-watch from the last revision it
// received without a gap.
func (s *Store) Watch(ctx context.Context, prefix string, after int64) (<-chan store.Event, error) {
	if after < 0 {
		return nil, fmt.Errorf("store: watch %s: negative revision %d", prefix, after)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: watch %s: %w", prefix, err)
	}
	w := &watcher{prefix: prefix, live: make(chan store.Event, s.watchBuffer)}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("store: watch %s: %w", prefix, store.ErrClosed)
	}
	if after < s.compacted {
		compacted := s.compacted
		s.mu.Unlock()
		return nil, fmt.Errorf("store: watch %s from %d: history starts after %d: %w", prefix, after, compacted, store.ErrCompacted)
	}
	// publish holds s.mu too, so registering here splits the stream exactly:
	// revisions up to upTo are on disk for the replay, later ones will arrive
	// on w.live. Nothing is lost or seen twice.
	upTo := s.rev
	s.watchers[w] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	out := make(chan store.Event)
	go s.serve(ctx, w, out, after, upTo)
	return out, nil
}

// serve replays history in (after, upTo], then forwards live events, until
// ctx ends, the store closes, or w.live is closed.
func (s *Store) serve(ctx context.Context, w *watcher, out chan<- store.Event, after, upTo int64) {
	defer s.wg.Done()
	defer close(out)
	defer s.unregister(w)

	send := func(ev store.Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		case <-s.done:
			return false
		}
	}
	stopped := func() bool {
		select {
		case <-ctx.Done():
			return true
		case <-s.done:
			return true
		default:
			return false
		}
	}

	for next := after + 1; next <= upTo; {
		if stopped() {
			return
		}
		evs, n, err := s.replay(w.prefix, next, upTo)
		if err != nil {
			// Most likely a writer trimmed the history under a replay that
			// was too slow; the caller re-watches and gets ErrCompacted.
			level := slog.LevelError
			if errors.Is(err, store.ErrCompacted) {
				level = slog.LevelWarn
			}
			s.log.Log(ctx, level, "store: watch replay failed, closing the watch", "prefix", w.prefix, "revision", next, "error", err)
			return
		}
		for _, ev := range evs {
			if !send(ev) {
				return
			}
		}
		next = n
	}

	for {
		select {
		case ev, ok := <-w.live:
			if !ok {
				return
			}
			// Watching from a revision not yet reached skips up to it.
			if ev.Revision > after && !send(ev) {
				return
			}
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// replay reads the history entries from revision next to upTo, at most
// replayBatch of them in one read transaction, and returns those touching
// prefix and the revision to continue from.
func (s *Store) replay(prefix string, next, upTo int64) ([]store.Event, int64, error) {
	var evs []store.Event
	err := s.db.View(func(tx *bbolt.Tx) error {
		compacted, err := metaInt(tx.Bucket(bucketMeta), metaCompacted)
		if err != nil {
			return err
		}
		if next <= compacted {
			return fmt.Errorf("revision %d trimmed during replay: %w", next, store.ErrCompacted)
		}
		c := tx.Bucket(bucketHistory).Cursor()
		k, v := c.Seek(revKey(next))
		for end := min(upTo, next+replayBatch-1); next <= end; next++ {
			if len(k) != 8 || revFromKey(k) != next {
				return fmt.Errorf("history has no revision %d: %w", next, errCorrupt)
			}
			changes, err := decodeChanges(next, v, prefix)
			if err != nil {
				return err
			}
			if len(changes) > 0 {
				evs = append(evs, store.Event{Revision: next, Changes: changes})
			}
			k, v = c.Next()
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: watch %s: replay: %w", prefix, err)
	}
	return evs, next, nil
}

// publish records a committed revision and hands its event to every watcher
// whose prefix it touches. A watcher whose buffer is full is dropped rather
// than waited for: writers never block on readers.
func (s *Store) publish(ev store.Event, compacted int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev, s.compacted = ev.Revision, compacted
	for w := range s.watchers {
		wev, ok := filter(ev, w.prefix)
		if !ok {
			continue
		}
		select {
		case w.live <- wev:
		default:
			s.log.Warn("store: watcher fell behind, closing its channel",
				"prefix", w.prefix, "revision", ev.Revision, "buffer", s.watchBuffer)
			s.dropLocked(w)
		}
	}
}

// filter returns the part of ev under prefix, and false if there is none.
// When every change matches it returns ev itself, sharing its Changes.
func filter(ev store.Event, prefix string) (store.Event, bool) {
	n := 0
	for _, c := range ev.Changes {
		if strings.HasPrefix(c.KV.Key, prefix) {
			n++
		}
	}
	switch n {
	case 0:
		return store.Event{}, false
	case len(ev.Changes):
		return ev, true
	}
	out := store.Event{Revision: ev.Revision, Changes: make([]store.Change, 0, n)}
	for _, c := range ev.Changes {
		if strings.HasPrefix(c.KV.Key, prefix) {
			out.Changes = append(out.Changes, c)
		}
	}
	return out, true
}

// unregister removes w if a writer or Close has not already done so.
func (s *Store) unregister(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watchers[w]; ok {
		s.dropLocked(w)
	}
}

// dropLocked removes w and closes its live channel. s.mu must be held.
func (s *Store) dropLocked(w *watcher) {
	delete(s.watchers, w)
	close(w.live)
}
