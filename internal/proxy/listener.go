package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"trellis.dev/trellis/internal/model"
)

// portServer is what serves one model port: an HTTP(S) server or a TLS
// passthrough splicer.
type portServer interface {
	address() string
	protocol() model.Protocol
	// stopAccepting closes the listening socket at once, freeing its port.
	// Connections already accepted carry on until drain.
	stopAccepting()
	// drain waits for the work in flight to finish; if ctx ends first it
	// closes every connection and returns the context's error.
	drain(ctx context.Context) error
}

// open binds port and serves it with the protocol the table gives it.
func (p *Proxy) open(port int32, proto model.Protocol) (portServer, error) {
	ln, err := p.listen(port)
	if err != nil {
		return nil, err
	}
	switch proto {
	case model.ProtocolHTTP, model.ProtocolHTTPS:
		return p.openHTTP(port, proto, ln), nil
	case model.ProtocolTLSPassthrough:
		s := &passthroughPort{
			addr:              ln.Addr().String(),
			passthroughServer: newPassthroughServer(ln, p.passthroughPick(port), p.log),
		}
		go func() {
			if err := s.serve(); !errors.Is(err, net.ErrClosed) {
				p.log.Error("listener stopped serving", "port", port, "addr", s.addr, "err", err)
			}
		}()
		return s, nil
	}
	ln.Close()
	return nil, fmt.Errorf("protocol %q is not served", proto)
}

// listener is one HTTP server on one model port. An HTTP port speaks
// HTTP/1.1 and HTTP/2 with prior knowledge (h2c, which gRPC clients use in
// the clear); an HTTPS port terminates TLS and speaks HTTP/1.1 or HTTP/2 as
// ALPN agrees.
type listener struct {
	addr  string
	proto model.Protocol
	ln    net.Listener
	srv   *http.Server
	// closing is set before the proxy closes ln, so that Serve's resulting
	// error is not reported as a failure.
	closing atomic.Bool
}

func (p *Proxy) openHTTP(port int32, proto model.Protocol, ln net.Listener) *listener {
	l := &listener{
		addr:  ln.Addr().String(),
		proto: proto,
		ln:    ln,
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.serveHTTP(port, w, r)
			}),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
			Protocols:         new(http.Protocols),
		},
	}
	l.srv.Protocols.SetHTTP1(true)
	serve := ln
	if proto == model.ProtocolHTTPS {
		l.srv.Protocols.SetHTTP2(true)
		serve = tls.NewListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2", "http/1.1"},
			GetCertificate: p.certificate(port),
		})
	} else {
		l.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	p.harden(l.srv)
	go func() {
		err := l.srv.Serve(serve)
		if !errors.Is(err, http.ErrServerClosed) && !l.closing.Load() {
			p.log.Error("listener stopped serving", "port", port, "addr", l.addr, "err", err)
		}
	}()
	return l
}

// certificate chooses port's certificate by SNI from the index swapped in
// with the latest table, so a certificate change takes effect on the next
// handshake without reopening the port.
func (p *Proxy) certificate(port int32) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if ix := (*p.certs.Load())[port]; ix != nil {
			return ix.get(hello.ServerName), nil
		}
		return nil, fmt.Errorf("port %d has no certificate", port)
	}
}

func (l *listener) address() string          { return l.addr }
func (l *listener) protocol() model.Protocol { return l.proto }

func (l *listener) stopAccepting() {
	l.closing.Store(true)
	l.ln.Close()
}

func (l *listener) drain(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	if errors.Is(err, net.ErrClosed) {
		// Shutdown closing the socket stopAccepting already closed.
		return nil
	}
	if err != nil {
		l.srv.Close()
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

// passthroughPick routes a TLS passthrough connection on port by its server
// name: the route of the name's service picks a backend and a target as for
// HTTP. Targets of other clusters need the peer hop, not built yet.
func (p *Proxy) passthroughPick(port int32) passthroughPick {
	return func(serverName string) (string, bool) {
		rt := p.table.Load().MatchSNI(port, serverName)
		if rt == nil {
			return "", false
		}
		b := rt.Pick()
		if b == nil || b.Group() == nil {
			return "", false
		}
		t := b.Group().Pick()
		if t == nil {
			return "", false
		}
		if t.Cluster != p.cluster {
			p.log.Error("peer hop to cluster "+t.Cluster+" not implemented", "server_name", serverName, "target", t.Addr)
			return "", false
		}
		return t.Addr, true
	}
}
