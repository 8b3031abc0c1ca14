package proxy

import (
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
)

// Headers the proxy adds to every request it forwards to a target. They are
// Trellis's analogues of Lattice's x-amzn-lattice-* headers; every incoming
// header starting "x-trellis-" is removed first, so that no client can
// forge them.
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
)

var (
	anonymous  = []string{"Type=Anonymous"}
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// setForwardedHeaders sets the forwarding and identity headers of the
// outbound request. The reverse proxy has already removed the hop-by-hop
// headers (those named by Connection too) and the incoming Forwarded and
// X-Forwarded-For, -Host and -Proto.
//
//   - X-Forwarded-For: the incoming list with the client's address
//     appended, so that its last entry is always the address this proxy saw.
//   - X-Forwarded-For-Port and X-Forwarded-For-Proto, as Lattice names
//     them: the listener port and "http" or "https". The conventional
//     X-Forwarded-Port and X-Forwarded-Proto carry the same values, since
//     most frameworks read only those; X-Forwarded-Host is the Host the
//     client sent. Incoming values of all of these are replaced.
//   - the x-trellis-* headers above.
func setForwardedHeaders(pr *httputil.ProxyRequest) {
	in, h := pr.In, pr.Out.Header
	stripTrellis(h)
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h["X-Forwarded-For"] = []string{ip}
	}
	h["X-Forwarded-Host"] = []string{in.Host}
	proto := protoHTTP
	if in.TLS != nil {
		proto = protoHTTPS
	}
	h["X-Forwarded-Proto"] = proto
	h["X-Forwarded-For-Proto"] = proto
	delete(h, "X-Forwarded-Port")
	delete(h, "X-Forwarded-For-Port")
	x := exchangeOf(in)
	if x == nil {
		return
	}
	port := []string{strconv.Itoa(int(x.port))}
	h["X-Forwarded-Port"] = port
	h["X-Forwarded-For-Port"] = port
	if x.identity != "" {
		h[headerIdentity] = []string{x.identity}
	} else {
		h[headerIdentity] = anonymous
	}
	h[headerRequestID] = []string{x.id}
	if info := x.ruleInfo(nil); info != nil && info.targetHeader != nil {
		h[headerNetwork] = info.networkHeader
		h[headerTarget] = info.targetHeader
	}
}

// stripTrellis removes every header whose name starts with "x-trellis-" in
// any case and with '_' for any '-': servers that map header names to
// variables (CGI, WSGI, PHP) read "X_Trellis_Identity" as
// x-trellis-identity.
func stripTrellis(h http.Header) {
	for k := range h {
		if isTrellisHeader(k) {
			delete(h, k)
		}
	}
}

func isTrellisHeader(name string) bool {
	if len(name) < len(trellisPrefix) {
		return false
	}
	for i := range len(trellisPrefix) {
		c, want := name[i], trellisPrefix[i]
		switch {
		case c == want, c|0x20 == want|0x20 && want >= 'A':
		case want == '-' && c == '_':
		default:
			return false
		}
	}
	return true
}
