package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/internal/proxy/sni"
)

// passthroughPick chooses where a TLS connection for serverName from remote,
// accepted at local, goes: the target and the group it was picked from, or
// a nil target when no service on the connection's bind takes the name or
// its auth policies refuse the connection.
type passthroughPick func(local, remote net.Addr, serverName string) (*router.Target, *router.Group, hopClaim)

// hopClaim is what a connection sent through the peer hop says of how it
// was routed, for the receiver to judge again: the service, its network
// and listener port, and the caller's workload identity ("" for none).
type hopClaim struct {
	service, network, identity string
	port                       int32
}

// passthroughServer serves one TLS_PASSTHROUGH port: it reads each
// connection's SNI without terminating TLS, picks a target by it and
// splices the untouched stream to that target, both ways, until either side
// closes. The target's own certificate reaches the client.
type passthroughServer struct {
	ln   net.Listener
	pick passthroughPick
	// cluster is the proxy's: the server dials its targets itself, and
	// peer carries a connection to another cluster's target through the
	// peer hop (Proxy.peerPassthrough), reporting when the hop delivered
	// nothing and another pick may be tried.
	cluster string
	peer    func(client net.Conn, hello sni.Hello, t *router.Target, via hopClaim) (unsent bool)
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newPassthroughServer(ln net.Listener, pick passthroughPick, log *slog.Logger) *passthroughServer {
	return &passthroughServer{ln: ln, pick: pick, log: log, conns: map[net.Conn]struct{}{}}
}

// serve accepts connections until the listener closes.
func (s *passthroughServer) serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.track(c, true) {
			c.Close()
			continue
		}
		s.wg.Go(func() {
			defer s.track(c, false)
			defer c.Close()
			s.handle(c)
		})
	}
}

// track adds or removes an active connection; adding fails once closed.
func (s *passthroughServer) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *passthroughServer) handle(client net.Conn) {
	hello, replay, err := sni.Peek(client, helloTimeout)
	if err != nil {
		s.log.Debug("passthrough: no TLS ClientHello", "remote", client.RemoteAddr(), "err", err)
		return
	}
	t, g, via := s.pick(client.LocalAddr(), client.RemoteAddr(), hello.ServerName)
	if t == nil {
		// No service for the name, or not for this client: close without
		// a word; a TLS alert would need a certificate we do not have.
		s.log.Debug("passthrough: no service for server name", "server_name", hello.ServerName)
		return
	}
	// A target of another cluster the hop could not reach leaves the
	// connection as it was: another pick (any cluster's) takes it, as
	// retryingTransport re-picks requests.
	for tries := 0; t.Cluster != s.cluster; tries++ {
		if !s.peer(client, hello, t, via) || g == nil || tries == maxUnsent {
			return
		}
		if t = g.Pick(); t == nil {
			return
		}
	}
	target, err := net.DialTimeout("tcp", t.Addr, passthroughDialTimeout)
	if err != nil {
		s.log.Warn("passthrough: target unreachable", "server_name", hello.ServerName, "target", t.Addr, "err", err)
		return
	}
	defer target.Close()
	splice(replay, client, target, target)
}

// splice copies both ways until both directions are done, passing each
// side's end of stream on as a half-close so protocols that rely on it
// (TLS close_notify then FIN) finish cleanly. clientR and targetR read
// client and target, from bytes already read of them on.
func splice(clientR io.Reader, client net.Conn, targetR io.Reader, target net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(target, clientR)
		closeWrite(target)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(client, targetR)
		closeWrite(client)
		done <- struct{}{}
	}()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// stopAccepting closes the listening socket, freeing the port; spliced
// connections carry on until drain.
func (s *passthroughServer) stopAccepting() { s.ln.Close() }

// drain waits for spliced connections to end, closing them all when ctx
// ends first.
func (s *passthroughServer) drain(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}
