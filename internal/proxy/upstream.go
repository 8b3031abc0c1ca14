package proxy

import (
	"crypto/tls"
	"net/http"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/router"
)

// upstream sends each request to its target in the protocol of the target's
// group, whatever protocol the client spoke — the conversion Lattice makes
// between listener and target-group protocols:
//
//	HTTP  + HTTP1        HTTP/1.1
//	HTTP  + HTTP2, GRPC  HTTP/2 with prior knowledge (h2c)
//	HTTPS + HTTP1        HTTP/1.1 over TLS
//	HTTPS + HTTP2, GRPC  HTTP/2 over TLS
//
// Over TLS the target's certificate is not verified, as in Lattice: the
// target is identified by the address the control plane gave, not by its
// certificate.
//
// HTTP/2 targets get the frame-level client of the peer hop
// (peer.TargetTransport): the handler's goroutine writes the request's
// HEADERS itself and one read loop per connection hands back responses,
// where net/http's HTTP/2 transport spends a goroutine hand-off on each.
type upstream struct {
	h1, tlsH1  *http.Transport
	h2c, tlsH2 *peer.TargetTransport
	// cluster is the proxy's; a target of another cluster goes to peer
	// (the peer hop) when it is set.
	cluster string
	peer    func(*http.Request, *router.Target) (*http.Response, error)
}

func newUpstream(cluster string) *upstream {
	h2c := newTargetTransport(false)
	tlsH1 := newTransport()
	tlsH1.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	tlsH1.Protocols = new(http.Protocols)
	tlsH1.Protocols.SetHTTP1(true)

	tlsH2 := newTargetTransport(true)

	return &upstream{h1: newTransport(), h2c: h2c, tlsH1: tlsH1, tlsH2: tlsH2, cluster: cluster}
}

// newTargetTransport is the transport to HTTP/2 targets, over TLS or h2c,
// with the limits of newTransport's.
func newTargetTransport(useTLS bool) *peer.TargetTransport {
	return peer.NewTargetTransport(peer.TargetOptions{
		TLS: useTLS, DialTimeout: dialTimeout, KeepAlive: dialKeepAlive,
		IdleTimeout: idleConnTimeout, ResponseHeaderTimeout: responseHeaderTimeout,
	})
}

// RoundTrip sends req with the transport its target's group speaks, or
// through the peer hop when the target is another cluster's. The target
// travels in the request's context (targetKey); its scheme was set by
// targetScheme.
func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	t, _ := req.Context().Value(targetKey{}).(*router.Target)
	if t != nil && t.Cluster != u.cluster {
		if u.peer == nil {
			return nil, errNoPeer
		}
		return u.peer(req, t)
	}
	return u.transport(req, t).RoundTrip(req)
}

// transport is the transport that speaks t's group's protocol (t may be
// nil: HTTP/1.1).
func (u *upstream) transport(req *http.Request, t *router.Target) http.RoundTripper {
	h2 := false
	if t != nil {
		if g := t.Group(); g != nil {
			h2 = g.Version == model.HTTP2 || g.Version == model.GRPC
		}
	}
	switch {
	case req.URL.Scheme == "https" && h2:
		return u.tlsH2
	case req.URL.Scheme == "https":
		return u.tlsH1
	case h2:
		return u.h2c
	}
	return u.h1
}

// CloseIdleConnections closes every transport's idle connections.
func (u *upstream) CloseIdleConnections() {
	for _, t := range []*http.Transport{u.h1, u.tlsH1} {
		t.CloseIdleConnections()
	}
	u.h2c.CloseIdleConnections()
	u.tlsH2.CloseIdleConnections()
}

// targetScheme is the URL scheme to reach t: https for HTTPS groups.
func targetScheme(t *router.Target) string {
	if g := t.Group(); g != nil && g.Protocol == model.ProtocolHTTPS {
		return "https"
	}
	return "http"
}
