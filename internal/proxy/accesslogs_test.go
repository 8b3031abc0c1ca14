package proxy

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/testsync"
)

// The sinks a snapshot names are opened under the directory, a service's
// being its network's and its own; a name that is not a file name of the
// directory opens nothing; a sink no snapshot names is closed.
func TestSinksFollowTheSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := &sinks{dir: dir, log: slog.New(slog.DiscardHandler)}
	defer s.closeAll(t.Context())
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "net"}, AccessLogs: []string{"net-logs"}}},
		Services: []model.Service{
			{Meta: model.Meta{Name: "a"}, Network: "net", AccessLogs: []string{"a-logs", "../escape", "net-logs"}},
			{Meta: model.Meta{Name: "b"}, Network: "other"},
		},
	}}
	logs := s.update(snap)
	if len(logs["a"]) != 2 || len(logs["b"]) != 0 || len(s.open) != 2 {
		t.Fatalf("sinks of a: %d, of b: %d, open: %v", len(logs["a"]), len(logs["b"]), s.open)
	}
	for _, name := range []string{"net-logs.log", "a-logs.log"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.log")); err == nil {
		t.Errorf("a sink named ../escape was opened outside the directory")
	}
	netLogs := s.open["net-logs"].logger
	snap.Services[0].AccessLogs = nil
	snap.Networks[0].AccessLogs = nil
	if logs := s.update(snap); len(logs) != 0 || len(s.open) != 0 {
		t.Errorf("after no sink is named: %v, open %v", logs, s.open)
	}
	// The closed sink drops what still reaches it, and counts it.
	testsync.WaitFor(t, 5*time.Second, "the closed sink to drop entries", func() bool {
		netLogs.Log(&accesslog.Entry{})
		return netLogs.Dropped() > 0
	})

	// Without a directory, nothing opens.
	none := &sinks{log: slog.New(slog.DiscardHandler)}
	snap.Services[0].AccessLogs = []string{"a-logs"}
	if logs := none.update(snap); len(logs) != 0 || !none.warned {
		t.Errorf("without a directory: %v, warned %v", logs, none.warned)
	}
}
