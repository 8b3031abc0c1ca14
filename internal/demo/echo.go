// Package demo is the built-in echo backend the quick start runs behind the
// proxy (`trellis echo`, `trellis up --demo`): it answers every request with
// its own name and what it received, so a split between backends is visible
// with nothing but curl.
//
// It is a demonstration and test aid; the proxy must not depend on it.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"
)

// Reply is the JSON body of every answer.
type Reply struct {
	Backend string              `json:"backend"`
	Method  string              `json:"method"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Query   string              `json:"query,omitempty"`
	Headers map[string][]string `json:"headers"`
}

// Handler answers every request with a Reply naming backend.
func Handler(backend string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Trellis-Demo-Backend", backend)
		json.NewEncoder(w).Encode(Reply{
			Backend: backend,
			Method:  r.Method,
			Host:    r.Host,
			Path:    r.URL.Path,
			Query:   r.URL.RawQuery,
			Headers: r.Header,
		})
	})
}

// Serve answers on ln as backend until ctx ends.
func Serve(ctx context.Context, ln net.Listener, backend string) error {
	srv := &http.Server{Handler: Handler(backend), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
