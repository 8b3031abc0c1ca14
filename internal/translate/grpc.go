package translate

import (
	"fmt"
	"regexp"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// grpcRules translates a GRPCRoute's rules, in order. A gRPC call is an
// HTTP/2 POST to "/<service>/<method>", so method matches become path
// matches, and the rest translates as an HTTPRoute's does.
func (t *translator) grpcRules(r *route, src model.SourceRef, specRules []gatewayv1.GRPCRouteRule) []model.Rule {
	if len(specRules) == 0 {
		// As for HTTPRoutes: one rule matching every call, with no backends.
		specRules = []gatewayv1.GRPCRouteRule{{}}
	}
	out := make([]model.Rule, len(specRules))
	for i := range specRules {
		rule := &specRules[i]
		p := fmt.Sprintf("spec.rules[%d]", i)
		mr := newRule(p, i, rule.Name, rule.Matches, func(path string, m *gatewayv1.GRPCRouteMatch) model.Match {
			return t.grpcMatch(src, path, m)
		})
		filters, filtersOK := t.filters(r, src, p+".filters", httpFilters(rule.Filters))
		if rule.SessionPersistence != nil {
			mr.SessionPersistence = t.session(r, src, p+".sessionPersistence", i, rule.SessionPersistence)
		}
		var backends []model.WeightedTargetGroup
		for j := range rule.BackendRefs {
			b := &rule.BackendRefs[j]
			hb := gatewayv1.HTTPBackendRef{BackendRef: b.BackendRef, Filters: httpFilters(b.Filters)}
			backends = append(backends, t.backend(r, src, fmt.Sprintf("%s.backendRefs[%d]", p, j), &hb))
		}
		setAction(&mr, filters, filtersOK, backends)
		out[i] = mr
	}
	return out
}

// httpFilters converts GRPCRoute filters to the HTTPRoute filters of the
// same types and configuration, which translate the same way.
func httpFilters(fs []gatewayv1.GRPCRouteFilter) []gatewayv1.HTTPRouteFilter {
	if len(fs) == 0 {
		return nil
	}
	out := make([]gatewayv1.HTTPRouteFilter, len(fs))
	for i, f := range fs {
		out[i] = gatewayv1.HTTPRouteFilter{
			Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
			RequestHeaderModifier:  f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier,
			RequestMirror:          f.RequestMirror,
			ExtensionRef:           f.ExtensionRef,
		}
	}
	return out
}

// anyName stands for a service or method a regular-expression method
// match leaves out: one path segment.
const anyName = "[^/]+"

// The GRPCRoute CRD's patterns for an Exact match's service and method.
var (
	grpcServiceRE = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	grpcMethodRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

// grpcMatch translates one GRPCRoute match. The method match becomes a
// path match on "/<service>/<method>":
//
//   - Exact service and method: Exact "/<service>/<method>";
//   - Exact service only: PathPrefix "/<service>/";
//   - Exact method only: RegularExpression "/[^/]+/<method>";
//   - RegularExpression: RegularExpression "/(?:<service>)/(?:<method>)",
//     either left out matching any one segment.
//
// No method match matches every call. Headers match as HTTPRoute headers
// do (Exact by default).
func (t *translator) grpcMatch(src model.SourceRef, p string, m *gatewayv1.GRPCRouteMatch) model.Match {
	path := model.PathMatch{Type: model.PathPrefix, Value: "/"}
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service, ""), deref(mm.Method, "")
		switch typ := deref(mm.Type, gatewayv1.GRPCMethodMatchExact); typ {
		case gatewayv1.GRPCMethodMatchExact:
			switch {
			case svc != "" && !grpcServiceRE.MatchString(svc):
				t.problem(src, p+".method.service", string(gatewayv1.RouteReasonUnsupportedValue), "%q is not a gRPC service name (%s)", svc, grpcServiceRE)
			case method != "" && !grpcMethodRE.MatchString(method):
				t.problem(src, p+".method.method", string(gatewayv1.RouteReasonUnsupportedValue), "%q is not a gRPC method name (%s)", method, grpcMethodRE)
			case svc != "" && method != "":
				path = model.PathMatch{Type: model.PathExact, Value: "/" + svc + "/" + method}
			case svc != "":
				path = model.PathMatch{Type: model.PathPrefix, Value: "/" + svc + "/"}
			case method != "":
				path = model.PathMatch{Type: model.PathRegularExpression, Value: "/" + anyName + "/" + regexp.QuoteMeta(method)}
			default:
				t.problem(src, p+".method", string(gatewayv1.RouteReasonUnsupportedValue), "a method match needs a service, a method or both")
			}
		case gatewayv1.GRPCMethodMatchRegularExpression:
			if svc == "" {
				svc = anyName
			}
			if method == "" {
				method = anyName
			}
			path = model.PathMatch{Type: model.PathRegularExpression, Value: "/(?:" + svc + ")/(?:" + method + ")"}
		default:
			// Passed on for the model's validation to reject the rule.
			path = model.PathMatch{Type: model.PathMatchType(typ)}
		}
	}
	// gRPC header matches are HTTP header matches of the same types.
	headers := make([]gatewayv1.HTTPHeaderMatch, len(m.Headers))
	for i, h := range m.Headers {
		headers[i] = gatewayv1.HTTPHeaderMatch{Type: (*gatewayv1.HeaderMatchType)(h.Type), Name: gatewayv1.HTTPHeaderName(h.Name), Value: h.Value}
	}
	return model.Match{Path: &path, Headers: t.headerMatches(src, p, headers)}
}

// tlsRules translates a TLSRoute's rule: one model rule without matches
// that forwards connections to its backends by weight. The Gateway API
// allows one rule; a TLSRoute without backends (or whose backends are all
// invalid) gets one invalid backend, so that its connections are refused.
func (t *translator) tlsRules(r *route, src model.SourceRef, specRules []gatewayv1.TLSRouteRule) []model.Rule {
	out := model.Rule{Name: "rule-0"}
	if len(specRules) == 0 {
		t.problem(src, "spec.rules", string(gatewayv1.RouteReasonUnsupportedValue), "a TLSRoute needs one rule; its connections are refused")
	}
	for i := 1; i < len(specRules); i++ {
		t.problem(src, fmt.Sprintf("spec.rules[%d]", i), string(gatewayv1.RouteReasonUnsupportedValue), "a TLSRoute takes one rule; this one is left out")
	}
	var backends []model.WeightedTargetGroup
	if len(specRules) > 0 {
		rule := &specRules[0]
		if rule.Name != nil {
			out.Name = string(*rule.Name)
		}
		if len(rule.BackendRefs) == 0 {
			t.problem(src, "spec.rules[0].backendRefs", string(gatewayv1.RouteReasonUnsupportedValue), "a TLSRoute's rule needs a backendRef; its connections are refused")
		}
		for j := range rule.BackendRefs {
			hb := gatewayv1.HTTPBackendRef{BackendRef: rule.BackendRefs[j]}
			backends = append(backends, t.backend(r, src, fmt.Sprintf("spec.rules[0].backendRefs[%d]", j), &hb))
		}
	}
	if len(backends) == 0 {
		backends = []model.WeightedTargetGroup{{Weight: 1}}
	}
	out.Action.Forward = &model.ForwardAction{Backends: backends}
	return []model.Rule{out}
}
