package accesslog

import (
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// OpenDestination opens where an access log goes, as the --access-log flag
// of `trellis proxy` and `trellis up` names it: nowhere for "", stdout for
// "-", else the file at path, created if need be and appended to, and
// reopened at its path on SIGHUP so that log rotation works (failures to
// reopen are logged; writing goes on to the old file). release stops the
// reopening and closes the file.
func OpenDestination(path string, stdout io.Writer, log *slog.Logger) (w io.Writer, release func() error, err error) {
	switch path {
	case "":
		return nil, func() error { return nil }, nil
	case "-":
		return stdout, func() error { return nil }, nil
	}
	f, err := OpenFile(path)
	if err != nil {
		return nil, nil, err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if err := f.Reopen(); err != nil {
					log.Error("access log not reopened; writing on to the old file", "file", path, "err", err)
				} else {
					log.Info("access log reopened", "file", path)
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
