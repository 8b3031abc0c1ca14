package proxy

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// validPseudoFields reports whether the pseudo-header fields of an HTTP/2
// request are well formed as RFC 9113 section 8.3.1 requires, which
// net/http checks only in part: :method a token; :path in origin form
// (visible ASCII but '#', starting with '/') or "*" for OPTIONS, and none
// for CONNECT; :authority a host and optional port, without userinfo. An
// HTTP/1 request line cannot carry such values, so HTTP/1 requests pass.
// A request that fails is answered 400: forwarded, a space in :path would
// end the HTTP/1.1 request line to the target early and start a version
// of the client's choosing there.
func validPseudoFields(r *http.Request) bool {
	if r.ProtoMajor < 2 {
		return true
	}
	if !httpguts.ValidHeaderFieldName(r.Method) {
		return false
	}
	if r.Host != "" && (!httpguts.ValidHostHeader(r.Host) || strings.ContainsAny(r.Host, "@ \t")) {
		return false
	}
	path := r.RequestURI
	switch {
	case r.Method == http.MethodConnect && path == "":
		return true
	case path == "*":
		return r.Method == http.MethodOptions
	case path == "" || path[0] != '/':
		return false
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}
