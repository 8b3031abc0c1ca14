package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"trellis.dev/trellis/internal/model"
)

// withCacheFile seeds cache from the snapshot saved at path, delivers it,
// and returns an apply that saves every later snapshot there too, off the
// follow's path (cacheSaver). wait returns once the last save is written.
func (c *Client) withCacheFile(path string, cache *cache, apply func(*model.Snapshot)) (_ func(*model.Snapshot), wait func()) {
	snap, err := loadSnapshot(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		c.log.Warn("ignoring unreadable configuration cache", "file", path, "err", err)
	default:
		cache.reset(snap)
		c.log.Info("serving the cached configuration until the control plane answers", "file", path, "revision", snap.Revision)
		apply(cache.snapshot())
	}
	saver := &cacheSaver{path: path, log: c.log}
	return func(s *model.Snapshot) {
		apply(s)
		saver.save(s)
	}, saver.saving.Wait
}

// cacheSaver writes the newest snapshot it is given to path in the
// background: a save (the whole configuration encoded, written and synced)
// never delays the next revision, and revisions that arrive while one is
// written are saved once, as the newest of them.
type cacheSaver struct {
	path   string
	log    *slog.Logger
	saving sync.WaitGroup

	mu      sync.Mutex
	next    *model.Snapshot
	running bool
}

func (s *cacheSaver) save(snap *model.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = snap
	if !s.running {
		s.running = true
		s.saving.Go(s.loop)
	}
}

func (s *cacheSaver) loop() {
	for {
		s.mu.Lock()
		snap := s.next
		s.next = nil
		if snap == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := saveSnapshot(s.path, snap); err != nil {
			s.log.Warn("configuration cache not written", "file", s.path, "err", err)
		}
	}
}

func loadSnapshot(path string) (*model.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s model.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	return &s, nil
}

// saveSnapshot replaces path atomically (write, fsync, rename), so a crash
// leaves the old cache or the new one, never half of one. The file holds
// TLS keys, so only its owner may read it.
func saveSnapshot(path string, s *model.Snapshot) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".trellis-cache-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
