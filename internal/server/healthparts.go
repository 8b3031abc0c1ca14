package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/store"
)

// healthParts keeps the health report parts TargetHealth decoded, by
// cluster and part name, so that a part is read from the store and
// decoded once per change, not once per Lattice ListTargets call. An
// entry is known by the part's stamp's revision, which keepHealthPart
// writes in the same transaction as the part's record: a part reported
// again has a new one. Its content is known by the digest of the record
// it was decoded from: a part reported again unchanged (its new stamp
// has that digest) keeps its content, one changed is decoded again. A
// cluster keeps only the
// entries of the fresh stamps its last read listed (at most
// maxHealthRecords), and entries older than HealthFresh are swept from
// every cluster, so the parts kept are at most those the store keeps.
type healthParts struct {
	mu       sync.Mutex
	clusters map[string]map[string]*healthPart // cluster → part name → part
	swept    time.Time
	// decodes counts the parts read and decoded, for tests.
	decodes atomic.Int64
}

// healthPart is one part of a holder's report as one stamp says. Its
// fields are set when it is made and never change.
type healthPart struct {
	rev      int64 // its stamp's ModRevision
	holder   string
	part     int
	parts    int       // in how many parts the holder reported then
	reported time.Time // when it was kept
	*healthContent
}

// healthContent is what one record of a part says, shared by the parts
// of stamps that name its digest. Its fields are set before done is
// closed.
type healthContent struct {
	done chan struct{}
	// digest is the record's digestOf, as read (not as its stamp said).
	digest string
	// groups are the part's targets by target group.
	groups map[string][]api.TargetHealth
	// missing says the record was gone when read: a later read reads it
	// again.
	missing bool
	err     error
}

// sameContent reports whether c, decoded, is the record digest names.
func (c *healthContent) sameContent(digest string) bool {
	select {
	case <-c.done:
		return digest != "" && c.err == nil && !c.missing && c.digest == digest
	default:
		return false
	}
}

// freshHealthParts returns cluster's parts reported at most HealthFresh
// ago, decoded. It lists the cluster's stamps (small: holders × parts)
// and reads the records of parts it has not decoded at their stamp's
// revision; a part another call is decoding is waited for, not decoded
// twice.
func (s *Server) freshHealthParts(ctx context.Context, cluster string) ([]*healthPart, error) {
	stampPrefix := healthStampPrefix + cluster + "/"
	kvs, _, err := s.st.List(ctx, stampPrefix)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	c := &s.health
	var parts, mine []*healthPart
	c.mu.Lock()
	if now.Sub(c.swept) > HealthFresh {
		c.sweep(now)
	}
	old := c.clusters[cluster]
	kept := make(map[string]*healthPart, len(kvs))
	for _, kv := range kvs {
		n := strings.TrimPrefix(kv.Key, stampPrefix)
		holder, part, ok := splitPartName(n)
		if !ok {
			continue
		}
		p := old[n]
		if p == nil || p.rev != kv.ModRevision {
			var st healthStamp
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				c.mu.Unlock()
				return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
			}
			if now.Sub(st.Reported) > HealthFresh {
				continue
			}
			np := &healthPart{rev: kv.ModRevision, holder: holder, part: part, parts: max(st.Parts, 1), reported: st.Reported}
			if p != nil && p.sameContent(st.Digest) {
				np.healthContent = p.healthContent // reported again unchanged
			} else {
				np.healthContent = &healthContent{done: make(chan struct{})}
				mine = append(mine, np)
			}
			p = np
		} else if now.Sub(p.reported) > HealthFresh {
			continue
		}
		kept[n] = p
		parts = append(parts, p)
	}
	if len(kept) == 0 {
		delete(c.clusters, cluster)
	} else {
		if c.clusters == nil {
			c.clusters = map[string]map[string]*healthPart{}
		}
		c.clusters[cluster] = kept
	}
	c.mu.Unlock()

	// Decode the parts this call made, whether or not it waits for them:
	// others may be waiting. The store read does not end with this call.
	rctx := context.WithoutCancel(ctx)
	for _, p := range mine {
		s.decodeHealthPart(rctx, cluster, p)
	}
	for _, p := range parts {
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.err != nil || p.missing {
			c.mu.Lock()
			if cp := c.clusters[cluster]; cp[partName(p.holder, p.part)] == p {
				delete(cp, partName(p.holder, p.part)) // the next call reads it again
			}
			c.mu.Unlock()
		}
		if p.err != nil {
			return nil, p.err
		}
	}
	return parts, nil
}

// decodeHealthPart reads and decodes p's record, then closes p.done. A
// record deleted since its stamp was listed leaves p without groups.
func (s *Server) decodeHealthPart(ctx context.Context, cluster string, p *healthPart) {
	defer close(p.done)
	s.health.decodes.Add(1)
	key := healthPrefix + cluster + "/" + partName(p.holder, p.part)
	kv, err := s.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		p.missing = true
		return
	}
	if err != nil {
		p.err = err
		return
	}
	var rec healthRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		p.err = fmt.Errorf("decoding %s: %w", key, err)
		return
	}
	p.digest = digestOf(kv.Value)
	p.groups = make(map[string][]api.TargetHealth, len(rec.Groups)+len(rec.Targets))
	for _, g := range rec.Groups {
		p.groups[g.TargetGroup] = append(p.groups[g.TargetGroup], g.Targets...)
	}
	for _, g := range rec.Targets {
		n := 0
		for _, addrs := range g.Status {
			n += len(addrs)
		}
		targets := slices.Grow(p.groups[g.TargetGroup], n)
		for _, st := range targetStatuses {
			for _, a := range g.Status[st] {
				targets = append(targets, api.TargetHealth{Address: a, Status: st})
			}
		}
		p.groups[g.TargetGroup] = targets
	}
}

// sweep drops the parts of every cluster reported more than HealthFresh
// ago. c.mu is held.
func (c *healthParts) sweep(now time.Time) {
	c.swept = now
	for cluster, parts := range c.clusters {
		for n, p := range parts {
			if now.Sub(p.reported) > HealthFresh {
				delete(parts, n)
			}
		}
		if len(parts) == 0 {
			delete(c.clusters, cluster)
		}
	}
}

// groupHealth merges what parts report of group's targets: by "host:port",
// the status most holders give, a tie going to the worse. A part past its
// holder's last count of parts no longer counts (keepHealthPart deletes
// it too; this covers a race with that delete).
func groupHealth(parts []*healthPart, latest map[string]*healthPart, group string) map[string]string {
	votes := map[string]map[string]int{} // address → status → reporters
	found := false
	for _, p := range parts {
		targets, ok := p.groups[group]
		if !ok || p.part >= latest[p.holder].parts {
			continue
		}
		found = true
		for _, t := range targets {
			if votes[t.Address] == nil {
				votes[t.Address] = map[string]int{}
			}
			votes[t.Address][t.Status]++
		}
	}
	if !found {
		return nil
	}
	out := make(map[string]string, len(votes))
	for addr, counts := range votes {
		best := ""
		for _, st := range targetStatuses {
			if counts[st] > counts[best] {
				best = st
			}
		}
		out[addr] = best
	}
	return out
}

// latestParts returns each holder's last kept part among parts.
func latestParts(parts []*healthPart) map[string]*healthPart {
	latest := map[string]*healthPart{}
	for _, p := range parts {
		if l, ok := latest[p.holder]; !ok || p.reported.After(l.reported) {
			latest[p.holder] = p
		}
	}
	return latest
}
