package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// adminServer is the admin listener: metrics and probes, apart from the
// traffic listeners so that it can stay on loopback or a private address.
type adminServer struct {
	addr string
	srv  *http.Server
}

// ListenAdmin opens the admin listener at Config.AdminAddress and serves it
// until Shutdown. It returns the address it listens on (useful with port
// 0). The admin listener serves:
//
//   - GET /metrics: Prometheus metrics;
//   - GET /healthz: 200 while the process serves (liveness);
//   - GET /readyz: 200 once an Update has programmed a route table, 503
//     before that and from the start of Shutdown (readiness).
func (p *Proxy) ListenAdmin() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.shutdown:
		return "", errors.New("proxy is shut down")
	case p.admin != nil:
		return p.admin.addr, nil
	case p.adminAddress == "":
		return "", errors.New("no admin address configured")
	}
	ln, err := net.Listen("tcp", p.adminAddress)
	if err != nil {
		return "", fmt.Errorf("admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", p.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not ready: no route table programmed, or shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: revision %d\n", p.Revision())
	})
	// Go's profiles, for diagnosing the proxy under load; the admin
	// listener is local (127.0.0.1 by default) like the rest of it.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	a := &adminServer{
		addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("admin listener stopped serving", "addr", a.addr, "err", err)
		}
	}()
	p.admin = a
	p.log.Info("admin listener open", "addr", a.addr)
	return a.addr, nil
}

// close stops the admin listener, letting a scrape in flight finish for a
// moment.
func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if a.srv.Shutdown(ctx) != nil {
		a.srv.Close()
	}
}
