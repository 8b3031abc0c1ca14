package proxy

// Tunnels through the peer hop (package peer's Tunnel): a TLS passthrough
// connection, or an HTTP/1.1 upgrade (WebSocket), to a target of another
// cluster. Sending: the passthrough server and the reverse proxy's
// transport open one instead of a request. Receiving: the target must be
// this cluster's in the group the peer names, as for a request, and of a
// kind the tunnel fits; the bytes are then spliced to it. The receiver
// checks what it can of the bytes, so that a peer cannot use a tunnel to
// send a target what a request could not: a passthrough tunnel must start
// with a TLS ClientHello, and an upgrade's head is parsed, its identity set
// by the receiver as for a request, and the connection spliced only once
// the target agreed to switch protocols.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/internal/proxy/sni"
)

// peerPassthrough carries a TLS passthrough connection, whose first bytes
// (the ClientHello) hello has read, to t in another cluster, and splices it
// until both sides are done. It reports unsent when the hop delivered
// nothing and did not read on from client: the connection may then go to
// another pick.
func (p *Proxy) peerPassthrough(client net.Conn, hello sni.Hello, t *router.Target, via hopClaim) (unsent bool) {
	if p.peer == nil {
		p.peerUnavailable(t, "server_name", hello.ServerName)
		return false
	}
	pr, err := p.peerRequest(t, via.identity)
	if err != nil {
		p.peerUnavailable(t, "server_name", hello.ServerName)
		return true
	}
	pr.Service, pr.Network, pr.Port = via.service, via.network, via.port
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The tunnel carries the bytes read so far, then, once accepted, the
	// client's from where they stopped: the client's end of stream ends
	// it.
	back, err := p.peer.Tunnel(ctx, pr, peer.TunnelTCP, hello.Read, client)
	if err != nil {
		p.log.Warn("passthrough: peer hop failed", "server_name", hello.ServerName, "cluster", t.Cluster, "target", t.Addr, "err", err)
		return peer.Unsent(err)
	}
	defer back.Close()
	io.Copy(client, back)
	closeWrite(client)
	// The target's side ended; the client's ends with its connection, which
	// the caller closes.
	return false
}

// peerUpgrade sends an upgrade request (req, as the reverse proxy made it)
// through a tunnel. The response is the target's, read from the tunnel: on
// 101 its body is the upgraded connection, which the reverse proxy
// splices to the client's.
func (p *Proxy) peerUpgrade(req *http.Request, pr peer.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
		return nil, errors.New("an upgrade request with a body cannot cross the peer hop")
	}
	var head bytes.Buffer
	out := req.Clone(req.Context())
	out.Body = nil
	if err := out.Write(&head); err != nil {
		return nil, err
	}
	toTarget, w := io.Pipe()
	back, err := p.peer.Tunnel(req.Context(), pr, peer.TunnelUpgrade, head.Bytes(), toTarget)
	if err != nil {
		w.Close()
		return nil, err
	}
	stop := time.AfterFunc(responseHeaderTimeout, func() { back.Close() })
	br := bufio.NewReader(back)
	resp, err := http.ReadResponse(br, req)
	stop.Stop()
	if err != nil {
		back.Close()
		w.Close()
		return nil, fmt.Errorf("reading the target's answer to the upgrade through the peer hop: %w", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedTunnel{Reader: br, w: w, back: back}
		return resp, nil
	}
	resp.Body = readCloser{resp.Body, &upgradedTunnel{w: w, back: back}}
	return resp, nil
}

// upgradedTunnel is an upgraded connection through the peer hop, as the
// reverse proxy wants it (an io.ReadWriteCloser).
type upgradedTunnel struct {
	io.Reader
	w    *io.PipeWriter
	back io.Closer
}

func (u *upgradedTunnel) Write(b []byte) (int, error) { return u.w.Write(b) }

// CloseWrite ends the bytes to the target: the receiver half-closes its
// connection.
func (u *upgradedTunnel) CloseWrite() error { return u.w.Close() }

func (u *upgradedTunnel) Close() error {
	u.w.Close()
	return u.back.Close()
}

// maxUpgradeHead bounds the head of an upgrade request a peer sends.
const maxUpgradeHead = maxHeaderBytes + 4<<10

// deliverTunnel serves a tunnel a peer asked for to t, this cluster's
// target (deliver checked that): a passthrough tunnel to a TCP group's
// target or an export's endpoint, an upgrade to an HTTP or HTTPS one. The
// target is reached before the tunnel is accepted, so that a target that
// cannot be reached is a refusal (502) the sender can act on.
func (p *Proxy) deliverTunnel(w http.ResponseWriter, r *http.Request, d peer.Delivery, t *router.Target) {
	g := t.Group()
	export := strings.HasPrefix(d.TargetGroup, peerExport)
	var ok bool
	switch d.Tunnel {
	case peer.TunnelTCP:
		ok = g.Protocol == model.ProtocolTCP || export
	case peer.TunnelUpgrade:
		ok = g.Protocol == model.ProtocolHTTP || g.Protocol == model.ProtocolHTTPS
	}
	if !ok {
		p.peerRefused(d.PeerCluster, "NotTunnelable")
		w.Header().Set(peer.HeaderRefused, "NotTunnelable")
		http.Error(w, fmt.Sprintf("no %q tunnel to %s in %s", d.Tunnel, t.Addr, d.TargetGroup), http.StatusForbidden)
		return
	}
	s := peer.ReceivingStream(w, r)
	defer s.Close()
	switch d.Tunnel {
	case peer.TunnelTCP:
		p.deliverPassthrough(w, r, s, d, t)
	case peer.TunnelUpgrade:
		p.deliverUpgrade(w, r, s, d, t)
	}
}

// deliverPassthrough splices a passthrough tunnel, which must begin with a
// TLS ClientHello, to t.
func (p *Proxy) deliverPassthrough(w http.ResponseWriter, r *http.Request, s *peer.Stream, d peer.Delivery, t *router.Target) {
	hello, replay, err := sni.Peek(s, helloTimeout)
	if err != nil {
		p.peerRefused(d.PeerCluster, "NoClientHello")
		w.Header().Set(peer.HeaderRefused, "NoClientHello")
		http.Error(w, "a passthrough tunnel must start with a TLS ClientHello", http.StatusBadRequest)
		return
	}
	// As for a request: the service named must route to the group here,
	// and its policies allow the connection from the peer's cluster.
	svc, port := p.routedOrRefused(w, p.served.Load(), d)
	if svc == nil {
		return
	}
	if !p.authorizeConnect(w, d, svc, port) {
		return
	}
	target, err := (&net.Dialer{Timeout: passthroughDialTimeout}).DialContext(r.Context(), "tcp", t.Addr)
	if err != nil {
		p.log.Warn("peer passthrough: target unreachable", "peer_cluster", d.PeerCluster, "server_name", hello.ServerName, "target", t.Addr, "err", err)
		http.Error(w, "target unreachable", http.StatusBadGateway)
		return
	}
	defer target.Close()
	if peer.AcceptTunnel(w) != nil {
		return
	}
	p.metrics.peerDelivered(d.PeerCluster)
	stop := context.AfterFunc(r.Context(), func() { target.Close() })
	defer stop()
	splice(replay, s, target, target)
}

// deliverUpgrade reads the upgrade request a tunnel starts with, sends it
// to t with the identity the peer vouched for, and splices the tunnel to
// t's connection once t switched protocols; any other answer goes back and
// the tunnel ends.
func (p *Proxy) deliverUpgrade(w http.ResponseWriter, r *http.Request, s *peer.Stream, d peer.Delivery, t *router.Target) {
	s.SetReadDeadline(time.Now().Add(helloTimeout))
	head := &headLimit{r: s, n: maxUpgradeHead}
	fromPeer := bufio.NewReaderSize(head, 4<<10)
	req, err := http.ReadRequest(fromPeer)
	s.SetReadDeadline(time.Time{})
	head.n = -1
	switch {
	case err != nil:
		err = fmt.Errorf("reading the upgrade request: %w", err)
	case req.Header.Get("Upgrade") == "":
		err = errors.New("the tunnel's request asks for no upgrade")
	case req.ContentLength != 0 || len(req.TransferEncoding) > 0:
		err = errors.New("an upgrade request through the peer hop has no body")
	}
	if err != nil {
		p.peerRefused(d.PeerCluster, "BadUpgrade")
		w.Header().Set(peer.HeaderRefused, "BadUpgrade")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for k := range req.Header {
		if strings.HasPrefix(k, peer.HeaderPrefix) {
			delete(req.Header, k)
		}
	}
	// As for a request: the service named must route to the group here,
	// and its policies allow the upgrade's head.
	svc, port := p.routedOrRefused(w, p.served.Load(), d)
	if svc == nil {
		return
	}
	deliveredFields(req.Header, d, svc)
	if _, allowed := p.authorizeDelivery(w, req, d, svc, port); !allowed {
		return
	}
	req.Header.Set(headerIdentity, deliveredIdentity(d))
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // not Go's default
	}
	target, err := dialTarget(r.Context(), t)
	if err != nil {
		p.log.Warn("peer upgrade: target unreachable", "peer_cluster", d.PeerCluster, "target", t.Addr, "err", err)
		http.Error(w, "target unreachable", http.StatusBadGateway)
		return
	}
	defer target.Close()
	stop := context.AfterFunc(r.Context(), func() { target.Close() })
	defer stop()
	target.SetDeadline(time.Now().Add(responseHeaderTimeout))
	fromTarget := bufio.NewReader(target)
	var resp *http.Response
	if err = req.Write(target); err == nil {
		resp, err = http.ReadResponse(fromTarget, req)
	}
	target.SetDeadline(time.Time{})
	if err != nil {
		p.log.Warn("peer upgrade: target failed", "peer_cluster", d.PeerCluster, "target", t.Addr, "err", err)
		http.Error(w, "target failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if peer.AcceptTunnel(w) != nil {
		return
	}
	p.metrics.peerDelivered(d.PeerCluster)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Close = true
		resp.Write(s)
		return
	}
	var switched bytes.Buffer
	fmt.Fprintf(&switched, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Write(&switched)
	switched.WriteString("\r\n")
	if _, err := s.Write(switched.Bytes()); err != nil {
		return
	}
	// Bytes the peer sent early wait in fromPeer; they reach the target
	// only now that it switched.
	splice(fromPeer, s, fromTarget, target)
}

// headLimit reads at most n bytes from r, then EOF; no limit once n is
// negative (the head has been read).
type headLimit struct {
	r io.Reader
	n int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), l.n)]
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// dialTarget connects to t as the local transport would for HTTP/1.1: TCP,
// or TLS (not verified, as for requests) for an HTTPS group.
func dialTarget(ctx context.Context, t *router.Target) (net.Conn, error) {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive}
	if targetScheme(t) == "https" {
		td := &tls.Dialer{NetDialer: d, Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}
		return td.DialContext(ctx, "tcp", t.Addr)
	}
	return d.DialContext(ctx, "tcp", t.Addr)
}
