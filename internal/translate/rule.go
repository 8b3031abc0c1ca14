package translate

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// defaultRule is what the Gateway API defaults an empty rules list to: one
// rule matching every path, with no backends (so answering 500).
var defaultRule = gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{{}}}

// httpRules translates an HTTPRoute's rules, in order. Precedence between
// matches is the proxy's business; the order kept here is its final
// tie-breaker.
func (t *translator) httpRules(r *route, src model.SourceRef, specRules []gatewayv1.HTTPRouteRule) []model.Rule {
	if len(specRules) == 0 {
		if specRules != nil {
			// Written out empty ("rules: []"), which the CRD refuses;
			// left out, it defaults to defaultRule.
			t.problem(src, "spec.rules", string(gatewayv1.RouteReasonUnsupportedValue), "an empty list; leave rules out for the default rule")
		}
		specRules = []gatewayv1.HTTPRouteRule{defaultRule}
	}
	out := make([]model.Rule, len(specRules))
	for i := range specRules {
		out[i] = t.rule(r, src, i, &specRules[i])
	}
	return out
}

func (t *translator) rule(r *route, src model.SourceRef, i int, rule *gatewayv1.HTTPRouteRule) model.Rule {
	p := fmt.Sprintf("spec.rules[%d]", i)
	// An empty match matches every request: PathPrefix "/".
	out := newRule(p, i, rule.Name, rule.Matches, func(path string, m *gatewayv1.HTTPRouteMatch) model.Match {
		return t.match(src, path, m)
	})
	filters, filtersOK := t.filters(r, src, p+".filters", rule.Filters)
	if rule.Timeouts != nil {
		out.Timeouts = t.timeouts(src, p+".timeouts", rule.Timeouts)
	}
	if rule.Retry != nil {
		out.Retry = t.retry(src, p+".retry", rule.Retry)
	}
	if rule.SessionPersistence != nil {
		out.SessionPersistence = t.session(r, src, p+".sessionPersistence", i, rule.SessionPersistence)
	}
	var backends []model.WeightedTargetGroup
	for j := range rule.BackendRefs {
		backends = append(backends, t.backend(r, src, fmt.Sprintf("%s.backendRefs[%d]", p, j), &rule.BackendRefs[j]))
	}
	setAction(&out, filters, filtersOK, backends)
	return out
}

// newRule is rule i of a route, at path p, before its filters and action:
// named rule-<i> unless it has a name, with one match for each of its
// matches, or a single empty match, matching every request, when it has
// none.
func newRule[M any](p string, i int, name *gatewayv1.SectionName, matches []M, match func(path string, m *M) model.Match) model.Rule {
	out := model.Rule{Name: fmt.Sprintf("rule-%d", i)}
	if name != nil {
		out.Name = string(*name)
	}
	if len(matches) == 0 {
		matches = make([]M, 1)
	}
	for j := range matches {
		out.Matches = append(out.Matches, match(fmt.Sprintf("%s.matches[%d]", p, j), &matches[j]))
	}
	return out
}

// setAction sets a rule's filters and action from what its filters and
// backendRefs translated to.
func setAction(out *model.Rule, filters []model.Filter, filtersOK bool, backends []model.WeightedTargetGroup) {
	switch {
	case !filtersOK:
		// A filter must never be skipped (a redirect skipped would forward
		// instead): the rule answers 500.
		out.Action.FixedResponse = &model.FixedResponseAction{StatusCode: http.StatusInternalServerError}
	case slices.ContainsFunc(filters, func(f model.Filter) bool { return f.Redirect != nil }):
		// The redirect answers every request; backends are never used.
		out.Filters = filters
	case len(backends) == 0:
		// No backends: the Gateway API requires a 500.
		out.Filters = filters
		out.Action.FixedResponse = &model.FixedResponseAction{StatusCode: http.StatusInternalServerError}
	default:
		out.Filters = filters
		out.Action.Forward = &model.ForwardAction{Backends: backends}
	}
}

// httpMethods are the methods the Gateway API lets a match name.
var httpMethods = map[gatewayv1.HTTPMethod]bool{
	gatewayv1.HTTPMethodGet: true, gatewayv1.HTTPMethodHead: true, gatewayv1.HTTPMethodPost: true,
	gatewayv1.HTTPMethodPut: true, gatewayv1.HTTPMethodDelete: true, gatewayv1.HTTPMethodConnect: true,
	gatewayv1.HTTPMethodOptions: true, gatewayv1.HTTPMethodTrace: true, gatewayv1.HTTPMethodPatch: true,
}

// headerMatches translates the header matches of the match at p, Exact
// unless they say otherwise. A header matched again is a problem and left
// out: the Gateway API honours the first match of a name only.
func (t *translator) headerMatches(src model.SourceRef, p string, headers []gatewayv1.HTTPHeaderMatch) []model.ValueMatch {
	var out []model.ValueMatch
	seen := map[string]int{}
	for k, h := range headers {
		name := strings.ToLower(string(h.Name))
		if first, dup := seen[name]; dup {
			t.problem(src, fmt.Sprintf("%s.headers[%d].name", p, k), string(gatewayv1.RouteReasonUnsupportedValue),
				"header %q is already matched by headers[%d]; the Gateway API ignores all but the first", h.Name, first)
			continue
		}
		seen[name] = k
		out = append(out, model.ValueMatch{
			Type: model.ValueMatchType(deref(h.Type, gatewayv1.HeaderMatchExact)), Name: string(h.Name), Value: h.Value,
		})
	}
	return out
}

// badPath says what is wrong with an Exact or PathPrefix path value by the
// HTTPRoute CRD's validation rules (the model checks that it starts with
// '/'), or "" when nothing is.
func badPath(v string) string {
	for _, s := range []string{"//", "/./", "/../", "%2f", "%2F", "#"} {
		if strings.Contains(v, s) {
			return "contain " + strconv.Quote(s)
		}
	}
	for _, s := range []string{"/..", "/."} {
		if strings.HasSuffix(v, s) {
			return "end with " + strconv.Quote(s)
		}
	}
	if len(v) > 1024 {
		return "be longer than 1024 bytes"
	}
	return ""
}

// match translates one match, applying the Gateway API defaults: path
// PathPrefix "/", header and query matches Exact. Values the model rejects
// are passed on for its validation to name.
func (t *translator) match(src model.SourceRef, p string, m *gatewayv1.HTTPRouteMatch) model.Match {
	path := model.PathMatch{Type: model.PathPrefix, Value: "/"}
	if m.Path != nil {
		path.Type = model.PathMatchType(deref(m.Path.Type, gatewayv1.PathMatchPathPrefix))
		path.Value = deref(m.Path.Value, "/")
		if path.Type == model.PathExact || path.Type == model.PathPrefix {
			if bad := badPath(path.Value); bad != "" {
				t.problem(src, p+".path.value", string(gatewayv1.RouteReasonUnsupportedValue), "%q must not %s", path.Value, bad)
			}
		}
	}
	out := model.Match{Path: &path}
	if len(m.Headers) > maxMatchValues || len(m.QueryParams) > maxMatchValues {
		t.tooMany(src, p+".headers", len(m.Headers), maxMatchValues)
		t.tooMany(src, p+".queryParams", len(m.QueryParams), maxMatchValues)
	}
	if m.Method != nil {
		if !httpMethods[*m.Method] {
			t.problem(src, p+".method", string(gatewayv1.RouteReasonUnsupportedValue), "%q is not one of the methods the Gateway API allows", *m.Method)
		}
		out.Method = string(*m.Method)
	}
	out.Headers = t.headerMatches(src, p, m.Headers)
	seen := map[string]int{}
	for k, q := range m.QueryParams {
		if first, dup := seen[string(q.Name)]; dup {
			t.problem(src, fmt.Sprintf("%s.queryParams[%d].name", p, k), string(gatewayv1.RouteReasonUnsupportedValue),
				"query parameter %q is already matched by queryParams[%d]; the Gateway API ignores all but the first", q.Name, first)
			continue
		}
		seen[string(q.Name)] = k
		out.QueryParams = append(out.QueryParams, model.ValueMatch{
			Type: model.ValueMatchType(deref(q.Type, gatewayv1.QueryParamMatchExact)), Name: string(q.Name), Value: q.Value,
		})
	}
	return out
}
