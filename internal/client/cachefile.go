package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"trellis.dev/trellis/internal/model"
)

// withCacheFile seeds cache from the snapshot saved at path, delivers it,
// and returns an apply that saves every later snapshot there too.
func (c *Client) withCacheFile(path string, cache *cache, apply func(*model.Snapshot)) func(*model.Snapshot) {
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
	return func(s *model.Snapshot) {
		apply(s)
		if err := saveSnapshot(path, s); err != nil {
			c.log.Warn("configuration cache not written", "file", path, "err", err)
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
