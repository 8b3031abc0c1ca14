package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

// portServer is what serves one bind: an HTTP(S) server or a TLS
// passthrough splicer.
type portServer interface {
	address() string
	protocol() model.Protocol
	// stopAccepting closes the listening socket at once, freeing its bind.
	// Connections already accepted carry on until drain.
	stopAccepting()
	// drain waits for the work in flight to finish; if ctx ends first it
	// closes every connection and returns the context's error.
	drain(ctx context.Context) error
}

// open binds b and serves it with the protocol the table gives it.
func (p *Proxy) open(b router.Bind, proto model.Protocol) (portServer, error) {
	ln, err := p.listen(b)
	if err != nil {
		return nil, err
	}
	switch proto {
	case model.ProtocolHTTP, model.ProtocolHTTPS:
		return p.openHTTP(b, proto, ln), nil
	case model.ProtocolTLSPassthrough:
		s := &passthroughPort{
			addr:              ln.Addr().String(),
			passthroughServer: newPassthroughServer(ln, p.passthroughPick(b), p.log),
		}
		s.cluster, s.peer = p.cluster, p.peerPassthrough
		go func() {
			if err := s.serve(); !errors.Is(err, net.ErrClosed) {
				p.log.Error("listener stopped serving", "bind", b, "addr", s.addr, "err", err)
			}
		}()
		return s, nil
	}
	ln.Close()
	return nil, fmt.Errorf("protocol %q is not served", proto)
}

// listener is one HTTP server on one bind. An HTTP bind speaks HTTP/1.1
// and HTTP/2 with prior knowledge (h2c, which gRPC clients use in the
// clear); an HTTPS bind terminates TLS and speaks HTTP/1.1 or HTTP/2 as
// ALPN agrees.
type listener struct {
	addr  string
	proto model.Protocol
	ln    net.Listener
	srv   *http.Server
	// fast is the fast path, which accepts the listener's connections: it
	// serves HTTP/1.1 itself, gives HTTP/2 connections to h2 and the
	// rest to srv. nil when the proxy has no fast path, and srv serves
	// everything, HTTP/2 included.
	fast *fastServer
	h2   *peer.HTTPServer
	// wildcard: the bind is a wildcard default socket, whose requests
	// carry the address they reached (localIPKey).
	wildcard bool
	// closing is set before the proxy closes ln, so that Serve's resulting
	// error is not reported as a failure.
	closing atomic.Bool
}

func (p *Proxy) openHTTP(b router.Bind, proto model.Protocol, ln net.Listener) *listener {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serveHTTP(b, w, r)
	})
	l := &listener{
		addr:  ln.Addr().String(),
		proto: proto,
		ln:    ln,
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
			Protocols:         new(http.Protocols),
			HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxConcurrentStreams},
		},
		wildcard: b.Addr == "" && p.wildcard,
	}
	l.srv.Protocols.SetHTTP1(true)
	l.srv.ConnState = func(c net.Conn, s http.ConnState) {
		// A connection taken over by an upgrade is no longer HTTP/1.
		if rc, ok := c.(*replayConn); ok && s == http.StateHijacked {
			if g, ok := rc.r.(*h1.Guard); ok {
				g.Pass()
			}
		}
	}
	l.srv.ConnContext = l.connContext
	var serve net.Listener = idleListener{ln}
	var tlsConfig *tls.Config
	if proto == model.ProtocolHTTPS {
		l.srv.Protocols.SetHTTP2(true)
		tlsConfig = &tls.Config{
			MinVersion:       tls.VersionTLS12,
			NextProtos:       []string{"h2", "http/1.1"},
			GetCertificate:   p.certificate(b),
			CurvePreferences: p.keyExchange,
		}
		serve = tls.NewListener(serve, tlsConfig)
	} else {
		l.srv.Protocols.SetUnencryptedHTTP2(true)
		serve = guardedListener{serve}
	}
	if p.fast {
		// The fast path accepts every connection (and terminates TLS),
		// gives h2 the HTTP/2 ones and srv those it does not serve.
		l.h2 = p.newHTTP2Server(handler, l.connContext)
		l.fast = newFastServer(p, b, ln.Addr(), tlsConfig, l.h2)
		serve = l.fast.handoff
		go func() {
			if err := l.fast.serve(ln); !l.closing.Load() {
				p.log.Error("listener stopped serving", "bind", b, "addr", l.addr, "err", err)
			}
		}()
	}
	p.harden(l.srv)
	go func() {
		err := l.srv.Serve(serve)
		if !errors.Is(err, http.ErrServerClosed) && !l.closing.Load() {
			p.log.Error("listener stopped serving", "bind", b, "addr", l.addr, "err", err)
		}
	}()
	return l
}

// connContext is the context of the requests of connection c, on either
// server: the local address a wildcard socket was reached at, the state of
// a TLS connection net/http gets wrapped, the stream counts of HTTP/2
// (rapid reset), the connection for HTTP/1 body idle timeouts.
func (l *listener) connContext(ctx context.Context, c net.Conn) context.Context {
	if l.wildcard {
		ctx = context.WithValue(ctx, localIPKey{}, localIP(c.LocalAddr()))
	}
	if rc, ok := c.(*replayConn); ok && rc.tls != nil {
		ctx = context.WithValue(ctx, tlsStateKey{}, rc.tls)
	}
	ctx = context.WithValue(ctx, streamStatsKey{}, &streamStats{conn: c})
	return withIdleConn(ctx, c)
}

// certificate chooses the certificate of bind b (or of the bind routeBind
// gives the connection) by SNI from the index swapped in with the latest
// table, so a certificate change takes effect on the next handshake without
// reopening the socket.
func (p *Proxy) certificate(b router.Bind) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		rb := b
		sv := p.served.Load()
		if b.Addr == "" && p.wildcard {
			rb = p.routeBind(sv.table, b, localIP(hello.Conn.LocalAddr()))
		}
		if ix := sv.certs[rb]; ix != nil {
			return ix.get(hello.ServerName), nil
		}
		return nil, fmt.Errorf("%s has no certificate", rb)
	}
}

func (l *listener) address() string          { return l.addr }
func (l *listener) protocol() model.Protocol { return l.proto }

func (l *listener) stopAccepting() {
	l.closing.Store(true)
	l.ln.Close()
}

func (l *listener) drain(ctx context.Context) error {
	// HTTP/2 clients get their GOAWAY at once, while the fast path waits
	// for its HTTP/1 connections.
	var h2err error
	var wg sync.WaitGroup
	if l.h2 != nil {
		wg.Go(func() { h2err = l.h2.Shutdown(ctx) })
	}
	var err error
	if l.fast != nil {
		err = l.fast.drain(ctx)
	}
	if err == nil {
		err = l.srv.Shutdown(ctx)
		if errors.Is(err, net.ErrClosed) {
			// Shutdown closing the socket stopAccepting already closed.
			err = nil
		}
	}
	if err != nil {
		l.srv.Close()
	}
	wg.Wait()
	if err == nil {
		err = h2err
	}
	return err
}

// passthroughPort adapts a passthroughServer to portServer.
type passthroughPort struct {
	addr string
	*passthroughServer
}

func (s *passthroughPort) address() string        { return s.addr }
func (*passthroughPort) protocol() model.Protocol { return model.ProtocolTLSPassthrough }

// passthroughPick routes a TLS passthrough connection on bind b (or the
// bind routeBind gives it) by its server name: the auth policies of the
// name's service must allow trellis:Connect, then its route picks a backend
// and a target as for HTTP. A target of another cluster is reached through
// the peer hop (peerPassthrough), whose proxies must be reachable, with the
// route's service, port and the caller's identity for the receiver to judge.
func (p *Proxy) passthroughPick(b router.Bind) passthroughPick {
	return func(local, remote net.Addr, serverName string) (*router.Target, *router.Group, hopClaim) {
		sv := p.served.Load()
		tab := sv.table
		rb := b
		if b.Addr == "" && p.wildcard {
			rb = p.routeBind(tab, b, localIP(local))
		}
		rt := tab.MatchSNI(rb, serverName)
		if rt == nil {
			return nil, nil, hopClaim{}
		}
		if rt.Auth != nil {
			src := remoteIP(remote.String())
			req := &auth.Request{
				Action: auth.ActionConnect, Principal: sv.principal(src),
				Port: int(rb.Port), SourceIP: src, SourceCluster: p.cluster,
			}
			if res := rt.Auth.Authorize(req); !res.Allowed {
				p.log.Info("passthrough: connection refused by auth policy", "server_name", serverName, "remote", remote.String(),
					"level", res.DeniedBy, "explicit", res.Explicit)
				return nil, nil, hopClaim{}
			}
		}
		b := rt.Pick()
		if b == nil || b.Group() == nil {
			return nil, nil, hopClaim{}
		}
		t := b.Group().Pick()
		if t == nil {
			return nil, nil, hopClaim{}
		}
		if !p.reachable(t) {
			p.peerUnavailable(t, "server_name", serverName)
			return nil, nil, hopClaim{}
		}
		var via hopClaim
		if t.Cluster != p.cluster {
			// What the receiver judges the tunnel by again.
			via = hopClaim{service: rt.Service, port: rb.Port}
			if svc := tab.Service(rt.Service); svc != nil {
				via.network = svc.Network
			}
			if pr := sv.principal(remoteIP(remote.String())); pr.Type == auth.PrincipalWorkload {
				via.identity = pr.ID
			}
		}
		return t, b.Group(), via
	}
}

// guardMaxHead bounds a request head an h1.Guard holds: more than the
// http.Server takes, so that the server answers an oversize head (431).
const guardMaxHead = maxHeaderBytes + 8<<10

// guardedListener gives net/http its connections through an h1.Guard,
// which refuses the framings RFC 9112 says must not keep a connection
// (Transfer-Encoding with Content-Length, in HTTP/1.0, folded).
type guardedListener struct{ net.Listener }

func (l guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &replayConn{Conn: c, r: h1.NewGuard(c, guardMaxHead)}, nil
}
