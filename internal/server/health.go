package server

// Target health reports. Each proxy checks its own cluster's targets
// (internal/proxy/health) and reports what it sees (POST /v1/health,
// by token or certificate); the server keeps each holder's latest report
// under healthPrefix, outside the model's "/" keys so that no report
// reaches the watch stream, and TargetHealth merges a cluster's fresh
// reports for the VPC Lattice API's ListTargets (decoding each part once
// per report: healthparts.go).
//
// A holder's report may come in parts (api.HealthReport.Part, Parts),
// each kept as its own record: healthPrefix+cluster+"/"+holder for part
// 0 (and a report in one part, as before parts), and
// healthPrefix+cluster+"/"+holder+"/"+part for the others. Beside each
// record a small stamp under healthStampPrefix (same name) holds when it
// was reported and in how many parts, so that keeping a report reads the
// stamps, not every holder's whole report.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

const (
	healthPrefix      = "health/"
	healthStampPrefix = "healthat/"
)

// Bounds of health reports.
const (
	// healthKeepEvery is how often one holder's report is kept, at most;
	// a report sooner after the last is refused (429) and not kept.
	healthKeepEvery = time.Second
	// HealthFresh is how old a report may be and still count.
	HealthFresh = 30 * time.Second
	// api.MaxHealthGroups and api.MaxHealthTargets bound one report's
	// groups and targets over all its groups; maxHealthBody its encoding.
	maxHealthGroups  = api.MaxHealthGroups
	maxHealthTargets = api.MaxHealthTargets
	maxHealthBody    = 2 << 20
	// maxHealthParts bounds the parts of one holder's report: a holder
	// keeps at most maxHealthParts records of maxHealthBody each.
	maxHealthParts = api.MaxHealthParts
	// maxHealthRecords bounds the fresh parts one cluster keeps, over all
	// its holders (at most maxHealthBody each: 256 MiB), so that
	// maxReporters holders of maxHealthParts parts each cannot make it
	// keep 2 GiB; eight holders can each report in every part.
	maxHealthRecords = 128
	// maxHealthRecord bounds one part's record as stored, under etcd's
	// default --max-request-bytes (1.5 MiB) with room for the rest of
	// its transaction. A valid part is at most about 1.3 MB
	// (TestHealthPartAtBoundsOnEtcd); this refuses, with 413, what
	// would not fit should that change.
	maxHealthRecord = 1<<20 + 384<<10
	// maxHealthDrops bounds the old records one keep deletes (two
	// writes each), so that its transaction stays within etcd's default
	// --max-txn-ops (128) however many parts went stale at once; the
	// next keeps delete the rest.
	maxHealthDrops = 32
)

// healthRecord is one part of one holder's latest health report as
// stored: its targets by target group and status. When it was reported is
// its stamp's alone, so that a part reported again unchanged rewrites the
// small stamp, not the record (nor the store's history of it). Part and
// Parts are 0 for a report in one part.
type healthRecord struct {
	Holder  string        `json:"holder"`
	Part    int           `json:"part,omitempty"`
	Parts   int           `json:"parts,omitempty"`
	Targets []recordGroup `json:"targets,omitempty"`
	// Groups is how records kept a part before Targets: read, no longer
	// written.
	Groups []api.GroupHealth `json:"groups,omitempty"`
}

// recordGroup is one target group's targets in a record: their canonical
// "host:port" by status. Written so, a part at the bounds (1,000 groups
// of 253-byte names, 20,000 IPv6 targets) is a record within etcd's
// default request size (maxHealthRecord), which the API's form
// ({"address","status"} a target) is not.
type recordGroup struct {
	TargetGroup string              `json:"targetGroup"`
	Status      map[string][]string `json:"status"`
}

// healthStamp is when a part of a holder's report was last kept, in how
// many parts the holder reported then, and the SHA-256 of the part's
// record (hex; empty in stamps written before digests), which a part
// reported again must match to keep the record as it is.
type healthStamp struct {
	Reported time.Time `json:"reported"`
	Parts    int       `json:"parts,omitempty"`
	Digest   string    `json:"digest,omitempty"`
}

// partName is the name under the cluster's prefixes of holder's part.
func partName(holder string, part int) string {
	if part == 0 {
		return holder
	}
	return holder + "/" + strconv.Itoa(part)
}

// splitPartName undoes partName; ok is false for a name it did not make.
func splitPartName(name string) (holder string, part int, ok bool) {
	holder, p, found := strings.Cut(name, "/")
	if !found {
		return holder, 0, true
	}
	part, err := strconv.Atoi(p)
	return holder, part, err == nil && part > 0 && strconv.Itoa(part) == p
}

// targetStatuses are the statuses a report may give a target, in the
// order a tie between reporters is broken: the worse first.
var targetStatuses = []string{"UNHEALTHY", "INITIAL", "HEALTHY", "UNAVAILABLE", "DRAINING"}

// reportHealth answers POST /v1/health: the caller's cluster's proxy
// holder reports the health of the cluster's targets.
func (s *Server) reportHealth(w http.ResponseWriter, r *http.Request, cluster string) error {
	var req api.HealthReport
	release, err := s.readBodyFrom(s.budgetsOf(cluster).health, w, r, &req, maxHealthBody)
	if err != nil {
		return err
	}
	defer release()
	if fields := checkHealthReport(&req); len(fields) > 0 {
		return &httpError{status: http.StatusUnprocessableEntity, body: api.Error{Message: fields.Error(), Fields: fields}}
	}
	digest, kept, err := s.keepHealthPart(r.Context(), cluster, &req, time.Now())
	if err != nil {
		return err
	}
	if !kept {
		if req.Parts > 1 {
			return errorf(http.StatusTooManyRequests, "holder %q reported part %d less than %v ago: this report is not kept", req.Holder, req.Part, healthKeepEvery)
		}
		return errorf(http.StatusTooManyRequests, "holder %q reported less than %v ago: this report is not kept", req.Holder, healthKeepEvery)
	}
	writeJSON(w, http.StatusOK, api.HealthReported{KeepEveryMillis: healthKeepEvery.Milliseconds(), Digest: digest})
	return nil
}

// checkHealthReport names every invalid field of a report, up to the
// first 100. It rewrites the targets' addresses in their canonical form
// (what ListTargets looks up, and what bounds a record's size).
func checkHealthReport(req *api.HealthReport) model.FieldErrors {
	var fields model.FieldErrors
	add := func(field, format string, args ...any) bool {
		fields = append(fields, &model.FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
		return len(fields) < 100
	}
	if !validHolder(req.Holder) {
		add("holder", "%q is not a holder name: at most 63 lower-case alphanumerics, '-' or '.'", req.Holder)
	}
	if req.Parts < 0 || req.Parts > maxHealthParts {
		add("parts", "%d is not between 1 and %d (or absent, for one part)", req.Parts, maxHealthParts)
	} else if req.Part < 0 || req.Part >= max(req.Parts, 1) {
		add("part", "%d is not between 0 and parts-1 (%d)", req.Part, max(req.Parts, 1)-1)
	}
	if req.Digest != "" {
		if !validDigest(req.Digest) {
			add("digest", "%q is not a digest the server gave: 64 lower-case hex digits", req.Digest)
		}
		if req.Groups != nil {
			add("groups", "a report by digest has no groups")
		}
		return fields
	}
	if len(req.Groups) > maxHealthGroups {
		add("groups", "at most %d target groups", maxHealthGroups)
		return fields
	}
	total := 0
	for _, g := range req.Groups {
		total += len(g.Targets)
	}
	if total > maxHealthTargets {
		add("groups", "at most %d targets in all, not %d", maxHealthTargets, total)
		return fields
	}
	var canon [64]byte
	for i, g := range req.Groups {
		at := fmt.Sprintf("groups[%d]", i)
		if !model.ValidName(g.TargetGroup) {
			if !add(at+".targetGroup", "%q is not a target group's name", g.TargetGroup) {
				return fields
			}
		}
		for j, t := range g.Targets {
			ap, err := netip.ParseAddrPort(t.Address)
			switch {
			case err != nil || ap.Addr().Zone() != "":
				if !add(fmt.Sprintf("%s.targets[%d].address", at, j), "%q is not an IP address (without a zone) and port", t.Address) {
					return fields
				}
			default:
				if c := ap.AppendTo(canon[:0]); string(c) != t.Address {
					g.Targets[j].Address = string(c)
				}
			}
			if !slices.Contains(targetStatuses, t.Status) {
				if !add(fmt.Sprintf("%s.targets[%d].status", at, j), "%q is not one of %v", t.Status, targetStatuses) {
					return fields
				}
			}
		}
	}
	return fields
}

// keepHealthPart keeps req (valid) as its holder's part in cluster, unless
// the holder's same part was kept less than healthKeepEvery ago (then it
// reports false), and unless the cluster already keeps fresh reports of
// maxReporters other holders (parts count as their holder, once). It
// returns the digest the part is kept with. A part the same as the one
// kept (the same digest and parts, still fresh) rewrites only its stamp;
// a report by digest (req.Digest) does only that, and is refused (412)
// unless it names the part kept so. On the way it deletes records older
// than HealthFresh (up to maxHealthDrops) and the holder's parts from
// req.Parts on. It reads the stamps only: their size is bounded by
// holders × parts, not by the reports' size.
func (s *Server) keepHealthPart(ctx context.Context, cluster string, req *api.HealthReport, now time.Time) (string, bool, error) {
	parts := max(req.Parts, 1)
	name := partName(req.Holder, req.Part)
	var doc []byte
	digest := req.Digest
	if digest == "" {
		rec := healthRecord{Holder: req.Holder, Targets: recordGroups(req.Groups)}
		if parts > 1 {
			rec.Part, rec.Parts = req.Part, parts
		}
		doc, _ = json.Marshal(rec)
		if len(doc) > maxHealthRecord {
			return "", false, errorf(http.StatusRequestEntityTooLarge, "holder %q's part %d is %d bytes stored, over the %d the store takes: report it in more parts", req.Holder, req.Part, len(doc), maxHealthRecord)
		}
		digest = digestOf(doc)
	}
	stampDoc := healthStamp{Reported: now.UTC(), Digest: digest}
	if parts > 1 {
		stampDoc.Parts = parts
	}
	stamp, _ := json.Marshal(stampDoc)
	recPrefix, stampPrefix := healthPrefix+cluster+"/", healthStampPrefix+cluster+"/"
	for range 3 {
		kvs, _, err := s.st.List(ctx, stampPrefix)
		if err != nil {
			return "", false, err
		}
		var ops []store.Op
		drops := 0
		drop := func(kv store.KeyValue, n string) {
			if drops < maxHealthDrops {
				drops++
				ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfRevision: kv.ModRevision},
					store.Op{Type: store.OpDelete, Key: recPrefix + n})
			}
		}
		others := map[string]bool{}
		records := 0      // fresh records kept beside this one
		var sameRev int64 // the revision of this part's stamp, if it keeps this content
		for _, kv := range kvs {
			n := strings.TrimPrefix(kv.Key, stampPrefix)
			var st healthStamp
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				return "", false, fmt.Errorf("decoding %s: %w", kv.Key, err)
			}
			holder, part, ok := splitPartName(n)
			switch {
			case n == name:
				d := now.Sub(st.Reported)
				if d >= 0 && d < healthKeepEvery {
					return "", false, nil
				}
				if st.Digest == digest && max(st.Parts, 1) == parts && d <= HealthFresh {
					sameRev = kv.ModRevision
				}
			case !ok || now.Sub(st.Reported) > HealthFresh:
				drop(kv, n)
			case holder == req.Holder:
				if part >= parts {
					drop(kv, n)
				} else {
					records++
				}
			default:
				others[holder] = true
				records++
			}
		}
		if req.Digest != "" && sameRev == 0 {
			return "", false, errorf(http.StatusPreconditionFailed, "holder %q's part %d of %d is not kept fresh with digest %s: report it whole", req.Holder, req.Part, parts, req.Digest)
		}
		if len(others) >= maxReporters {
			return "", false, errorf(http.StatusTooManyRequests, "%d other components already report here: holder %q's report is not kept", len(others), req.Holder)
		}
		if records >= maxHealthRecords {
			return "", false, errorf(http.StatusTooManyRequests, "cluster %q already keeps %d fresh report parts, the most it keeps: holder %q's part %d is not kept", cluster, records, req.Holder, req.Part)
		}
		if sameRev != 0 {
			// The record stays as it is: its stamp, compared, says so.
			ops = append(ops, store.Op{Type: store.OpPut, Key: stampPrefix + name, Value: stamp, IfRevision: sameRev})
		} else {
			ops = append(ops, store.Op{Type: store.OpPut, Key: recPrefix + name, Value: doc},
				store.Op{Type: store.OpPut, Key: stampPrefix + name, Value: stamp})
		}
		_, err = s.st.Txn(ctx, ops...)
		if errors.Is(err, store.ErrConflict) {
			continue // a stamp read changed meanwhile: read them again
		}
		if err != nil {
			return "", false, err
		}
		return digest, true, nil
	}
	return "", false, errorf(http.StatusConflict, "cluster %q's health reports kept changing; report again", cluster)
}

// recordGroups is groups (valid, canonical) as a record keeps them.
func recordGroups(groups []api.GroupHealth) []recordGroup {
	out := make([]recordGroup, len(groups))
	for i, g := range groups {
		out[i] = recordGroup{TargetGroup: g.TargetGroup, Status: map[string][]string{}}
		for _, t := range g.Targets {
			out[i].Status[t.Status] = append(out[i].Status[t.Status], t.Address)
		}
	}
	return out
}

// digestOf is the hex SHA-256 of a record.
func digestOf(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}

// validDigest says whether d is what digestOf makes.
func validDigest(d string) bool {
	if len(d) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// keepHolderRecord stores doc as holder's record under prefix, unless the
// holder's last one is younger than minAge (then it reports false), and
// unless prefix already holds records of maxReporters other holders
// younger than fresh. Records older than fresh are deleted on the way.
// Each record must have a "reported" time.
func (s *Server) keepHolderRecord(ctx context.Context, prefix, holder string, doc []byte, now time.Time, minAge, fresh time.Duration) (bool, error) {
	key := prefix + holder
	kvs, _, err := s.st.List(ctx, prefix)
	if err != nil {
		return false, err
	}
	var ops []store.Op
	others := 0
	for _, kv := range kvs {
		var rec struct {
			Reported time.Time `json:"reported"`
		}
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return false, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		switch {
		case kv.Key == key:
			if d := now.Sub(rec.Reported); d >= 0 && d < minAge {
				return false, nil
			}
		case now.Sub(rec.Reported) > fresh:
			ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfRevision: kv.ModRevision})
		default:
			others++
		}
	}
	if others >= maxReporters {
		return false, errorf(http.StatusTooManyRequests, "%d other components already report here: holder %q's report is not kept", others, holder)
	}
	ops = append(ops, store.Op{Type: store.OpPut, Key: key, Value: doc})
	if _, err := s.st.Txn(ctx, ops...); err != nil && !errors.Is(err, store.ErrConflict) {
		return false, err
	}
	return true, nil
}

// TargetHealth returns what cluster's proxies reported, in reports at most
// HealthFresh old, of its targets' health: by target group, then
// "host:port", the status most reporters give (a tie goes to the worse,
// UNHEALTHY before INITIAL before HEALTHY). A target no fresh report names
// is absent.
func (s *Server) TargetHealth(ctx context.Context, cluster string) (map[string]map[string]string, error) {
	parts, err := s.freshHealthParts(ctx, cluster)
	if err != nil {
		return nil, err
	}
	latest := latestParts(parts)
	out := map[string]map[string]string{}
	for _, p := range parts {
		for group := range p.groups {
			if _, done := out[group]; !done {
				if h := groupHealth(parts, latest, group); h != nil {
					out[group] = h
				}
			}
		}
	}
	return out, nil
}

// TargetGroupHealth is TargetHealth's answer for one target group, nil
// when no fresh report names the group. It reads only the group's
// targets of each report part, which are decoded once per report.
func (s *Server) TargetGroupHealth(ctx context.Context, cluster, group string) (map[string]string, error) {
	parts, err := s.freshHealthParts(ctx, cluster)
	if err != nil {
		return nil, err
	}
	return groupHealth(parts, latestParts(parts), group), nil
}
