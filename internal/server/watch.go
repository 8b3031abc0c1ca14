package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

// watch streams the configuration: a snapshot (unless the client resumes from
// a revision still in history), then every transaction in order, with
// heartbeats while idle. It ends when the client goes away or the store ends
// the watch; clients reconnect with the last revision they saw. With a kind
// filter (?kind=, see kindsParam) the snapshot and the messages carry only
// those kinds, and a transaction that changed none of them sends nothing.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, cluster string) error {
	from, err := revisionParam(r)
	if err != nil {
		return err
	}
	kinds, err := kindsParam(r)
	if err != nil {
		return err
	}
	own := s.budgetsOf(cluster)
	open := &own.watches
	defer open.Add(-1)
	if n := open.Add(1); n > int64(s.cfg.MaxWatches) {
		return errorf(http.StatusTooManyRequests, "cluster %q has %d watch streams open, the most it may (MaxWatches): close one first", cluster, n-1)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	// Until its first message is sent, a stream holds a share of the
	// snapshot budget: the size of the last whole-store read, taken
	// before its own read so that streams waiting their turn hold no
	// copy of the store.
	// Before any read the size is unknown: a stream reserves its
	// cluster's whole share.
	share := max(s.cfg.MaxSnapshotBytes/4, 1)
	reserved := share
	if n := s.storeBytes.Load(); n > 0 {
		reserved = min(n, share)
	}
	wait, cancelWait := context.WithTimeout(ctx, s.cfg.SnapshotTimeout)
	err = own.snapshots.Acquire(wait, reserved)
	if err == nil {
		if err = s.snapshots.Acquire(wait, reserved); err != nil {
			own.snapshots.Release(reserved)
		}
	}
	cancelWait()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return errorf(http.StatusServiceUnavailable, "watch snapshots of %d bytes are being sent at once, the most the server sends (MaxSnapshotBytes; a quarter of it to one cluster): watch again later", s.cfg.MaxSnapshotBytes)
	}
	releaseOnce := sync.OnceFunc(func() {
		s.snapshots.Release(reserved)
		own.snapshots.Release(reserved)
	})
	defer releaseOnce()

	// One read of everything: the snapshot, if the stream starts with one,
	// and the view that decides which private keys the caller may read.
	kvs, rev, err := s.st.List(ctx, "/")
	if err != nil {
		return err
	}
	size := int64(0)
	for _, kv := range kvs {
		size += int64(len(kv.Key) + len(kv.Value))
	}
	s.storeBytes.Store(size)
	// A stream of no certificates needs no view of who may read their
	// keys (for a controller following exports, not decoding every
	// service).
	view, err := newKeyView(cluster, kvs, rev, kinds == nil || kinds[model.KindCertificate])
	if err != nil {
		return err
	}
	if kinds != nil {
		kvs = slices.DeleteFunc(kvs, func(kv store.KeyValue) bool {
			kind, _, _ := model.ParseKey(kv.Key)
			return !kinds[kind]
		})
	}
	var first *api.WatchMessage
	var events <-chan store.Event
	// A stream that resumes cannot tell what it missed of which keys the
	// caller may read, unless every certificate is the caller's own; it
	// starts over from a snapshot otherwise.
	err = errors.New("another cluster's certificates")
	if view.onlyOwnCertificates() {
		events, err = s.resume(ctx, from, r.URL.Query().Get("store"))
	}
	if err != nil {
		if first, err = view.snapshot(kvs, rev); err != nil {
			return err
		}
		from = rev
		if events, err = s.st.Watch(ctx, "/", from); err != nil {
			return err
		}
	}
	kvs = nil

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	id := s.st.ID()
	// A client that does not read gives its stream back by
	// SnapshotTimeout: its share of the snapshot budget while the first
	// message is sent, its place among the cluster's MaxWatches after.
	rc := http.NewResponseController(w)
	// A stream that ends with its client reading leaves no deadline on
	// the connection for its next request.
	written := true
	defer func() {
		if written {
			rc.SetWriteDeadline(time.Time{})
		}
	}()
	send := func(m *api.WatchMessage) bool {
		m.Store = id
		rc.SetWriteDeadline(time.Now().Add(s.cfg.SnapshotTimeout))
		var err error
		var b []byte
		if m.Snapshot == nil {
			b = appendMessage(nil, m)
		} else if b, err = appendSnapshot(nil, m); err != nil {
			s.log.Error("watch snapshot not encoded", "cluster", cluster, "error", err)
			written = false
			return false
		}
		_, err = w.Write(b)
		if err != nil {
			written = false
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if first != nil && !send(first) {
		return nil
	}
	s.log.Debug("watch started", "cluster", cluster, "revision", from, "snapshot", first != nil)
	first = nil
	releaseOnce()

	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	last := from
	// The transaction removing a cluster also deletes what it owns; a
	// stream of that cluster's (by its certificate) ends before it, so
	// that its proxies keep serving what they last had rather than being
	// told to drop it by the control plane that cut them off.
	byCert, _ := r.Context().Value(byCertKey{}).(bool)
	ownAdmission := model.Key(model.KindCluster, cluster)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-heartbeat.C:
			if !send(&api.WatchMessage{Type: api.WatchHeartbeat, Revision: last}) {
				return nil
			}
		case ev, ok := <-events:
			if !ok {
				// The store ended the watch (a slow reader, or shutdown). The
				// client resumes from `last`.
				return nil
			}
			if byCert && slices.ContainsFunc(ev.Changes, func(c store.Change) bool {
				return c.Type == store.ChangeDelete && c.KV.Key == ownAdmission
			}) {
				s.log.Info("cluster removed: ending its watch stream before its removal", "cluster", cluster, "revision", ev.Revision)
				return nil
			}
			// A view that follows networks and services sees every
			// change (one of them may make a certificate readable, which
			// is sent again); other streams decode only what they send.
			if kinds != nil && !view.follow {
				ev.Changes = slices.DeleteFunc(slices.Clone(ev.Changes), func(c store.Change) bool {
					kind, _, _ := model.ParseKey(c.KV.Key)
					return !kinds[kind]
				})
				if len(ev.Changes) == 0 {
					continue
				}
			}
			msg, err := view.changes(ev)
			if err != nil {
				s.log.Error("watch: encoding changes", "revision", ev.Revision, "err", err)
				return nil
			}
			if kinds != nil {
				msg.Changes = slices.DeleteFunc(msg.Changes, func(c api.Change) bool { return !kinds[c.Kind] })
				if len(msg.Changes) == 0 {
					continue
				}
			}
			if !send(msg) {
				return nil
			}
			last = ev.Revision
			heartbeat.Reset(s.cfg.Heartbeat)
		}
	}
}

// maxKindParams bounds the values of ?kind= a watch may give (each kind once
// is len(model.Kinds) of them).
const maxKindParams = 64

// kindsParam reads a watch's kind filter: ?kind= once per kind, or kinds
// separated by commas, each a model.Kind in any case, singular or plural
// (as the path of GET /v1/{kind}). It returns nil, every kind, without one;
// an unknown or empty kind is a 400 naming it.
func kindsParam(r *http.Request) (map[model.Kind]bool, error) {
	values, ok := r.URL.Query()["kind"]
	if !ok {
		return nil, nil
	}
	if len(values) > maxKindParams {
		return nil, errorf(http.StatusBadRequest, "query parameter kind: %d values, at most %d", len(values), maxKindParams)
	}
	kinds := map[model.Kind]bool{}
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			k, err := model.ParseKind(name)
			if err != nil {
				return nil, errorf(http.StatusBadRequest, "query parameter kind: %v", err)
			}
			kinds[k] = true
		}
	}
	return kinds, nil
}

// resume watches from a client's revision, or fails when the client must
// start over from a snapshot: it has none, its revision was compacted, it
// comes from another store (the server's data was replaced), or it is ahead
// of this store (replaced by a copy from before it).
func (s *Server) resume(ctx context.Context, from int64, storeID string) (<-chan store.Event, error) {
	if from == 0 {
		return nil, errors.New("no revision")
	}
	if storeID != "" && storeID != s.st.ID() {
		return nil, fmt.Errorf("revision %d is of store %s, not %s", from, storeID, s.st.ID())
	}
	cur, err := s.st.Revision(ctx)
	if err != nil {
		return nil, err
	}
	if from > cur {
		return nil, fmt.Errorf("revision %d is ahead of the store's %d", from, cur)
	}
	return s.st.Watch(ctx, "/", from)
}

// appendMessage appends m, a message without a snapshot, as a
// json.Encoder writes it (a line), and as fast as copying its changes'
// objects: json.Marshal made them, so they are as the Encoder would
// compact them, which for a first apply's 20,000 objects takes a good part
// of a second.
func appendMessage(b []byte, m *api.WatchMessage) []byte {
	n := 64 + len(m.Store)
	for i := range m.Changes {
		n += 64 + len(m.Changes[i].Name) + len(m.Changes[i].Object)
	}
	b = slices.Grow(b, n)
	b = appendMessageStart(b, m)
	if len(m.Changes) > 0 {
		b = append(b, `,"changes":[`...)
		for i, c := range m.Changes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"op":`...)
			b = appendString(b, c.Op)
			b = append(b, `,"kind":`...)
			b = appendString(b, string(c.Kind))
			b = append(b, `,"name":`...)
			b = appendString(b, c.Name)
			if len(c.Object) > 0 {
				b = append(b, `,"object":`...)
				b = append(b, c.Object...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...)
}

// appendMessageStart appends the fields every message starts with: its
// type, revision and store.
func appendMessageStart(b []byte, m *api.WatchMessage) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, m.Type)
	b = append(b, `,"revision":`...)
	b = strconv.AppendInt(b, m.Revision, 10)
	if m.Store != "" {
		b = append(b, `,"store":`...)
		b = appendString(b, m.Store)
	}
	return b
}

// appendSnapshot appends m, a snapshot message without changes, as a
// json.Encoder writes it (a line), its objects marshalled one at a time:
// the Encoder would grow a buffer of encoding/json's pool to the whole
// snapshot's size (tens of MB at 10,000 services), which the pool then
// keeps for as long as anything in the process marshals JSON now and then
// (model.Objects.AppendJSON).
func appendSnapshot(b []byte, m *api.WatchMessage) ([]byte, error) {
	b = appendMessageStart(b, m)
	b = append(b, `,"snapshot":{"revision":`...)
	b = strconv.AppendInt(b, m.Snapshot.Revision, 10)
	if m.Snapshot.Store != "" {
		b = append(b, `,"store":`...)
		b = appendString(b, m.Snapshot.Store)
	}
	// The objects' fields are the snapshot's own (Objects is embedded):
	// AppendJSON's object without its braces.
	n := len(b)
	b, err := m.Snapshot.Objects.AppendJSON(b)
	if err != nil {
		return nil, err
	}
	if len(b) == n+2 { // {}
		b = b[:n]
	} else {
		b[n] = ','
		b = b[:len(b)-1]
	}
	return append(b, "}}\n"...), nil
}

// appendString appends s as encoding/json encodes a string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
