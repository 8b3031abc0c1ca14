package router

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"trellis.dev/trellis/internal/model"
)

// CORS is a compiled model.CORSFilter. Preflight answers a CORS preflight
// request; Actual adds the CORS headers to the response of any other
// request from an allowed origin.
type CORS struct {
	anyOrigin   bool
	origins     []origin
	methods     string // joined, or "" when none are configured
	anyMethod   bool
	headers     string
	anyHeader   bool
	expose      string
	anyExpose   bool
	maxAge      string
	credentials bool
}

// origin is a parsed allowed origin. host is lower case; a host starting
// with "*." matches any host ending in the rest, dot included, and a host of
// "*" matches any host.
type origin struct {
	scheme, host string
	port         int
}

func compileCORS(c *model.CORSFilter) (*CORS, error) {
	out := &CORS{credentials: c.AllowCredentials, maxAge: strconv.Itoa(model.DefaultCORSMaxAge)}
	if c.MaxAgeSeconds > 0 {
		out.maxAge = strconv.Itoa(int(c.MaxAgeSeconds))
	}
	for i, o := range c.AllowOrigins {
		if o == "*" {
			out.anyOrigin = true
			continue
		}
		po, ok := parseOrigin(o)
		if !ok || !model.ValidCORSOrigin(o) {
			return nil, fieldError(fmt.Sprintf("cors.allowOrigins[%d]", i), "%q is not an origin of the form http(s)://host[:port]", o)
		}
		out.origins = append(out.origins, po)
	}
	join := func(vs []string) (string, bool) {
		if len(vs) == 1 && vs[0] == "*" {
			return "", true
		}
		return strings.Join(vs, ", "), false
	}
	out.methods, out.anyMethod = join(c.AllowMethods)
	out.headers, out.anyHeader = join(c.AllowHeaders)
	out.expose, out.anyExpose = join(c.ExposeHeaders)
	return out, nil
}

// parseOrigin splits "scheme://host[:port]", giving the scheme's default
// port when there is none.
func parseOrigin(s string) (origin, bool) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" {
		return origin{}, false
	}
	o := origin{scheme: strings.ToLower(scheme), host: strings.ToLower(rest)}
	switch o.scheme {
	case "http":
		o.port = 80
	case "https":
		o.port = 443
	default:
		return origin{}, false
	}
	if strings.HasPrefix(rest, "[") {
		return origin{}, false // IPv6 literals are not allowed origins
	}
	if h, p, ok := strings.Cut(o.host, ":"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return origin{}, false
		}
		o.host, o.port = h, n
	}
	return o, o.host != ""
}

// allows reports whether the request Origin value o is allowed.
func (c *CORS) allows(o string) bool {
	if c.anyOrigin {
		return true
	}
	ro, ok := parseOrigin(o)
	if !ok {
		return false
	}
	for _, a := range c.origins {
		if a.scheme != ro.scheme || a.port != ro.port {
			continue
		}
		if a.host == "*" || a.host == ro.host {
			return true
		}
		if suffix, ok := strings.CutPrefix(a.host, "*"); ok && len(ro.host) > len(suffix) && strings.HasSuffix(ro.host, suffix) {
			return true
		}
	}
	return false
}

// IsPreflight reports whether r is a CORS preflight request.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// Preflight writes the headers of the answer to the preflight request r
// into h. The answer's status is 200 whether or not the origin is allowed;
// a disallowed origin gets no CORS headers, which makes the browser fail
// the request.
func (c *CORS) Preflight(r *http.Request, h http.Header) {
	h.Add("Vary", "Origin")
	o := r.Header.Get("Origin")
	if !c.allows(o) {
		return
	}
	h.Set("Access-Control-Allow-Origin", o)
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if c.anyMethod {
		// Echoing the method is right with or without credentials.
		h.Set("Access-Control-Allow-Methods", r.Header.Get("Access-Control-Request-Method"))
	} else if c.methods != "" {
		h.Set("Access-Control-Allow-Methods", c.methods)
	}
	if c.anyHeader {
		if req := r.Header.Values("Access-Control-Request-Headers"); len(req) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(req, ", "))
		}
	} else if c.headers != "" {
		h.Set("Access-Control-Allow-Headers", c.headers)
	}
	// Browsers read Expose-Headers only on actual responses, but the
	// Gateway API's conformance suite expects it on the preflight too;
	// it is harmless there.
	switch {
	case c.anyExpose && !c.credentials:
		h.Set("Access-Control-Expose-Headers", "*")
	case c.expose != "":
		h.Set("Access-Control-Expose-Headers", c.expose)
	}
	h.Set("Access-Control-Max-Age", c.maxAge)
}

// Actual adds the CORS headers to h, the response to r, when r carries an
// allowed Origin.
func (c *CORS) Actual(r *http.Request, h http.Header) {
	o := r.Header.Get("Origin")
	if o == "" {
		return
	}
	h.Add("Vary", "Origin")
	if !c.allows(o) {
		return
	}
	h.Set("Access-Control-Allow-Origin", o)
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	switch {
	case c.anyExpose && !c.credentials:
		h.Set("Access-Control-Expose-Headers", "*")
	case c.anyExpose:
		// "*" is not allowed with credentials: name the response's headers.
		names := make([]string, 0, len(h))
		for k := range h {
			if !strings.HasPrefix(k, "Access-Control-") {
				names = append(names, k)
			}
		}
		if len(names) > 0 {
			slices.Sort(names)
			h.Set("Access-Control-Expose-Headers", strings.Join(names, ", "))
		}
	case c.expose != "":
		h.Set("Access-Control-Expose-Headers", c.expose)
	}
}
