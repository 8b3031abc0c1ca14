package main

import (
	"fmt"
	"io"
	"os"
)

// Defaults of the proxy's observability flags, shared by `trellis proxy`
// and `trellis up`.
const (
	defaultAdminListen = "127.0.0.1:9901"
	accessLogUsage     = `write one JSON line per request to this file (appended), or "-" for standard output`
	adminListenUsage   = "address of the admin listener serving /metrics, /healthz and /readyz (empty: none)"
)

// openAccessLog opens the destination an --access-log flag names: nothing
// for "", standard output for "-", else the file, created if need be and
// appended to. close releases it.
func openAccessLog(path string, stdout io.Writer) (w io.Writer, close func() error, err error) {
	switch path {
	case "":
		return nil, func() error { return nil }, nil
	case "-":
		return stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	return f, f.Close, nil
}
