package backend

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"sync"

	"sigs.k8s.io/gateway-api/conformance/echo-basic/tcpserver"
)

// startTCPEcho starts the TCP echo server on TCP_PORT (3000) and, when
// TLS_SERVER_CERT and TLS_SERVER_PRIV_KEY are set, its TLS variant on
// TLS_PORT (8443).
func startTCPEcho(in *Instance, c Container) error {
	ports, err := c.ports("TCP_PORT", "3000", "TLS_PORT", "8443")
	if err != nil {
		return err
	}
	tcpPort, tlsPort := ports[0], ports[1]
	pc := c.podContext()
	ctx := tcpserver.Context{
		Namespace: pc.Namespace, Ingress: pc.Ingress, Service: pc.Service, Pod: pc.Pod,
		TCPPort: tcpPort, TLSPort: tlsPort,
	}

	cfg, err := serverTLS(c, "TLS_SERVER_CERT", "TLS_SERVER_PRIV_KEY")
	if err != nil {
		return fmt.Errorf("tcp tls: %w", err)
	}
	if cfg != nil {
		cfg.MinVersion = tls.VersionTLS12
	}

	c.printf("Starting server (tcp) protocol=tcp port=%s\n", tcpPort)
	if err := serveTCP(in, c, tcpPort, nil, ctx); err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	if cfg != nil {
		c.printf("Starting server (tcp) protocol=tls port=%s\n", tlsPort)
		if err := serveTCP(in, c, tlsPort, cfg, ctx); err != nil {
			return fmt.Errorf("tcp tls: %w", err)
		}
	}
	return nil
}

// serveTCP accepts connections on port until the instance stops; each
// connection is served by tcpSession.
func serveTCP(in *Instance, c Container, port string, cfg *tls.Config, pc tcpserver.Context) error {
	ln, err := c.Network.Listen("tcp", c.addr(port))
	if err != nil {
		return err
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var conns sync.WaitGroup
	in.serve(func() {
		defer conns.Wait()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			conns.Go(func() {
				defer stop()
				tcpSession(ctx, c, conn, pc)
			})
		}
	}, func() {
		cancel()
		ln.Close()
	})
	return nil
}

// tcpSession speaks the echo-basic TCP protocol: a welcome line, then one
// answer per command line: PING → PONG, IS_TLS → true|false, TEST → the
// JSON TCPAssertions the suite's tcp helpers decode.
func tcpSession(ctx context.Context, c Container, conn net.Conn, pc tcpserver.Context) {
	defer conn.Close()
	a := tcpserver.TCPAssertions{Context: pc}
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.HandshakeContext(ctx); err != nil {
			c.printf("TLS Handshake failed: %v\n", err)
			return
		}
		st := tc.ConnectionState()
		a.IsTLS = true
		a.TLSAssertion = &tcpserver.TLSAssertions{
			Version:            tls.VersionName(st.Version),
			ServerName:         st.ServerName,
			NegotiatedProtocol: st.NegotiatedProtocol,
			Curves:             st.CurveID.String(),
			CipherSuite:        tls.CipherSuiteName(st.CipherSuite),
		}
	}
	payload, err := json.Marshal(a)
	if err != nil {
		c.printf("error encoding tcp response: %v\n", err)
		return
	}
	fmt.Fprint(conn, tcpserver.WelcomeMessage)
	lines := bufio.NewScanner(conn)
	for lines.Scan() {
		switch lines.Text() {
		case "TEST":
			fmt.Fprintf(conn, "%s\n", payload)
		case "IS_TLS":
			fmt.Fprintf(conn, "%t\n", a.IsTLS)
		case "PING":
			fmt.Fprint(conn, "PONG\n")
		}
	}
}
