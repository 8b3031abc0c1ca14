package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"trellis.dev/trellis/internal/proxy/accesslog"
)

// Defaults of the proxy's observability flags, shared by `trellis proxy`
// and `trellis up`.
const (
	defaultAdminListen = "127.0.0.1:9901"
	accessLogUsage     = `write one JSON line per request to this file (appended; reopened on SIGHUP, after a rotation), or "-" for standard output`
	adminListenUsage   = "address of the admin listener serving /metrics, /healthz and /readyz (empty: none)"
)

// openAccessLog opens the destination an --access-log flag names: nothing
// for "", standard output for "-", else the file, created if need be and
// appended to, and reopened at its path on SIGHUP so that log rotation
// works. release closes it.
func openAccessLog(path string, stdout io.Writer) (w io.Writer, release func() error, err error) {
	switch path {
	case "":
		return nil, func() error { return nil }, nil
	case "-":
		return stdout, func() error { return nil }, nil
	}
	f, err := accesslog.OpenFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if err := f.Reopen(); err != nil {
					slog.Error("access log not reopened; writing on to the old file", "file", path, "err", err)
				} else {
					slog.Info("access log reopened", "file", path)
				}
			case <-done:
				return
			}
		}
	}()
	return f, func() error {
		signal.Stop(hup)
		close(done)
		return f.Close()
	}, nil
}
