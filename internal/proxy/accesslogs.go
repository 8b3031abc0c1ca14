package proxy

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
)

// sinkCloseTimeout bounds writing out a sink no snapshot names any more.
const sinkCloseTimeout = 10 * time.Second

// sinks are the access-log sinks the model's networks and services name
// (ServiceNetwork.AccessLogs, Service.AccessLogs): each a Logger on
// dir/NAME.log, opened when a snapshot first names it and closed when one
// no longer does. Update and Shutdown use it, under Proxy.mu.
type sinks struct {
	dir  string
	log  *slog.Logger
	open map[string]*sink
	// warned: sinks were named without a directory, and it was logged.
	warned bool
}

type sink struct {
	file   *accesslog.File
	logger *accesslog.Logger
}

// update opens the sinks snap names, closes the others, and returns the
// loggers of each service's sinks (its network's, then its own) by
// service name. Without a directory it opens none and logs once a
// snapshot that names some.
func (s *sinks) update(snap *model.Snapshot) map[string][]*accesslog.Logger {
	networks := map[string][]string{}
	for i := range snap.Networks {
		if n := &snap.Networks[i]; len(n.AccessLogs) > 0 {
			networks[n.Name] = n.AccessLogs
		}
	}
	var out map[string][]*accesslog.Logger
	want, failed := map[string]bool{}, map[string]bool{}
	for i := range snap.Services {
		svc := &snap.Services[i]
		names := append(slices.Clip(networks[svc.Network]), svc.AccessLogs...)
		if len(names) == 0 {
			continue
		}
		if s.dir == "" {
			if !s.warned {
				s.log.Warn("access-log sinks named but no access-log directory set: not written", "service", svc.Name, "sinks", names)
				s.warned = true
			}
			continue
		}
		var loggers []*accesslog.Logger
		for _, name := range names {
			// The server validated the names; a proxy fed an unvalidated
			// snapshot writes no file outside its directory.
			if !model.ValidAccessLog(name) || failed[name] {
				continue
			}
			want[name] = true
			sk := s.open[name]
			if sk == nil {
				f, err := accesslog.OpenFile(filepath.Join(s.dir, name+".log"))
				if err != nil {
					s.log.Error("access-log sink not opened", "sink", name, "err", err)
					failed[name] = true
					continue
				}
				sk = &sink{file: f, logger: accesslog.New(f, accesslog.Options{Logger: s.log})}
				if s.open == nil {
					s.open = map[string]*sink{}
				}
				s.open[name] = sk
			}
			if !slices.Contains(loggers, sk.logger) {
				loggers = append(loggers, sk.logger)
			}
		}
		if len(loggers) > 0 {
			if out == nil {
				out = map[string][]*accesslog.Logger{}
			}
			out[svc.Name] = loggers
		}
	}
	for name, sk := range s.open {
		if !want[name] {
			delete(s.open, name)
			go sk.close(s.log, name)
		}
	}
	return out
}

// closeAll writes out and closes every sink.
func (s *sinks) closeAll(ctx context.Context) {
	for name, sk := range s.open {
		if err := sk.logger.Close(ctx); err != nil {
			s.log.Warn("access-log sink not written out", "sink", name, "err", err)
		}
		sk.file.Close()
	}
	s.open = nil
}

// close writes out and closes a sink no snapshot names any more; requests
// still logging to it are dropped and counted.
func (sk *sink) close(log *slog.Logger, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), sinkCloseTimeout)
	defer cancel()
	if err := sk.logger.Close(ctx); err != nil {
		log.Warn("access-log sink not written out", "sink", name, "err", err)
	}
	sk.file.Close()
}
