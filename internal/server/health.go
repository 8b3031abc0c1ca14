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
)

// healthRecord is one part of one holder's latest health report as
// stored. Part and Parts are 0 for a report in one part.
type healthRecord struct {
	Holder   string            `json:"holder"`
	Reported time.Time         `json:"reported"`
	Part     int               `json:"part,omitempty"`
	Parts    int               `json:"parts,omitempty"`
	Groups   []api.GroupHealth `json:"groups"`
}

// healthStamp is when a part of a holder's report was kept, and in how
// many parts the holder reported then.
type healthStamp struct {
	Reported time.Time `json:"reported"`
	Parts    int       `json:"parts,omitempty"`
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
	kept, err := s.keepHealthPart(r.Context(), cluster, &req, time.Now())
	if err != nil {
		return err
	}
	if !kept {
		if req.Parts > 1 {
			return errorf(http.StatusTooManyRequests, "holder %q reported part %d less than %v ago: this report is not kept", req.Holder, req.Part, healthKeepEvery)
		}
		return errorf(http.StatusTooManyRequests, "holder %q reported less than %v ago: this report is not kept", req.Holder, healthKeepEvery)
	}
	writeJSON(w, http.StatusOK, api.HealthReported{KeepEveryMillis: healthKeepEvery.Milliseconds()})
	return nil
}

// checkHealthReport names every invalid field of a report, up to the
// first 100.
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
	for i, g := range req.Groups {
		at := fmt.Sprintf("groups[%d]", i)
		if !model.ValidName(g.TargetGroup) {
			if !add(at+".targetGroup", "%q is not a target group's name", g.TargetGroup) {
				return fields
			}
		}
		for j, t := range g.Targets {
			if _, err := netip.ParseAddrPort(t.Address); err != nil {
				if !add(fmt.Sprintf("%s.targets[%d].address", at, j), "%q is not an IP address and port", t.Address) {
					return fields
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
// maxReporters other holders (parts count as their holder, once). On the
// way it deletes records older than HealthFresh and the holder's parts
// from req.Parts on. It reads the stamps only: their size is bounded by
// holders × parts, not by the reports' size.
func (s *Server) keepHealthPart(ctx context.Context, cluster string, req *api.HealthReport, now time.Time) (bool, error) {
	parts := max(req.Parts, 1)
	name := partName(req.Holder, req.Part)
	rec := healthRecord{Holder: req.Holder, Reported: now.UTC(), Groups: req.Groups}
	if parts > 1 {
		rec.Part, rec.Parts = req.Part, parts
	}
	doc, _ := json.Marshal(rec)
	stamp, _ := json.Marshal(healthStamp{Reported: rec.Reported, Parts: rec.Parts})
	recPrefix, stampPrefix := healthPrefix+cluster+"/", healthStampPrefix+cluster+"/"
	for range 3 {
		kvs, _, err := s.st.List(ctx, stampPrefix)
		if err != nil {
			return false, err
		}
		var ops []store.Op
		drop := func(kv store.KeyValue, n string) {
			ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfRevision: kv.ModRevision},
				store.Op{Type: store.OpDelete, Key: recPrefix + n})
		}
		others := map[string]bool{}
		records := 0 // fresh records kept beside this one
		for _, kv := range kvs {
			n := strings.TrimPrefix(kv.Key, stampPrefix)
			var st healthStamp
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				return false, fmt.Errorf("decoding %s: %w", kv.Key, err)
			}
			holder, part, ok := splitPartName(n)
			switch {
			case n == name:
				if d := now.Sub(st.Reported); d >= 0 && d < healthKeepEvery {
					return false, nil
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
		if len(others) >= maxReporters {
			return false, errorf(http.StatusTooManyRequests, "%d other components already report here: holder %q's report is not kept", len(others), req.Holder)
		}
		if records >= maxHealthRecords {
			return false, errorf(http.StatusTooManyRequests, "cluster %q already keeps %d fresh report parts, the most it keeps: holder %q's part %d is not kept", cluster, records, req.Holder, req.Part)
		}
		ops = append(ops, store.Op{Type: store.OpPut, Key: recPrefix + name, Value: doc},
			store.Op{Type: store.OpPut, Key: stampPrefix + name, Value: stamp})
		_, err = s.st.Txn(ctx, ops...)
		if errors.Is(err, store.ErrConflict) {
			continue // a stamp read changed meanwhile: read them again
		}
		return err == nil, err
	}
	return false, errorf(http.StatusConflict, "cluster %q's health reports kept changing; report again", cluster)
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
