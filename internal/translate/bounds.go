package translate

import (
	"fmt"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// The route CRDs' bounds on a route's lists (their maxItems). An apiserver
// refuses a route past them; the translator reports it, for the file
// provider, which reads routes without one.
const (
	maxRouteHostnames    = 16
	maxTLSRouteHostnames = 1024
	maxParentRefs        = 32
	maxRules             = 16
	maxRuleMatches       = 64
	// maxRouteMatches bounds the matches of all of a route's rules
	// together (a CEL rule of the CRDs: fewer than 128).
	maxRouteMatches = 127
	maxRuleFilters  = 16
	maxRuleBackends = 16
	maxMatchValues  = 16 // header and query parameter matches of a match
)

// tooMany reports a list at field with n items where at most limit are
// allowed, and returns whether it did.
func (t *translator) tooMany(src model.SourceRef, field string, n, limit int) bool {
	if n <= limit {
		return false
	}
	t.problem(src, field, string(gatewayv1.RouteReasonUnsupportedValue), "%d items; at most %d are allowed", n, limit)
	return true
}

// checkRouteLists reports what the route CRDs refuse in a route's lists:
// too many items, two rules of one name, and two parentRefs to one parent
// that neither sectionName nor port tells apart (or that set them
// unalike).
func (t *translator) checkRouteLists(r *route, src model.SourceRef) {
	maxHosts := maxRouteHostnames
	if r.tls != nil {
		maxHosts = maxTLSRouteHostnames
	}
	t.tooMany(src, "spec.hostnames", len(r.hostnames), maxHosts)
	if !t.tooMany(src, "spec.parentRefs", len(r.spec.ParentRefs), maxParentRefs) {
		t.checkParentRefs(src, r.spec.ParentRefs)
	}
	switch {
	case r.http != nil:
		checkRules(t, src, r.http.Spec.Rules, func(r *gatewayv1.HTTPRouteRule) (*gatewayv1.SectionName, int, int, int) {
			return r.Name, len(r.Matches), len(r.Filters), len(r.BackendRefs)
		})
	case r.grpc != nil:
		checkRules(t, src, r.grpc.Spec.Rules, func(r *gatewayv1.GRPCRouteRule) (*gatewayv1.SectionName, int, int, int) {
			return r.Name, len(r.Matches), len(r.Filters), len(r.BackendRefs)
		})
	case r.tls != nil:
		checkRules(t, src, r.tls.Spec.Rules, func(r *gatewayv1.TLSRouteRule) (*gatewayv1.SectionName, int, int, int) {
			return r.Name, 0, 0, len(r.BackendRefs)
		})
	}
}

// checkRules checks a route's rules, whose name and list lengths lists
// gives.
func checkRules[R any](t *translator, src model.SourceRef, rules []R, lists func(*R) (name *gatewayv1.SectionName, matches, filters, backends int)) {
	if t.tooMany(src, "spec.rules", len(rules), maxRules) {
		return
	}
	total := 0
	for i := range rules {
		name, matches, filters, backends := lists(&rules[i])
		total += matches
		// The field is formatted only for a problem: this runs for every
		// rule of every route translated.
		if matches > maxRuleMatches || filters > maxRuleFilters || backends > maxRuleBackends {
			p := fmt.Sprintf("spec.rules[%d]", i)
			t.tooMany(src, p+".matches", matches, maxRuleMatches)
			t.tooMany(src, p+".filters", filters, maxRuleFilters)
			t.tooMany(src, p+".backendRefs", backends, maxRuleBackends)
		}
		if name == nil || *name == "" {
			continue
		}
		for j := range i {
			if other, _, _, _ := lists(&rules[j]); other != nil && *other == *name {
				t.problem(src, fmt.Sprintf("spec.rules[%d].name", i), string(gatewayv1.RouteReasonUnsupportedValue), "%q is also the name of rules[%d]; rule names must be unique", *name, j)
				break
			}
		}
	}
	if total > maxRouteMatches {
		t.problem(src, "spec.rules", string(gatewayv1.RouteReasonUnsupportedValue), "%d matches in all; a route's rules may have at most %d", total, maxRouteMatches)
	}
}

// checkParentRefs reports parentRefs to one parent (group, kind, namespace
// as written, name) that the CRDs' rules refuse in both channels: one that
// repeats another's sectionName and port, or that sets sectionName where the
// other does not. (The experimental channel also refuses a port set on one
// alone; the standard channel takes it, so the translator does too.)
func (t *translator) checkParentRefs(src model.SourceRef, refs []gatewayv1.ParentReference) {
	for i := range refs {
		a := &refs[i]
		for j := range i {
			b := &refs[j]
			if deref(a.Group, gatewayGroup) != deref(b.Group, gatewayGroup) || deref(a.Kind, "Gateway") != deref(b.Kind, "Gateway") ||
				deref(a.Namespace, "") != deref(b.Namespace, "") || a.Name != b.Name {
				continue
			}
			field := fmt.Sprintf("spec.parentRefs[%d]", i)
			aSection, bSection := deref(a.SectionName, ""), deref(b.SectionName, "")
			aPort, bPort := deref(a.Port, 0), deref(b.Port, 0)
			switch {
			case aSection == bSection && aPort == bPort:
				t.problem(src, field, string(gatewayv1.RouteReasonUnsupportedValue), "repeats parentRefs[%d]; sectionName or port must tell two references to one parent apart", j)
			case (aSection == "") != (bSection == ""):
				t.problem(src, field, string(gatewayv1.RouteReasonUnsupportedValue), "parentRefs[%d] names the same parent; both must set sectionName, or neither", j)
			default:
				continue
			}
			break
		}
	}
}
