package client

import (
	"unique"

	"trellis.dev/trellis/internal/model"
)

// compact trims what decoding left oversized in an object the follow
// keeps: the target lists of a target group or an export, which the JSON
// decoder grows by half again as it reads them, are copied to their length,
// and each target's cluster and state, a handful of distinct values
// repeated by every target, share one copy of each string. At issue 15's
// 100,000 targets that is several megabytes a proxy holds for as long as
// it serves the objects. obj must be the caller's own, not yet shared.
func compact(obj model.Object) {
	switch o := obj.(type) {
	case *model.TargetGroup:
		o.Targets = compactTargets(o.Targets)
	case *model.ServiceExport:
		for i := range o.Ports {
			o.Ports[i].Targets = compactTargets(o.Ports[i].Targets)
		}
	}
}

func compactTargets(ts []model.Target) []model.Target {
	if cap(ts) > len(ts) {
		ts = append(make([]model.Target, 0, len(ts)), ts...)
	}
	for i := range ts {
		t := &ts[i]
		t.Cluster = unique.Make(t.Cluster).Value()
		t.State = unique.Make(t.State).Value()
	}
	return ts
}
