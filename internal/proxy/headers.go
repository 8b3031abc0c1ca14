package proxy

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"

	"trellis.dev/trellis/internal/model"
)

// The forwarding rules: what of a client's request header reaches a target,
// and what the proxy adds. The fast path (which writes header lines), the
// net/http path and the mirror (which edit an http.Header) all decide by the
// functions in this file, so the paths cannot disagree;
// TestFastPathAgreesWithNetHTTP holds them to it.
//
// Removed before forwarding (but an upgrade's Upgrade and Connection, an
// upgrade to HTTP/2 excepted: upgradeTo):
//   - the hop-by-hop fields (hopByHop), Proxy-Authorization and
//     Proxy-Authenticate included, and any field the client's Connection
//     names, but the body's framing (Content-Length), which the proxy writes
//     itself; TE goes on as "trailers" only when the client takes trailers;
//   - the fields the proxy sets itself (setByProxy): Forwarded, every
//     X-Forwarded-*, and the identity fields x-trellis-* and Lattice's
//     x-amzn-lattice-*, in any case and with '_' for '-', so that no client
//     can forge what a target reads as the proxy's word.
//
// Added (addConnFields, addRequestFields, and forwardedFor by the
// network's mode): see the constants.

// Headers the proxy adds to every request it forwards to a target. They are
// Trellis's analogues of Lattice's x-amzn-lattice-* headers.
const (
	// headerNetwork is "SourceCluster=<cluster>; Network=<network>": the
	// cluster whose proxy received the request, and the service's network.
	headerNetwork = "X-Trellis-Network"
	// headerTarget is "Service=<service>; Network=<network>;
	// TargetGroup=<target group>".
	headerTarget = "X-Trellis-Target"
	// headerIdentity is the caller's identity: "Principal=spiffe://<cluster>/
	// ns/<namespace>/sa/<service account>; Type=Workload" for a workload of
	// this cluster (by its address), else "Type=Anonymous".
	headerIdentity = "X-Trellis-Identity"
	// headerRequestID is the request's ID, the requestId of its access log
	// entry.
	headerRequestID = "X-Trellis-Request-Id"

	trellisPrefix = "X-Trellis-"
	latticePrefix = "X-Amzn-Lattice-"
)

// fieldSink receives the fields the proxy adds to a forwarded request.
type fieldSink interface {
	set(name, value string)
}

// headerFields sets added fields in an outbound http.Header, their values
// slices of one array.
type headerFields struct {
	h    http.Header
	vals [addedFields]string
	n    int
}

// addedFields is how many fields addConnFields and addRequestFields add at
// most.
const addedFields = 9

func (f *headerFields) set(name, value string) {
	if f.n == len(f.vals) {
		f.h[name] = []string{value}
		return
	}
	f.vals[f.n] = value
	f.h[name] = f.vals[f.n : f.n+1 : f.n+1]
	f.n++
}

// wireFields writes added fields as header lines.
type wireFields bufio.Writer

func (w *wireFields) set(name, value string) { writeField((*bufio.Writer)(w), name, value) }

// headLines appends added fields as header lines to a head being made.
type headLines []byte

func (h *headLines) set(name, value string) { *h = appendField(*h, name, value) }

// appendField appends the header line name: value to b.
func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// textFields collects added fields as header lines, for the fast path to
// write again and again.
type textFields strings.Builder

func (b *textFields) set(name, value string) {
	sb := (*strings.Builder)(b)
	sb.WriteString(name)
	sb.WriteString(": ")
	sb.WriteString(value)
	sb.WriteString("\r\n")
}

// addConnFields adds the fields that are the same for every request on a
// connection (while the workload identities stay the same):
//
//   - X-Forwarded-For-Proto and X-Forwarded-For-Port, as Lattice names them:
//     "http" or "https", and the listener port; the conventional
//     X-Forwarded-Proto and X-Forwarded-Port carry the same values, since
//     most frameworks read only those;
//   - X-Trellis-Identity, the caller's identity.
func addConnFields(s fieldSink, proto, port, identity string) {
	s.set("X-Forwarded-Proto", proto)
	s.set("X-Forwarded-For-Proto", proto)
	s.set("X-Forwarded-Port", port)
	s.set("X-Forwarded-For-Port", port)
	s.set(headerIdentity, identity)
}

// addRequestFields adds the fields of one request: X-Forwarded-Host (the
// Host the client sent, after the rule's edits), the request ID, and the
// rule's X-Trellis-Network and X-Trellis-Target when it forwards to a
// target group.
func addRequestFields(s fieldSink, host, id string, info *ruleInfo) {
	s.set("X-Forwarded-Host", host)
	s.set(headerRequestID, id)
	if info == nil {
		return
	}
	if h := info.identityHeaders(); h != nil {
		// The same lines, made once per rule.
		switch w := s.(type) {
		case *wireFields:
			if h.wire != "" {
				(*bufio.Writer)(w).WriteString(h.wire)
				return
			}
		case *headLines:
			if h.wire != "" {
				*w = append(*w, h.wire...)
				return
			}
		}
		setRuleFields(s, h)
	}
}

// setRuleFields adds a rule's X-Trellis-Network and X-Trellis-Target.
func setRuleFields(s fieldSink, h *ruleHeaders) {
	s.set(headerNetwork, h.network)
	s.set(headerTarget, h.target)
}

// forwardedFor is the X-Forwarded-For sent on, and whether there is one,
// by the network's mode: in append mode (the default) the incoming list
// prior with the client's address ip appended, so that its last entry is
// always the address this proxy saw; in preserve mode the incoming list as
// sent (none when there is none); in remove mode none.
func forwardedFor(mode model.ForwardedForMode, prior []string, ip string) (string, bool) {
	switch {
	case mode == model.ForwardedForRemove:
		return "", false
	case mode == model.ForwardedForPreserve || ip == "":
		return strings.Join(prior, ", "), len(prior) > 0
	case len(prior) == 0:
		return ip, true
	}
	return strings.Join(prior, ", ") + ", " + ip, true
}

// forwardedForMode is the X-Forwarded-For mode of the rule x matched.
func forwardedForMode(x *exchange) model.ForwardedForMode {
	if x == nil || x.route == nil {
		return ""
	}
	return x.route.ForwardedFor
}

// forwardHeader turns out, a copy of the incoming header in, into the
// header forwarded to a target, but the fields the caller adds: it removes
// the hop-by-hop fields, those in's Connection names, and those the proxy
// sets itself, and keeps TE as "trailers" when in takes trailers. in's own
// fields are the ones judged, so that out may have lost some already (the
// reverse proxy removes hop-by-hop fields before its Rewrite).
func forwardHeader(in, out http.Header) {
	for _, v := range in["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.Trim(tok, " \t"); tok != "" && !contentLength(tok) {
				out.Del(tok)
			}
		}
	}
	for k := range out {
		if hopByHop(k) || setByProxy(k) {
			delete(out, k)
		}
	}
	if takesTrailers(in["Te"]) {
		out["Te"] = teTrailers
	}
	// A protocol upgrade (WebSocket) asks the target to switch: it keeps
	// its Upgrade, and a Connection that says so.
	if up := upgradeTo(in); up != "" {
		out["Connection"] = []string{"Upgrade"}
		out["Upgrade"] = []string{up}
	}
}

// upgradeTo is the protocol upgrade a request with header in asks the
// target for: its Upgrade when its Connection names "upgrade", but none
// when Upgrade names HTTP/2 (h2c). A target that switched its connection to
// HTTP/2 would take every later stream on it as a request of its own,
// straight from the client: routed and judged by no one. The proxy speaks
// HTTP/2 to targets itself where a target group says so.
func upgradeTo(in http.Header) string {
	up := in.Get("Upgrade")
	if up == "" || !connectionHas(in, "upgrade") {
		return ""
	}
	for v := up; v != ""; {
		var e string
		e, v, _ = strings.Cut(v, ",")
		name, version, _ := strings.Cut(strings.Trim(e, " \t"), "/")
		if strings.EqualFold(name, "h2c") || strings.EqualFold(name, "h2") ||
			strings.EqualFold(name, "http") && strings.HasPrefix(version, "2") {
			return ""
		}
	}
	return up
}

// connectionHas reports whether h's Connection has option opt.
func connectionHas(h http.Header, opt string) bool {
	for _, v := range h["Connection"] {
		if hasToken(v, opt) {
			return true
		}
	}
	return false
}

var teTrailers = []string{"trailers"}

// takesTrailers reports whether the TE values te say the client takes
// trailers, which gRPC needs end to end (as net/http/httputil keeps it).
func takesTrailers(te []string) bool {
	for _, v := range te {
		if hasToken(v, "trailers") {
			return true
		}
	}
	return false
}

// dropOnForward reports whether a request field is not forwarded as the
// client sent it: Host and Content-Length (written by the proxy), the
// hop-by-hop fields, and the fields the proxy sets itself. Fields the
// Connection names are dropped too, apart.
func dropOnForward(name string) bool {
	return equalFoldASCII(name, "Host") || contentLength(name) || hopByHop(name) || setByProxy(name)
}

// contentLength reports whether name is Content-Length, which only the proxy
// writes on a forwarded request and no Connection option removes.
func contentLength(name string) bool {
	return equalFoldASCII(name, "Content-Length")
}

// hopByHop reports whether name is a hop-by-hop field: those of RFC 9110
// section 7.6.1 and the ones net/http/httputil removes, the client's
// credentials for this proxy (Proxy-Authorization) included.
func hopByHop[T string | []byte](name T) bool {
	switch len(name) {
	case 2:
		return equalFoldASCII(name, "TE")
	case 7:
		return equalFoldASCII(name, "Upgrade") || equalFoldASCII(name, "Trailer")
	case 10:
		return equalFoldASCII(name, "Connection") || equalFoldASCII(name, "Keep-Alive")
	case 16:
		return equalFoldASCII(name, "Proxy-Connection")
	case 17:
		return equalFoldASCII(name, "Transfer-Encoding")
	case 18:
		return equalFoldASCII(name, "Proxy-Authenticate")
	case 19:
		return equalFoldASCII(name, "Proxy-Authorization")
	}
	return false
}

// setByProxy reports whether name is a field the proxy sets itself, so a
// client's is never forwarded: Forwarded, X-Forwarded-*, x-trellis-* and
// x-amzn-lattice-*, in any case and with '_' for any '-' (servers that map
// header names to variables, CGI, WSGI, PHP, read "X_Trellis_Identity" as
// x-trellis-identity).
func setByProxy(name string) bool {
	switch {
	case len(name) == 9:
		return equalFoldASCII(name, "Forwarded")
	case len(name) < len(trellisPrefix):
		return false
	}
	return hasFieldPrefix(name, "X-Forwarded-") || hasFieldPrefix(name, trellisPrefix) || hasFieldPrefix(name, latticePrefix)
}

// isTrellisHeader reports whether name starts with "x-trellis-", in any
// case and with '_' for '-'.
func isTrellisHeader(name string) bool { return hasFieldPrefix(name, trellisPrefix) }

// hasFieldPrefix reports whether name starts with prefix, in any case and
// with '_' for any '-'.
func hasFieldPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c, want := name[i], prefix[i]
		switch {
		case c == want, c|0x20 == want|0x20 && want >= 'A':
		case want == '-' && c == '_':
		default:
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v has token t, in any
// case.
func hasToken(v, t string) bool {
	for v != "" {
		var e string
		e, v, _ = strings.Cut(v, ",")
		if e, _, _ = strings.Cut(e, ";"); strings.EqualFold(strings.Trim(e, " \t"), t) {
			return true
		}
	}
	return false
}

// namedIn reports whether name is one of the Connection options tokens and
// so not forwarded; the framing never is.
func namedIn(name string, tokens []string) bool {
	for _, t := range tokens {
		if strings.EqualFold(name, t) {
			return !contentLength(name)
		}
	}
	return false
}

func namedInBytes(name []byte, tokens [][]byte) bool {
	for _, t := range tokens {
		if equalFoldBytes(name, string(t)) {
			return true
		}
	}
	return false
}

func equalFoldBytes(b []byte, s string) bool {
	return equalFoldASCII(b, s)
}

// equalFoldASCII reports whether a and b are equal with ASCII letters
// folded. For a and b of one length of which one is ASCII (a field name,
// parsed or constant) it is strings.EqualFold, without the rune decoding:
// the only non-ASCII runes that fold to ASCII, K (Kelvin) and ſ, are
// longer than the letters they fold to. Strings of other lengths it never
// takes for equal, as an http.Header lookup does not. The lengths are
// compared inline, where most names part.
func equalFoldASCII[T string | []byte](a T, b string) bool {
	return len(a) == len(b) && foldEqualASCII(a, b)
}

// foldEqualASCII is equalFoldASCII for a and b of one length.
func foldEqualASCII[T string | []byte](a T, b string) bool {
	for i := range len(b) {
		if c, d := a[i], b[i]; c != d {
			if c |= 0x20; c != d|0x20 || c < 'a' || c > 'z' {
				return false
			}
		}
	}
	return true
}

// setForwardedHeaders makes out, a copy of in's header, the header the
// net/http path and the mirror forward for the request x records: the
// forwarding rules above, as the fast path writes them.
func setForwardedHeaders(in *http.Request, out http.Header, x *exchange) {
	forwardHeader(in.Header, out)
	ip, _, _ := net.SplitHostPort(in.RemoteAddr)
	if v, ok := forwardedFor(forwardedForMode(x), in.Header["X-Forwarded-For"], ip); ok {
		out["X-Forwarded-For"] = []string{v}
	}
	if x == nil {
		return
	}
	addProxyFields(&headerFields{h: out}, in, x)
}

// addProxyFields adds the fields the proxy itself tells the target of a
// request that came as an http.Request (the net/http path, the mirror,
// HTTP/2 clients): the connection's and the request's, for the exchange
// x records.
func addProxyFields(s fieldSink, r *http.Request, x *exchange) {
	addConnFieldsOf(s, r, x)
	addRequestFields(s, r.Host, x.id, x.ruleInfo(nil))
}

// addConnFieldsOf adds the connection's fields (scheme, port, identity) of
// a request that came as an http.Request, for the exchange x records.
func addConnFieldsOf(s fieldSink, r *http.Request, x *exchange) {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	identity := x.identity
	if identity == "" {
		identity = anonymousIdentity
	}
	addConnFields(s, proto, strconv.Itoa(int(x.port)), identity)
}
