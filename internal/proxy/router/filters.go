package router

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"trellis.dev/trellis/internal/model"
)

// Filter is one compiled model.Filter: exactly one member is set. The pure
// parts (header edits, redirect and rewrite arithmetic, CORS decisions) are
// methods here; package proxy does what needs I/O (sending mirrors, writing
// responses).
type Filter struct {
	RequestHeaders  *HeaderEdit
	ResponseHeaders *HeaderEdit
	Redirect        *Redirect
	Rewrite         *Rewrite
	Mirror          *Mirror
	CORS            *CORS
}

// HeaderEdit is a compiled model.HeaderFilter, names canonical.
type HeaderEdit struct {
	set, add []headerValue
	remove   []string
}

type headerValue struct{ name, value string }

// Apply edits h. On a request, a set of "Host" sets host instead, since Go
// keeps the Host header out of Header; host may be nil for responses.
func (e *HeaderEdit) Apply(h http.Header, host *string) {
	for _, kv := range e.set {
		if kv.name == "Host" && host != nil {
			*host = kv.value
			continue
		}
		h[kv.name] = []string{kv.value}
	}
	for _, kv := range e.add {
		h[kv.name] = append(h[kv.name], kv.value)
	}
	for _, name := range e.remove {
		delete(h, name)
	}
}

// pathEdit is a compiled model.PathModifier.
type pathEdit struct {
	full bool
	// value is the full path or the prefix replacement.
	value string
}

// apply returns path changed. prefix is the normalized prefix (no trailing
// slash, "" for "/") that selected the route; it is a prefix of path ending
// at a segment boundary.
func (p *pathEdit) apply(path, prefix string) string {
	if p.full {
		return p.value
	}
	return ReplacePrefix(path, prefix, p.value)
}

// ReplacePrefix replaces the segment-aligned prefix of path with
// replacement as the Gateway API's ReplacePrefixMatch does: a trailing slash
// on the prefix or the replacement is ignored, what follows the prefix is
// kept as is, and an empty result is "/". If prefix is not a segment prefix
// of path, path is returned unchanged.
//
//	/foo/bar  /foo  /xyz  → /xyz/bar
//	/foo/     /foo  /xyz  → /xyz/
//	/foo      /foo  ""    → /
func ReplacePrefix(path, prefix, replacement string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(path, prefix) || len(path) > len(prefix) && path[len(prefix)] != '/' {
		return path
	}
	out := strings.TrimSuffix(replacement, "/") + path[len(prefix):]
	if out == "" {
		return "/"
	}
	return out
}

// Redirect is a compiled model.RedirectFilter.
type Redirect struct {
	// Code is the response status.
	Code     int
	scheme   string
	hostname string
	port     int32
	path     *pathEdit
}

// Location returns the redirect's Location for r, which a route matched at
// prefix on a listener at port. The query is kept.
func (rd *Redirect) Location(r *http.Request, prefix string, listenerPort int32) string {
	scheme := rd.scheme
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	host := rd.hostname
	if host == "" {
		host = requestHost(r.Host)
	}
	port := rd.port
	if port == 0 {
		port = listenerPort
		if rd.scheme == "http" {
			port = 80
		} else if rd.scheme == "https" {
			port = 443
		}
	}
	path := r.URL.EscapedPath()
	if rd.path != nil {
		path = (&url.URL{Path: rd.path.apply(r.URL.Path, prefix)}).EscapedPath()
	}
	if scheme == "http" && port == 80 || scheme == "https" && port == 443 {
		if strings.IndexByte(host, ':') >= 0 {
			host = "[" + host + "]"
		}
	} else {
		host = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	var b strings.Builder
	b.Grow(len(scheme) + len(host) + len(path) + len(r.URL.RawQuery) + 8)
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	b.WriteString(path)
	if r.URL.RawQuery != "" {
		b.WriteByte('?')
		// A raw '#' would turn the rest into a fragment.
		b.WriteString(strings.ReplaceAll(r.URL.RawQuery, "#", "%23"))
	}
	return b.String()
}

// Rewrite is a compiled model.RewriteFilter.
type Rewrite struct {
	hostname string
	path     *pathEdit
}

// Apply rewrites the outbound request r, which a route matched at prefix.
func (rw *Rewrite) Apply(r *http.Request, prefix string) {
	if rw.hostname != "" {
		r.Host = rw.hostname
	}
	if rw.path != nil {
		r.URL.Path = rw.path.apply(r.URL.Path, prefix)
		r.URL.RawPath = ""
	}
}

// Mirror is a compiled model.MirrorFilter.
type Mirror struct {
	// TargetGroup names the group; Group is nil when it is missing from
	// the snapshot, and then nothing is mirrored.
	TargetGroup string
	Group       *Group
	numerator   int32
	denominator int32
}

// Sample reports whether this request is mirrored.
func (m *Mirror) Sample() bool {
	switch {
	case m.numerator >= m.denominator:
		return true
	case m.numerator <= 0:
		return false
	}
	return rand.Int32N(m.denominator) < m.numerator
}

// compileFilters compiles a rule's or backend's filters. Error fields are
// relative to the list ("[1].redirect.statusCode").
func (b *builder) compileFilters(fs []model.Filter) ([]Filter, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	out := make([]Filter, len(fs))
	for i := range fs {
		f := &fs[i]
		var err error
		switch {
		case f.RequestHeaders != nil:
			out[i].RequestHeaders, err = compileHeaderEdit(f.RequestHeaders)
		case f.ResponseHeaders != nil:
			out[i].ResponseHeaders, err = compileHeaderEdit(f.ResponseHeaders)
		case f.Redirect != nil:
			out[i].Redirect, err = compileRedirect(f.Redirect)
		case f.Rewrite != nil:
			rw := &Rewrite{hostname: f.Rewrite.Hostname}
			rw.path, err = compilePathEdit(f.Rewrite.Path)
			out[i].Rewrite = rw
		case f.Mirror != nil:
			m := f.Mirror
			if m.Denominator < 1 || m.Numerator < 0 || m.Numerator > m.Denominator {
				err = fieldError("mirror", "fraction %d/%d is not in 0-1", m.Numerator, m.Denominator)
				break
			}
			out[i].Mirror = &Mirror{TargetGroup: m.TargetGroup, Group: b.group(m.TargetGroup), numerator: m.Numerator, denominator: m.Denominator}
		case f.CORS != nil:
			out[i].CORS, err = compileCORS(f.CORS)
		default:
			err = fieldError("", "no filter set")
		}
		if err != nil {
			return nil, inField(fmt.Sprintf("[%d]", i), err)
		}
	}
	return out, nil
}

func compileHeaderEdit(h *model.HeaderFilter) (*HeaderEdit, error) {
	e := &HeaderEdit{}
	for i, kv := range h.Set {
		if !httpguts.ValidHeaderFieldName(kv.Name) {
			return nil, fieldError(fmt.Sprintf("set[%d].name", i), "%q is not a valid header name", kv.Name)
		}
		e.set = append(e.set, headerValue{http.CanonicalHeaderKey(kv.Name), kv.Value})
	}
	for i, kv := range h.Add {
		if !httpguts.ValidHeaderFieldName(kv.Name) {
			return nil, fieldError(fmt.Sprintf("add[%d].name", i), "%q is not a valid header name", kv.Name)
		}
		e.add = append(e.add, headerValue{http.CanonicalHeaderKey(kv.Name), kv.Value})
	}
	for i, n := range h.Remove {
		if !httpguts.ValidHeaderFieldName(n) {
			return nil, fieldError(fmt.Sprintf("remove[%d]", i), "%q is not a valid header name", n)
		}
		e.remove = append(e.remove, http.CanonicalHeaderKey(n))
	}
	return e, nil
}

func compileRedirect(r *model.RedirectFilter) (*Redirect, error) {
	switch r.StatusCode {
	case 301, 302, 303, 307, 308:
	default:
		return nil, fieldError("redirect.statusCode", "must be 301, 302, 303, 307 or 308, not %d", r.StatusCode)
	}
	switch r.Scheme {
	case "", "http", "https":
	default:
		return nil, fieldError("redirect.scheme", "must be http or https, not %q", r.Scheme)
	}
	if r.Port < 0 || r.Port > 65535 {
		return nil, fieldError("redirect.port", "%d is not in 1-65535", r.Port)
	}
	p, err := compilePathEdit(r.Path)
	if err != nil {
		return nil, inField("redirect", err)
	}
	return &Redirect{Code: r.StatusCode, scheme: r.Scheme, hostname: strings.ToLower(r.Hostname), port: r.Port, path: p}, nil
}

func compilePathEdit(m *model.PathModifier) (*pathEdit, error) {
	if m == nil {
		return nil, nil
	}
	switch m.Type {
	case model.ReplaceFullPath:
		if !strings.HasPrefix(m.Value, "/") {
			return nil, fieldError("path.value", "%q must start with '/'", m.Value)
		}
		return &pathEdit{full: true, value: m.Value}, nil
	case model.ReplacePrefixMatch:
		if m.Value != "" && !strings.HasPrefix(m.Value, "/") {
			return nil, fieldError("path.value", "%q must be empty or start with '/'", m.Value)
		}
		return &pathEdit{value: m.Value}, nil
	}
	return nil, fieldError("path.type", "must be ReplaceFullPath or ReplacePrefixMatch, not %q", m.Type)
}
