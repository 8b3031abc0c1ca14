package proxy

import (
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// authorize evaluates the auth policies of route's service and network for
// r, which arrived on the listener at port, and answers 403 when they deny
// it. It reports whether r may go on. The caller is the workload of this
// cluster with r's source address, or anonymous.
//
// On a route that can send to another cluster's targets the source address
// is absent from the request judged (trellis:SourceIp has no value),
// whichever target is picked: the receiving proxy judges the request again
// and cannot know the client's address (see authorizeDelivery), so both
// ends judge alike and a request allowed here is not refused there.
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, route *router.Rule, port int32) bool {
	if route.Auth == nil {
		return true
	}
	req := p.authRequest(exchangeOf(r).served, route, r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Values, remoteIP(r.RemoteAddr), port)
	res := route.Auth.Authorize(req)
	if res.Allowed {
		return true
	}
	if x := exchangeOf(r); x != nil {
		x.failure, x.authDenied = accesslog.ClientAccessDenied, res.DeniedBy
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, res.Message(req)+"\n")
	return false
}

// authRequest is what the auth policies of an HTTP request judge: the
// request from src on the listener at port, its caller the workload with
// that address in this cluster (as sv has them) or anonymous. The query is parsed only if a
// policy asks for it.
func (p *Proxy) authRequest(sv *served, route *router.Rule, method, path, rawQuery string, header func(string) []string, src netip.Addr, port int32) *auth.Request {
	principal := sv.principal(src)
	if leavesCluster(route, p.cluster) {
		src = netip.Addr{} // judged absent: see authorize
	}
	var query url.Values
	return &auth.Request{
		Action:    auth.ActionInvoke,
		Principal: principal,
		Port:      int(port),
		Method:    method,
		Path:      authPath(path),
		Header:    header,
		Query: func(key string) []string {
			if query == nil {
				query, _ = url.ParseQuery(rawQuery)
			}
			return query[key]
		},
		SourceIP:      src,
		SourceCluster: p.cluster,
	}
}

// authPath is the path policies see: p with dot segments resolved and
// repeated slashes collapsed (a trailing slash kept), so that
// "/public/../admin" is judged as the "/admin" a target would resolve it
// to, and a Deny on a path cannot be stepped around by spelling it
// differently.
func authPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// ambiguousPath reports whether the request path p (unescaped, as
// url.URL.Path) is one that targets read in different ways, so that a
// policy or a route judging one reading would let another through: a dot
// segment ("/x/../admin", also spelled "%2e%2e", "..%2f" or with a path
// parameter, "..;"), an empty segment ("//admin", "/a%2f%2fb"), or a
// backslash, which some servers take for a slash ("/public\..\admin").
// Browsers and HTTP libraries resolve dot segments before they send, so a
// request with one comes from someone spelling a path around a check. Both
// request paths answer such a request 400 before routing, so that what the
// routes and policies judge is what the target reads.
func ambiguousPath(p string) bool {
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") && strings.IndexByte(p, '\\') < 0 && !strings.HasPrefix(p, ".") {
		return false // the usual path, found by the fast substring searches
	}
	seg := 0 // the start of the current segment, just after its slash
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] == '\\' {
			return true
		}
		if i < len(p) && p[i] != '/' {
			continue
		}
		if i > 0 && seg == i && i < len(p) {
			return true // an empty segment before another slash
		}
		s := p[seg:i]
		if j := strings.IndexByte(s, ';'); j >= 0 {
			s = s[:j]
		}
		if s == "." || s == ".." {
			return true
		}
		seg = i + 1
	}
	return false
}

// remoteIP is the IP of a "host:port" remote address; invalid when it has
// none.
func remoteIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// leavesCluster reports whether route can send a request to a target
// outside cluster.
func leavesCluster(route *router.Rule, cluster string) bool {
	bs := route.Backends()
	for i := range bs {
		if g := bs[i].Group(); g != nil && !g.OnlyIn(cluster) {
			return true
		}
	}
	return false
}
