package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// templateFormat names what a template holds beyond what its key hashes;
// change it when that changes.
const templateFormat = "bootstrap+crds/1"

// templateMu serializes template builds within the test binary.
var templateMu sync.Mutex

// etcdTemplate returns an etcd data directory in which a control plane has
// already done its first start (RBAC roles, system namespaces, priority
// classes, the default namespace) and crds are established. A cluster
// started from a copy skips that work, and its CRDs are not "just
// created": for 2 s after a CRD is established the apiserver delays every
// create request for its resources by 2 s.
//
// Templates live in the user's cache directory (trellis/kube-templates),
// named by a hash of everything that shapes them: the binaries, the
// command lines and the CRDs' sources. A missing one is built here, with
// c's namespace and PKI (nothing in etcd depends on the PKI), installing
// the CRDs crds returns; built reports that. Concurrent builders race
// harmlessly: the first rename wins.
func (c *Cluster) etcdTemplate(t testing.TB, crds func() []*apiextensionsv1.CustomResourceDefinition) (dir string, built bool) {
	t.Helper()
	key, err := templateKey(c.bin)
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	root := templateRoot()
	final := filepath.Join(root, key)
	complete := func() bool {
		_, err := os.Stat(filepath.Join(final, "etcd", "member", "snap", "db"))
		return err == nil
	}
	if complete() {
		// Mark it used, so it is not pruned (see pruneTemplates).
		now := time.Now()
		os.Chtimes(final, now, now)
		return filepath.Join(final, "etcd"), false
	}
	templateMu.Lock()
	defer templateMu.Unlock()
	if complete() {
		return filepath.Join(final, "etcd"), false
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	pruneTemplates(root)
	tmp, err := os.MkdirTemp(root, "build-")
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	defer os.RemoveAll(tmp)
	c.bootstrap(t, filepath.Join(tmp, "etcd"), crds())
	if err := os.Rename(tmp, final); err != nil && !complete() {
		t.Fatalf("test/kube: storing the etcd template: %v", err)
	}
	return filepath.Join(final, "etcd"), true
}

// bootstrap runs etcd and kube-apiserver on dataDir until the apiserver is
// ready, the default namespace exists and crds are served, then stops
// them: the apiserver's state is all in etcd, and etcd stops cleanly so its
// files are whole.
func (c *Cluster) bootstrap(t testing.TB, dataDir string, crds []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	etcd := c.start(t, "etcd-template", "etcd", etcdFlags(dataDir)...)
	apiserver := c.start(t, "kube-apiserver-template", "kube-apiserver", apiserverFlags(c.dir)...)
	c.running = []*process{etcd, apiserver}
	c.waitFor(t, "kube-apiserver /readyz (building the etcd template)", time.Minute, c.running, func(ctx context.Context) error {
		return c.get(ctx, Server+"/readyz")
	})
	c.ensureNamespace(t, metav1.NamespaceDefault)
	c.applyCRDs(t, crds)
	// Not waiting past their being just created: that passes while the
	// next apiserver starts.
	c.waitCRDs(t, crds, true)
	if err := apiserver.stop(os.Kill, 10*time.Second); err != nil && apiserver.running() == nil {
		t.Fatalf("test/kube: %v", err) // still running
	}
	if err := etcd.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("test/kube: stopping etcd after building the template: %v", err)
	}
	c.running = nil
	// Connections to the stopped apiserver are dead.
	c.http.CloseIdleConnections()
	c.client = c.Client(t)
}

// templateKey hashes what shapes a template: the binaries (by size and
// time), the command lines and the CRD manifests.
func templateKey(bin string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, templateFormat, bin)
	for _, name := range []string{"etcd", "kube-apiserver"} {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, name, fi.Size(), fi.ModTime().UnixNano())
	}
	fmt.Fprintln(h, strings.Join(etcdFlags("DATA"), " "))
	fmt.Fprintln(h, strings.Join(apiserverFlags("DIR"), " "))
	ms, err := standardManifests()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		fmt.Fprintln(h, len(m.data))
		h.Write(m.data)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

func templateRoot() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "trellis", "kube-templates")
}

// pruneTemplates removes templates unused for a week (each is about 65 MB,
// and a new key leaves the old template behind) and build directories of
// test binaries that died while building (a live build takes seconds).
func pruneTemplates(root string) {
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		maxAge := 7 * 24 * time.Hour
		if strings.HasPrefix(e.Name(), "build-") {
			maxAge = time.Hour
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > maxAge {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// copyDir copies the tree src to dst, which must not exist, keeping modes.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Mkdir(target, info.Mode().Perm())
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", path)
		}
		return copyFile(path, target, info.Mode().Perm())
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
