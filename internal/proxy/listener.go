package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
)

// listener is one HTTP/1.1 server on one model port.
type listener struct {
	addr string
	ln   net.Listener
	srv  *http.Server
	// closing is set before the proxy closes ln, so that Serve's resulting
	// error is not reported as a failure.
	closing atomic.Bool
}

// open binds the listener for port and starts serving it.
func (p *Proxy) open(port int32) (*listener, error) {
	ln, err := p.listen(port)
	if err != nil {
		return nil, err
	}
	l := &listener{
		addr: ln.Addr().String(),
		ln:   ln,
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.serveHTTP(port, w, r)
			}),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		err := l.srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) && !l.closing.Load() {
			p.log.Error("listener stopped serving", "port", port, "addr", l.addr, "err", err)
		}
	}()
	return l, nil
}

// stopAccepting closes the listening socket at once, freeing its port.
// Connections already accepted carry on until drain.
func (l *listener) stopAccepting() {
	l.closing.Store(true)
	l.ln.Close()
}

// drain waits for the requests in flight to finish, closing connections as
// they go idle. If ctx ends first it closes every connection and returns the
// context's error.
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
