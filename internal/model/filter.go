package model

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Filter is one step a rule or a backend applies to a request or to its
// response, named after the Gateway API HTTPRoute filters. Exactly one member
// is set. A rule's filters run in list order before its action; a backend's
// filters run, in list order, only for the requests sent to that backend.
type Filter struct {
	// RequestHeaders edits the request headers before forwarding.
	RequestHeaders *HeaderFilter `json:"requestHeaders,omitempty"`
	// ResponseHeaders edits the headers of the response the client gets.
	ResponseHeaders *HeaderFilter `json:"responseHeaders,omitempty"`
	// Redirect answers the request with a redirect instead of forwarding it.
	Redirect *RedirectFilter `json:"redirect,omitempty"`
	// Rewrite changes the host and path the request is forwarded with.
	Rewrite *RewriteFilter `json:"rewrite,omitempty"`
	// Mirror sends a copy of the request to another target group and
	// ignores its response.
	Mirror *MirrorFilter `json:"mirror,omitempty"`
	// CORS answers preflight requests and adds CORS headers to responses.
	CORS *CORSFilter `json:"cors,omitempty"`
}

// HeaderFilter sets, adds and removes headers. A header name (compared
// case-insensitively) may appear in only one of its lists, once.
type HeaderFilter struct {
	// Set replaces every value of the header with Value.
	Set []Header `json:"set,omitempty"`
	// Add appends Value to the header's values.
	Add []Header `json:"add,omitempty"`
	// Remove deletes the headers.
	Remove []string `json:"remove,omitempty"`
}

// Header is one header name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PathModifierType says how a redirect or rewrite changes the path.
type PathModifierType string

// Path modifier types, named as in the Gateway API.
const (
	// ReplaceFullPath replaces the whole path with the modifier's value.
	ReplaceFullPath PathModifierType = "ReplaceFullPath"
	// ReplacePrefixMatch replaces the path prefix that the rule's PathPrefix
	// match matched (whole segments, trailing slash ignored) with the value.
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier changes a request path.
type PathModifier struct {
	Type PathModifierType `json:"type"`
	// Value is the new path or the prefix replacement. An empty
	// ReplacePrefixMatch value removes the matched prefix.
	Value string `json:"value"`
}

// RedirectFilter answers with a redirect whose Location is the request URL
// with the fields set here replaced.
type RedirectFilter struct {
	// Scheme is "http" or "https"; empty keeps the request's scheme.
	Scheme string `json:"scheme,omitempty"`
	// Hostname replaces the request's host name.
	Hostname string `json:"hostname,omitempty"`
	// Port is the Location's port. Zero derives it as the Gateway API says:
	// the scheme's well-known port when Scheme is set, else the listener's.
	// Port 80 with http and 443 with https are left out of the Location.
	Port int32         `json:"port,omitempty"`
	Path *PathModifier `json:"path,omitempty"`
	// StatusCode is 301, 302, 303, 307 or 308.
	StatusCode int `json:"statusCode"`
}

// RewriteFilter changes the request before it is forwarded.
type RewriteFilter struct {
	// Hostname replaces the Host header sent to the target.
	Hostname string        `json:"hostname,omitempty"`
	Path     *PathModifier `json:"path,omitempty"`
}

// MirrorFilter sends a copy of a fraction of the requests to one target of a
// target group. The copy's response is discarded; it never delays or changes
// the response the client gets.
type MirrorFilter struct {
	TargetGroup string `json:"targetGroup"`
	// Numerator/Denominator is the fraction of requests mirrored:
	// 0 <= Numerator <= Denominator, Denominator >= 1.
	Numerator   int32 `json:"numerator"`
	Denominator int32 `json:"denominator"`
}

// CORSFilter is the Gateway API HTTPCORSFilter: the proxy answers CORS
// preflight requests itself and adds the CORS response headers to the
// responses of allowed origins.
type CORSFilter struct {
	// AllowOrigins are "scheme://host[:port]" origins whose host may contain
	// a "*" matching any characters (dots included) to its left, or a lone
	// "*" for any origin.
	AllowOrigins []string `json:"allowOrigins,omitempty"`
	// AllowMethods are method names, or a lone "*".
	AllowMethods []string `json:"allowMethods,omitempty"`
	// AllowHeaders and ExposeHeaders are header names, or a lone "*".
	AllowHeaders  []string `json:"allowHeaders,omitempty"`
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAgeSeconds is how long a client may cache a preflight answer; zero
	// means the Gateway API default of 5 seconds.
	MaxAgeSeconds    int32 `json:"maxAgeSeconds,omitempty"`
	AllowCredentials bool  `json:"allowCredentials,omitempty"`
}

// DefaultCORSMaxAge is the Access-Control-Max-Age the Gateway API defaults to.
const DefaultCORSMaxAge = 5

// Timeouts bound a rule's requests. A zero duration means no limit of the
// rule's own (the proxy's transport limits still apply).
type Timeouts struct {
	// Request bounds the whole exchange, retries included; when it passes
	// the client gets 504.
	Request Duration `json:"request,omitzero"`
	// BackendRequest bounds each attempt, from sending the request to the
	// end of the response body.
	BackendRequest Duration `json:"backendRequest,omitzero"`
}

// Retry retries failed attempts on another pick of the same backend's
// targets. Only requests whose body the proxy can replay are retried: those
// without a body and those whose body fits in the proxy's retry buffer.
type Retry struct {
	// Codes are the response status codes (400-599) that are retried.
	// Connection errors and attempt timeouts are always retried.
	Codes []int `json:"codes,omitempty"`
	// Attempts is the most retries after the first try (1-10).
	Attempts int `json:"attempts"`
	// Backoff is the least wait before a retry; later retries wait longer.
	Backoff Duration `json:"backoff,omitzero"`
}

// MaxRetryAttempts bounds Retry.Attempts.
const MaxRetryAttempts = 10

// SessionType is how a session names its target.
type SessionType string

// Session types, named as in the Gateway API.
const (
	SessionCookie SessionType = "Cookie"
	SessionHeader SessionType = "Header"
)

// SessionPersistence sends the requests of one session to the target the
// session started on, for as long as that target takes requests.
type SessionPersistence struct {
	Type SessionType `json:"type"`
	// Name is the cookie or header that carries the session token.
	Name string `json:"name"`
	// AbsoluteTimeout ends a session that long after it started; zero
	// never does.
	AbsoluteTimeout Duration `json:"absoluteTimeout,omitzero"`
	// Permanent makes a cookie persist (Max-Age is AbsoluteTimeout, which
	// is then required) rather than end with the browser session.
	Permanent bool `json:"permanent,omitempty"`
}

// Duration is a time.Duration written as Go writes durations ("1m30s").
type Duration time.Duration

// MarshalText writes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses what time.ParseDuration accepts.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// validateFilters checks a rule's or a backend's filters. prefixOnly says
// whether every match of the rule is a path prefix match, which
// ReplacePrefixMatch needs. Kinds that the Gateway API lets a list hold only
// once, and a redirect together with a rewrite, are rejected.
func validateFilters(f *fieldErrs, p string, filters []Filter, prefixOnly bool) {
	seen := map[string]int{}
	once := func(fp, kind string, i int) {
		if j, dup := seen[kind]; dup {
			f.add(fp, "a %s filter is already at [%d]; only one is allowed", kind, j)
			return
		}
		seen[kind] = i
	}
	for i := range filters {
		fl := &filters[i]
		fp := fmt.Sprintf("%s[%d]", p, i)
		n := 0
		for _, set := range []bool{fl.RequestHeaders != nil, fl.ResponseHeaders != nil, fl.Redirect != nil,
			fl.Rewrite != nil, fl.Mirror != nil, fl.CORS != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			f.add(fp, "exactly one of requestHeaders, responseHeaders, redirect, rewrite, mirror and cors must be set")
			continue
		}
		switch {
		case fl.RequestHeaders != nil:
			once(fp, "requestHeaders", i)
			validateHeaderFilter(f, fp+".requestHeaders", fl.RequestHeaders)
		case fl.ResponseHeaders != nil:
			once(fp, "responseHeaders", i)
			validateHeaderFilter(f, fp+".responseHeaders", fl.ResponseHeaders)
		case fl.Redirect != nil:
			once(fp, "redirect", i)
			validateRedirect(f, fp+".redirect", fl.Redirect, prefixOnly)
		case fl.Rewrite != nil:
			once(fp, "rewrite", i)
			r := fl.Rewrite
			if r.Hostname != "" && !validHostname(r.Hostname, false) {
				f.add(fp+".rewrite.hostname", "%q is not a valid DNS name", r.Hostname)
			}
			if r.Path != nil {
				validatePathModifier(f, fp+".rewrite.path", r.Path, prefixOnly)
			}
		case fl.Mirror != nil:
			m := fl.Mirror
			if m.TargetGroup == "" {
				f.add(fp+".mirror.targetGroup", "required")
			}
			if m.Denominator < 1 {
				f.add(fp+".mirror.denominator", "%d is not at least 1", m.Denominator)
			} else if m.Numerator < 0 || m.Numerator > m.Denominator {
				f.add(fp+".mirror.numerator", "%d is not in 0-%d (the denominator)", m.Numerator, m.Denominator)
			}
		case fl.CORS != nil:
			once(fp, "cors", i)
			validateCORS(f, fp+".cors", fl.CORS)
		}
	}
	if r, ok := seen["redirect"]; ok {
		if w, ok := seen["rewrite"]; ok {
			f.add(fmt.Sprintf("%s[%d]", p, max(r, w)), "a redirect and a rewrite cannot be used together")
		}
	}
}

func validateHeaderFilter(f *fieldErrs, p string, h *HeaderFilter) {
	seen := map[string]string{}
	name := func(fp, n string) {
		rel := strings.TrimPrefix(fp, p+".")
		if !httpguts.ValidHeaderFieldName(n) {
			f.add(fp, "%q is not a valid header name", n)
			return
		}
		k := strings.ToLower(n)
		if other, dup := seen[k]; dup {
			f.add(fp, "header %q is already edited by %s; a header may be edited once", n, other)
			return
		}
		seen[k] = strings.TrimSuffix(rel, ".name")
	}
	for _, list := range []struct {
		field string
		hs    []Header
	}{{"set", h.Set}, {"add", h.Add}} {
		for i, hd := range list.hs {
			hp := fmt.Sprintf("%s.%s[%d]", p, list.field, i)
			name(hp+".name", hd.Name)
			if !validHeaderValue(hd.Value) {
				f.add(hp+".value", "must be printable characters, tabs and spaces")
			}
		}
	}
	for i, n := range h.Remove {
		name(fmt.Sprintf("%s.remove[%d]", p, i), n)
	}
}

func validateRedirect(f *fieldErrs, p string, r *RedirectFilter, prefixOnly bool) {
	switch r.Scheme {
	case "", "http", "https":
	default:
		f.add(p+".scheme", "must be http or https, not %q", r.Scheme)
	}
	if r.Hostname != "" && !validHostname(r.Hostname, false) {
		f.add(p+".hostname", "%q is not a valid DNS name", r.Hostname)
	}
	if r.Port < 0 || r.Port > 65535 {
		f.add(p+".port", "%d is not in 1-65535", r.Port)
	}
	if r.Path != nil {
		validatePathModifier(f, p+".path", r.Path, prefixOnly)
	}
	switch r.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		f.add(p+".statusCode", "must be 301, 302, 303, 307 or 308, not %d", r.StatusCode)
	}
}

func validatePathModifier(f *fieldErrs, p string, m *PathModifier, prefixOnly bool) {
	switch m.Type {
	case ReplaceFullPath:
		if !strings.HasPrefix(m.Value, "/") {
			f.add(p+".value", "%q must start with '/'", m.Value)
		}
	case ReplacePrefixMatch:
		if m.Value != "" && !strings.HasPrefix(m.Value, "/") {
			f.add(p+".value", "%q must be empty or start with '/'", m.Value)
		}
		if !prefixOnly {
			f.add(p+".type", "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
		}
	default:
		f.add(p+".type", "must be ReplaceFullPath or ReplacePrefixMatch, not %q", m.Type)
	}
	if strings.ContainsAny(m.Value, "?# \t") || !validHeaderValue(m.Value) {
		f.add(p+".value", "%q must be a path without query or fragment", m.Value)
	}
}

func validateCORS(f *fieldErrs, p string, c *CORSFilter) {
	wildcardAlone := func(field string, vs []string) {
		if len(vs) > 1 && slices.Contains(vs, "*") {
			f.add(p+"."+field, "\"*\" cannot be listed with other values")
		}
	}
	wildcardAlone("allowOrigins", c.AllowOrigins)
	for i, o := range c.AllowOrigins {
		if o != "*" && !ValidCORSOrigin(o) {
			f.add(fmt.Sprintf("%s.allowOrigins[%d]", p, i), "%q is not an origin of the form http(s)://host[:port]", o)
		}
	}
	wildcardAlone("allowMethods", c.AllowMethods)
	for i, m := range c.AllowMethods {
		if m != "*" && !httpguts.ValidHeaderFieldName(m) {
			f.add(fmt.Sprintf("%s.allowMethods[%d]", p, i), "%q is not an HTTP method token", m)
		}
	}
	for _, list := range []struct {
		field string
		vs    []string
	}{{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
		wildcardAlone(list.field, list.vs)
		for i, h := range list.vs {
			if h != "*" && !httpguts.ValidHeaderFieldName(h) {
				f.add(fmt.Sprintf("%s.%s[%d]", p, list.field, i), "%q is not a valid header name", h)
			}
		}
	}
	if c.MaxAgeSeconds < 0 {
		f.add(p+".maxAgeSeconds", "%d is negative", c.MaxAgeSeconds)
	}
}

// ValidCORSOrigin reports whether o is "http://host[:port]" or
// "https://host[:port]", where host may hold "*" wildcards as the Gateway
// API CORSOrigin pattern allows.
func ValidCORSOrigin(o string) bool {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || scheme != "http" && scheme != "https" || rest == "" {
		return false
	}
	host := rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host = rest[:i]
		port := rest[i+1:]
		if port == "" || len(port) > 5 {
			return false
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	if host == "" {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '*') {
			return false
		}
	}
	return true
}

func validateTimeouts(f *fieldErrs, p string, t *Timeouts) {
	if t.Request < 0 {
		f.add(p+".request", "%v is negative", time.Duration(t.Request))
	}
	if t.BackendRequest < 0 {
		f.add(p+".backendRequest", "%v is negative", time.Duration(t.BackendRequest))
	}
	if t.Request > 0 && t.BackendRequest > t.Request {
		f.add(p+".backendRequest", "%v is longer than the request timeout %v", time.Duration(t.BackendRequest), time.Duration(t.Request))
	}
}

func validateRetry(f *fieldErrs, p string, r *Retry) {
	for i, c := range r.Codes {
		if c < 400 || c > 599 {
			f.add(fmt.Sprintf("%s.codes[%d]", p, i), "%d is not in 400-599", c)
		}
	}
	if r.Attempts < 1 || r.Attempts > MaxRetryAttempts {
		f.add(p+".attempts", "%d is not in 1-%d", r.Attempts, MaxRetryAttempts)
	}
	if r.Backoff < 0 {
		f.add(p+".backoff", "%v is negative", time.Duration(r.Backoff))
	}
}

func validateSession(f *fieldErrs, p string, s *SessionPersistence) {
	switch s.Type {
	case SessionCookie, SessionHeader:
	default:
		f.add(p+".type", "must be Cookie or Header, not %q", s.Type)
	}
	if s.Type == SessionHeader && s.Permanent {
		f.add(p+".permanent", "only a cookie can be permanent")
	}
	if !httpguts.ValidHeaderFieldName(s.Name) || len(s.Name) > 128 {
		f.add(p+".name", "%q is not a valid cookie or header name of at most 128 characters", s.Name)
	}
	if s.AbsoluteTimeout < 0 {
		f.add(p+".absoluteTimeout", "%v is negative", time.Duration(s.AbsoluteTimeout))
	}
	if s.Permanent && s.AbsoluteTimeout <= 0 {
		f.add(p+".absoluteTimeout", "required for a permanent cookie")
	}
}

// validHeaderValue reports whether v is printable ASCII, tabs and spaces.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != '\t' && (c < ' ' || c >= 0x7f) {
			return false
		}
	}
	return true
}
