package kube

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// A data cache keeps the etcd data of a populated cluster between test
// runs, so that a benchmark that needs tens of thousands of objects creates
// them once (the apiserver takes minutes for 30,000) and later runs start
// from a copy. It lives beside the templates, named by the template's key
// (binaries, command lines, CRDs) and the caller's name, which must say
// everything that shapes the objects (their count and form): a cache of
// another size or form is never found by mistake. The caller checks what it
// finds (DataCached) before use and drops a cache that does not hold what
// it expects (DropDataCache).

// dataCacheName is what Options.DataCache may be: a file name.
var dataCacheName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,99}$`)

// dataCacheDir is where the cache named name lives.
func (c *Cluster) dataCacheDir(t testing.TB, name string) string {
	t.Helper()
	if !dataCacheName.MatchString(name) {
		t.Fatalf("test/kube: data cache name %q: want letters, digits, '.', '_' and '-' (at most 100)", name)
	}
	key, err := templateKey(c.bin)
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	return filepath.Join(templateRoot(), key+"-data-"+name)
}

// cachedData returns the etcd data directory of the cache named name, or ""
// when there is none.
func (c *Cluster) cachedData(t testing.TB, name string) string {
	t.Helper()
	dir := c.dataCacheDir(t, name)
	if _, err := os.Stat(filepath.Join(dir, "etcd", "member", "snap", "db")); err != nil {
		return ""
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // used: not pruned
	return filepath.Join(dir, "etcd")
}

// DataCached reports whether the cluster started from its data cache
// (Options.DataCache).
func (c *Cluster) DataCached() bool { return c.fromCache }

// SaveDataCache stores the cluster's etcd data as its data cache
// (Options.DataCache), replacing one that is there: it stops the apiserver
// and etcd (cleanly, so that etcd's files are whole), copies the data and
// starts both again on it, returning once the apiserver is ready. Clients
// reconnect on their next request.
func (c *Cluster) SaveDataCache(t testing.TB) {
	t.Helper()
	if c.opts.DataCache == "" {
		t.Fatal("test/kube: SaveDataCache without Options.DataCache")
	}
	if c.opts.ControllerManager {
		t.Fatal("test/kube: SaveDataCache with the controller manager running")
	}
	begin := time.Now()
	etcd, apiserver := c.running[0], c.running[1]
	if err := apiserver.stop(os.Kill, 10*time.Second); err != nil && apiserver.running() == nil {
		t.Fatalf("test/kube: %v", err)
	}
	if err := etcd.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("test/kube: stopping etcd to save its data: %v", err)
	}
	final := c.dataCacheDir(t, c.opts.DataCache)
	tmp, err := os.MkdirTemp(filepath.Dir(final), "build-")
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	defer os.RemoveAll(tmp)
	if err := copyDir(c.dataDir, filepath.Join(tmp, "etcd")); err != nil {
		t.Fatalf("test/kube: copying etcd's data: %v", err)
	}
	os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		t.Fatalf("test/kube: storing the data cache: %v", err)
	}
	c.startControlPlane(t, "again")
	c.http.CloseIdleConnections()
	c.client = c.Client(t)
	t.Logf("test/kube: data cache %s saved in %.1f s", final, time.Since(begin).Seconds())
}

// DropDataCache removes the cluster's data cache (Options.DataCache), for
// a caller that found it does not hold what it should.
func (c *Cluster) DropDataCache(t testing.TB) {
	t.Helper()
	dir := c.dataCacheDir(t, c.opts.DataCache)
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("test/kube: removing the data cache: %v", err)
	}
	t.Logf("test/kube: data cache %s removed", dir)
}

// startControlPlane starts etcd on c.dataDir and the apiserver, and waits
// until the apiserver is ready; how names the start in the process logs.
func (c *Cluster) startControlPlane(t testing.TB, how string) {
	t.Helper()
	suffix := ""
	if how != "" {
		suffix = "-" + how
	}
	apiFlags := apiserverFlags(c.dir)
	if c.opts.Profiling {
		// The last of a repeated flag holds.
		apiFlags = append(apiFlags, "--profiling=true")
	}
	// The apiserver retries etcd until it answers, so both start at once.
	c.running = []*process{
		c.start(t, "etcd"+suffix, "etcd", etcdFlags(c.dataDir)...),
		c.start(t, "kube-apiserver"+suffix, "kube-apiserver", apiFlags...),
	}
	c.waitFor(t, "kube-apiserver /readyz", 2*time.Minute, c.running, func(ctx context.Context) error {
		return c.get(ctx, Server+"/readyz")
	})
}
