// Package mcs holds the Multi-Cluster Services rules: how the exports of
// one namespaced name from several clusters merge into the one import
// every cluster sees, and which conflicts each export reports (KEP-1645:
// the union of ports; otherwise the oldest export wins).
//
// Every controller computes the same result from the same exports, so each
// can write the conditions of its own exports and the import in its own
// cluster without talking to the others. The package is pure: no
// Kubernetes client, no store.
package mcs

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/model"
)

// Conflict reasons, as the MCS API names them.
const (
	ReasonPortConflict                  = "PortConflict"
	ReasonTypeConflict                  = "TypeConflict"
	ReasonSessionAffinityConflict       = "SessionAffinityConflict"
	ReasonSessionAffinityConfigConflict = "SessionAffinityConfigConflict"
	ReasonLabelsConflict                = "LabelsConflict"
	ReasonAnnotationsConflict           = "AnnotationsConflict"
	ReasonInternalTrafficPolicyConflict = "InternalTrafficPolicyConflict"
	ReasonTrafficDistributionConflict   = "TrafficDistributionConflict"
)

// Import is the merged view of one exported service.
type Import struct {
	Namespace, Name string
	Type            model.ExportType
	// Ports is the union of the exports' ports (name, protocol, app
	// protocol, port; no targets), sorted by port, protocol and name.
	Ports                  []model.ExportPort
	SessionAffinity        string
	SessionAffinityTimeout int32
	InternalTrafficPolicy  string
	TrafficDistribution    string
	Labels, Annotations    map[string]string
	// Clusters are the exporting clusters, sorted.
	Clusters []string
	// Conflicts is what disagrees, in the order of the reasons above; the
	// same for every export (the KEP asks that a conflict be raised on
	// every export involved). Empty when all exports agree.
	Conflicts []Conflict
}

// Conflict is one property the exports disagree on.
type Conflict struct {
	Reason string
	// Field names the property, as the Service spells it ("spec.ports").
	Field string
	// Message says which export's value is used and how many disagree,
	// after the KEP's example: "Using ClusterSetIP from oldest export in
	// cluster-1, 2/5 clusters disagree".
	Message string
}

// Reasons joins the conflicts' reasons with commas, as the Conflict
// condition's reason carries several.
func (im *Import) Reasons() string {
	rs := make([]string, len(im.Conflicts))
	for i, c := range im.Conflicts {
		rs[i] = c.Reason
	}
	return strings.Join(rs, ",")
}

// Message joins the conflicts' messages.
func (im *Import) Message() string {
	ms := make([]string, len(im.Conflicts))
	for i, c := range im.Conflicts {
		ms[i] = c.Message
	}
	return strings.Join(ms, "; ")
}

// Merge merges the exports of one namespaced name (from different clusters)
// into the import. exports must not be empty. The oldest export (by
// ExportedAt, which the control plane stamps, then cluster name) decides
// every property they disagree on; one not stamped yet (a controller's own
// export before the control plane holds it) is younger than every stamped
// one.
func Merge(exports []*model.ServiceExport) *Import {
	es := slices.Clone(exports)
	slices.SortFunc(es, func(a, b *model.ServiceExport) int {
		return cmp.Or(olderFirst(a, b), cmp.Compare(a.Owner, b.Owner))
	})
	oldest := es[0]
	im := &Import{
		Namespace: oldest.Namespace, Name: oldest.Service, Type: oldest.Type,
		SessionAffinity: oldest.SessionAffinity, SessionAffinityTimeout: oldest.SessionAffinityTimeout,
		InternalTrafficPolicy: oldest.InternalTrafficPolicy, TrafficDistribution: oldest.TrafficDistribution,
		Labels: maps.Clone(oldest.ExportedLabels), Annotations: maps.Clone(oldest.ExportedAnnotations),
	}
	for _, e := range es {
		im.Clusters = append(im.Clusters, e.Owner)
	}
	slices.Sort(im.Clusters)

	ports, portsDisagree := unionPorts(es)
	im.Ports = ports

	disagree := func(reason, field, value string, differs func(e *model.ServiceExport) bool) {
		n := 0
		for _, e := range es[1:] {
			if differs(e) {
				n++
			}
		}
		if n > 0 {
			im.Conflicts = append(im.Conflicts, Conflict{Reason: reason, Field: field, Message: fmt.Sprintf(
				"Using %s from oldest export in %s, %d/%d clusters disagree", value, oldest.Owner, n, len(es))})
		}
	}
	if portsDisagree > 0 {
		im.Conflicts = append(im.Conflicts, Conflict{Reason: ReasonPortConflict, Field: "spec.ports", Message: fmt.Sprintf(
			"Using the union of ports, with %s's where they conflict (oldest export), %d/%d clusters disagree", oldest.Owner, portsDisagree, len(es))})
	}
	disagree(ReasonTypeConflict, "spec.type", string(oldest.Type), func(e *model.ServiceExport) bool { return e.Type != oldest.Type })
	disagree(ReasonSessionAffinityConflict, "spec.sessionAffinity", orNone(oldest.SessionAffinity), func(e *model.ServiceExport) bool {
		return e.SessionAffinity != oldest.SessionAffinity
	})
	disagree(ReasonSessionAffinityConfigConflict, "spec.sessionAffinityConfig", fmt.Sprintf("timeout %ds", oldest.SessionAffinityTimeout), func(e *model.ServiceExport) bool {
		return e.SessionAffinityTimeout != oldest.SessionAffinityTimeout
	})
	disagree(ReasonLabelsConflict, "spec.exportedLabels", "exported labels", func(e *model.ServiceExport) bool {
		return !maps.Equal(e.ExportedLabels, oldest.ExportedLabels)
	})
	disagree(ReasonAnnotationsConflict, "spec.exportedAnnotations", "exported annotations", func(e *model.ServiceExport) bool {
		return !maps.Equal(e.ExportedAnnotations, oldest.ExportedAnnotations)
	})
	disagree(ReasonInternalTrafficPolicyConflict, "spec.internalTrafficPolicy", orNone(oldest.InternalTrafficPolicy), func(e *model.ServiceExport) bool {
		return e.InternalTrafficPolicy != oldest.InternalTrafficPolicy
	})
	disagree(ReasonTrafficDistributionConflict, "spec.trafficDistribution", orNone(oldest.TrafficDistribution), func(e *model.ServiceExport) bool {
		return e.TrafficDistribution != oldest.TrafficDistribution
	})
	return im
}

// olderFirst orders a and b by ExportedAt, the unstamped last.
func olderFirst(a, b *model.ServiceExport) int {
	switch az, bz := a.ExportedAt.IsZero(), b.ExportedAt.IsZero(); {
	case az && !bz:
		return 1
	case bz && !az:
		return -1
	}
	return a.ExportedAt.Compare(b.ExportedAt)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// portKey is a port's identity apart from its name.
type portKey struct {
	protocol string
	port     int32
}

// unionPorts merges the ports of es (oldest first): a port joins the union
// unless the union already has a port of its name with another protocol or
// number, or a port of its protocol and number under another name; then
// the older one stays. disagree counts the exports whose port set is not
// the oldest's, since any difference is reported (the union is what every
// cluster serves, but a cluster missing a port does not serve it).
func unionPorts(es []*model.ServiceExport) (ports []model.ExportPort, disagree int) {
	byName := map[string]bool{}
	byKey := map[portKey]bool{}
	for _, e := range es {
		for _, p := range e.Ports {
			k := portKey{p.Protocol, p.Port}
			if p.Name != "" && byName[p.Name] || byKey[k] {
				continue // the older port stays
			}
			p.Targets = nil
			byName[p.Name], byKey[k] = true, true
			ports = append(ports, p)
		}
	}
	set := func(e *model.ServiceExport) []string {
		s := make([]string, len(e.Ports))
		for i, p := range e.Ports {
			s[i] = fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port)
		}
		slices.Sort(s)
		return s
	}
	first := set(es[0])
	for _, e := range es[1:] {
		if !slices.Equal(set(e), first) {
			disagree++
		}
	}
	slices.SortFunc(ports, func(a, b model.ExportPort) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Name, b.Name))
	})
	return ports, disagree
}

// Served returns the exports of o that are served: those whose cluster's
// admission (its Cluster in o) allows the export's namespace
// (model.Cluster.AllowsExport), and refused, the others. The control plane
// refuses an export outside the list when it is written; one stored before
// the list was narrowed is left out here, by every controller and proxy
// alike, until its cluster deletes it. An export of a cluster without a
// Cluster object (one authenticated by a bearer token) is served.
func Served(o *model.Objects) (served, refused []*model.ServiceExport) {
	clusters := make(map[string]*model.Cluster, len(o.Clusters))
	for i := range o.Clusters {
		clusters[o.Clusters[i].Name] = &o.Clusters[i]
	}
	served = make([]*model.ServiceExport, 0, len(o.Exports))
	for i := range o.Exports {
		e := &o.Exports[i]
		if c := clusters[e.Owner]; c != nil && !c.AllowsExport(e.Namespace) {
			refused = append(refused, e)
			continue
		}
		served = append(served, e)
	}
	return served, refused
}

// Group sorts exports into the imports they make: by namespace and name.
func Group(exports []*model.ServiceExport) map[[2]string][]*model.ServiceExport {
	out := map[[2]string][]*model.ServiceExport{}
	for _, e := range exports {
		k := [2]string{e.Namespace, e.Service}
		out[k] = append(out[k], e)
	}
	return out
}
