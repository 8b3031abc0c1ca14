package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// corsMaxAge is the CORS filter's maxAge when it gives none (the CRD's
// default; the field's minimum is 1, so zero means unset).
const corsMaxAge = 5

// filters translates an HTTPRoute rule's or backendRef's filters, 1:1 and in
// order. ok is false when a filter cannot be honoured (an ExtensionRef,
// ExternalAuth, an unknown type, a type without its configuration): the
// Gateway API forbids skipping a filter, so the caller answers the requests
// it would have processed with 500. A RequestMirror whose backendRef is
// invalid is left out, as the Gateway API requires, with its problem.
func (t *translator) filters(r *route, src model.SourceRef, p string, fs []gatewayv1.HTTPRouteFilter) (out []model.Filter, ok bool) {
	ok = true
	for i := range fs {
		f := &fs[i]
		fp := fmt.Sprintf("%s[%d]", p, i)
		unsupported := func(field, format string, args ...any) {
			ok = false
			t.problem(src, fp+field, string(gatewayv1.RouteReasonUnsupportedValue), format+"; the requests it applies to are answered with 500", args...)
		}
		if field, present := filterConfig(f); !present {
			unsupported("."+field, "%s is required for a filter of type %s", field, f.Type)
			continue
		}
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			out = append(out, model.Filter{RequestHeaders: headerFilter(f.RequestHeaderModifier)})
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			out = append(out, model.Filter{ResponseHeaders: headerFilter(f.ResponseHeaderModifier)})
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			rd := f.RequestRedirect
			path, pok := t.pathModifier(src, fp+".requestRedirect.path", rd.Path)
			if !pok {
				ok = false
				continue
			}
			out = append(out, model.Filter{Redirect: &model.RedirectFilter{
				Scheme:     deref(rd.Scheme, ""),
				Hostname:   string(deref(rd.Hostname, "")),
				Port:       int32(deref(rd.Port, 0)),
				StatusCode: deref(rd.StatusCode, 302),
				Path:       path,
			}})
		case gatewayv1.HTTPRouteFilterURLRewrite:
			path, pok := t.pathModifier(src, fp+".urlRewrite.path", f.URLRewrite.Path)
			if !pok {
				ok = false
				continue
			}
			out = append(out, model.Filter{Rewrite: &model.RewriteFilter{Hostname: string(deref(f.URLRewrite.Hostname, "")), Path: path}})
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if mf, mok := t.mirror(r, src, fp+".requestMirror", f.RequestMirror); mok {
				out = append(out, model.Filter{Mirror: mf})
			}
		case gatewayv1.HTTPRouteFilterCORS:
			c := f.CORS
			for k, m := range c.AllowMethods {
				if m != "*" && !httpMethods[gatewayv1.HTTPMethod(m)] {
					t.problem(src, fmt.Sprintf("%s.cors.allowMethods[%d]", fp, k), string(gatewayv1.RouteReasonUnsupportedValue), "%q is not one of the methods the Gateway API allows, nor *", m)
				}
			}
			out = append(out, model.Filter{CORS: &model.CORSFilter{
				AllowOrigins:     strs(c.AllowOrigins),
				AllowMethods:     strs(c.AllowMethods),
				AllowHeaders:     strs(c.AllowHeaders),
				ExposeHeaders:    strs(c.ExposeHeaders),
				MaxAgeSeconds:    cmp.Or(c.MaxAge, corsMaxAge),
				AllowCredentials: deref(c.AllowCredentials, false),
			}})
		case gatewayv1.HTTPRouteFilterExtensionRef:
			what := "extensionRef"
			if e := f.ExtensionRef; e != nil {
				what = fmt.Sprintf("extensionRef %s %q", groupKind(e.Group, e.Kind), e.Name)
			}
			unsupported("", "%s: trellis implements no extension filters", what)
		case gatewayv1.HTTPRouteFilterExternalAuth:
			unsupported("", "filter type ExternalAuth is not supported")
		default:
			unsupported(".type", "filter type %q is not supported", f.Type)
		}
	}
	return out, ok
}

// headerFilter translates a header modifier. Names are kept as written; the
// model rejects one header edited twice.
func headerFilter(h *gatewayv1.HTTPHeaderFilter) *model.HeaderFilter {
	out := &model.HeaderFilter{Remove: h.Remove}
	for _, s := range h.Set {
		out.Set = append(out.Set, model.Header{Name: string(s.Name), Value: s.Value})
	}
	for _, a := range h.Add {
		out.Add = append(out.Add, model.Header{Name: string(a.Name), Value: a.Value})
	}
	return out
}

// filterConfig names the field that configures a filter of f's type, and
// tells whether f has it. A type without such a field (ExtensionRef,
// ExternalAuth, an unknown one) has it.
func filterConfig(f *gatewayv1.HTTPRouteFilter) (field string, present bool) {
	switch f.Type {
	case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
		return "requestHeaderModifier", f.RequestHeaderModifier != nil
	case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
		return "responseHeaderModifier", f.ResponseHeaderModifier != nil
	case gatewayv1.HTTPRouteFilterRequestRedirect:
		return "requestRedirect", f.RequestRedirect != nil
	case gatewayv1.HTTPRouteFilterURLRewrite:
		return "urlRewrite", f.URLRewrite != nil
	case gatewayv1.HTTPRouteFilterRequestMirror:
		return "requestMirror", f.RequestMirror != nil
	case gatewayv1.HTTPRouteFilterCORS:
		return "cors", f.CORS != nil
	}
	return "", true
}

// pathModifier translates a redirect's or rewrite's path (none when m is
// nil). ok is false, with a problem, when its type and value do not agree.
func (t *translator) pathModifier(src model.SourceRef, p string, m *gatewayv1.HTTPPathModifier) (_ *model.PathModifier, ok bool) {
	bad := func(format string, args ...any) (*model.PathModifier, bool) {
		t.problem(src, p, string(gatewayv1.RouteReasonUnsupportedValue), format+"; the requests it applies to are answered with 500", args...)
		return nil, false
	}
	if m == nil {
		return nil, true
	}
	switch m.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil || m.ReplacePrefixMatch != nil {
			return bad("type ReplaceFullPath needs replaceFullPath and only it")
		}
		return &model.PathModifier{Type: model.ReplaceFullPath, Value: *m.ReplaceFullPath}, true
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil || m.ReplaceFullPath != nil {
			return bad("type ReplacePrefixMatch needs replacePrefixMatch and only it")
		}
		return &model.PathModifier{Type: model.ReplacePrefixMatch, Value: *m.ReplacePrefixMatch}, true
	}
	return bad("path modifier type %q is not supported", m.Type)
}

// mirror translates a RequestMirror. Its backendRef resolves as a rule's
// does; an invalid one drops the mirror (ok false) with the problem.
func (t *translator) mirror(r *route, src model.SourceRef, p string, m *gatewayv1.HTTPRequestMirrorFilter) (*model.MirrorFilter, bool) {
	out := &model.MirrorFilter{Numerator: 100, Denominator: 100}
	switch {
	case m.Percent != nil && m.Fraction != nil:
		t.problem(src, p, string(gatewayv1.RouteReasonUnsupportedValue), "only one of percent and fraction may be set; the mirror is left out")
		return nil, false
	case m.Percent != nil:
		out.Numerator = *m.Percent
	case m.Fraction != nil:
		out.Numerator, out.Denominator = m.Fraction.Numerator, deref(m.Fraction.Denominator, 100)
	}
	b := t.backend(r, src, p+".backendRef", &gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: m.BackendRef}})
	if b.TargetGroup == "" {
		return nil, false
	}
	out.TargetGroup = b.TargetGroup
	return out, true
}

// durationRE is GEP-2257's Gateway API duration: up to four number-unit
// pairs of h, m, s and ms.
var durationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// duration parses a Gateway API duration, or reports a problem at p.
func (t *translator) duration(src model.SourceRef, p string, d gatewayv1.Duration) (model.Duration, bool) {
	v, err := time.ParseDuration(string(d))
	if !durationRE.MatchString(string(d)) || err != nil {
		t.problem(src, p, string(gatewayv1.RouteReasonUnsupportedValue),
			"%q is not a Gateway API duration (such as 1h, 10s or 500ms); the rule is served without it", d)
		return 0, false
	}
	return model.Duration(v), true
}

// timeouts translates a rule's timeouts. "0s" disables a timeout, which is
// also what leaving it out means to the proxy.
func (t *translator) timeouts(src model.SourceRef, p string, to *gatewayv1.HTTPRouteTimeouts) *model.Timeouts {
	out := &model.Timeouts{}
	if to.Request != nil {
		out.Request, _ = t.duration(src, p+".request", *to.Request)
	}
	if to.BackendRequest != nil {
		out.BackendRequest, _ = t.duration(src, p+".backendRequest", *to.BackendRequest)
	}
	if *out == (model.Timeouts{}) {
		return nil
	}
	return out
}

// defaultRetryAttempts is how many retries a retry stanza without attempts
// allows.
const defaultRetryAttempts = 1

// retry translates a rule's retry stanza.
func (t *translator) retry(src model.SourceRef, p string, r *gatewayv1.HTTPRouteRetry) *model.Retry {
	out := &model.Retry{Attempts: deref(r.Attempts, defaultRetryAttempts)}
	for _, c := range r.Codes {
		out.Codes = append(out.Codes, int(c))
	}
	if r.Backoff != nil {
		out.Backoff, _ = t.duration(src, p+".backoff", *r.Backoff)
	}
	return out
}

// session translates a rule's session persistence. A rule that names no
// session gets one named after the route and rule, so that two rules never
// share a cookie by accident.
func (t *translator) session(r *route, src model.SourceRef, p string, rule int, s *gatewayv1.SessionPersistence) *model.SessionPersistence {
	out := &model.SessionPersistence{Type: model.SessionType(deref(s.Type, gatewayv1.CookieBasedSessionPersistence)), Name: deref(s.SessionName, "")}
	if out.Name == "" {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", r.Namespace, r.Name, rule)))
		out.Name = "trellis-session-" + hex.EncodeToString(sum[:4])
	}
	if s.AbsoluteTimeout != nil {
		out.AbsoluteTimeout, _ = t.duration(src, p+".absoluteTimeout", *s.AbsoluteTimeout)
	}
	if s.CookieConfig != nil && deref(s.CookieConfig.LifetimeType, gatewayv1.SessionCookieLifetimeType) == gatewayv1.PermanentCookieLifetimeType {
		out.Permanent = true
	}
	return out
}

// strs converts a list of string-typed values.
func strs[T ~string](vs []T) []string {
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// usedTargetGroups calls use with every target group rules send requests
// to: their backends' and their mirrors'.
func usedTargetGroups(rules []model.Rule, use func(string)) {
	mirrors := func(fs []model.Filter) {
		for _, f := range fs {
			if f.Mirror != nil && f.Mirror.TargetGroup != "" {
				use(f.Mirror.TargetGroup)
			}
		}
	}
	for _, rule := range rules {
		mirrors(rule.Filters)
		if rule.Action.Forward == nil {
			continue
		}
		for _, b := range rule.Action.Forward.Backends {
			if b.TargetGroup != "" {
				use(b.TargetGroup)
			}
			mirrors(b.Filters)
		}
	}
}

// ruleField maps the model's names in a rule's field path to the
// HTTPRoute's ("filters[0].redirect" → "filters[0].requestRedirect").
func ruleField(f string) string { return ruleFieldNames.Replace(f) }

var ruleFieldNames = strings.NewReplacer(
	"].requestHeaders", "].requestHeaderModifier",
	"].responseHeaders", "].responseHeaderModifier",
	"].redirect", "].requestRedirect",
	"].rewrite", "].urlRewrite",
	"].mirror.targetGroup", "].requestMirror.backendRef",
	"].mirror.numerator", "].requestMirror",
	"].mirror.denominator", "].requestMirror",
	"].mirror", "].requestMirror",
	"].cors.maxAgeSeconds", "].cors.maxAge",
	".sessionPersistence.name", ".sessionPersistence.sessionName",
	".sessionPersistence.permanent", ".sessionPersistence.cookieConfig.lifetimeType",
)
