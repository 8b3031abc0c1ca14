package kube

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"trellis.dev/trellis/test/netns"
)

// Etcd is a one-member etcd cluster of its own, for tests of the etcd
// store: the binary hack/build-kube.sh builds, in a network namespace of
// the test's own, serving clients on 127.0.0.1:2379 there.
type Etcd struct {
	// NS is the namespace etcd runs in; dial it with NS.DialContext, and
	// run processes that use etcd inside it (NS.Command).
	NS *netns.NS
	// Endpoint is etcd's client URL inside NS.
	Endpoint string
	c        *Cluster
	p        *process
	args     []string
}

// StartEtcd starts etcd and returns once it answers. It is killed, and its
// data removed, when the test ends; a failed test's log shows the end of
// etcd's.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	c := &Cluster{bin: binDir(t), dir: t.TempDir()}
	c.NS = netns.New(t)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
		}
	})
	e := &Etcd{NS: c.NS, Endpoint: etcdClientURL, c: c, args: etcdFlags(filepath.Join(c.dir, "etcd"))}
	e.start(t)
	return e
}

func (e *Etcd) start(t testing.TB) {
	t.Helper()
	e.p = e.c.start(t, "etcd", "etcd", e.args...)
	hc := e.c.NS.HTTPClient(2 * time.Second)
	e.c.waitFor(t, "etcd /health", 30*time.Second, []*process{e.p}, func(ctx context.Context) error {
		return getOK(ctx, hc, etcdClientURL+"/health")
	})
}

// Restart starts etcd again on the data it had, after Kill.
func (e *Etcd) Restart(t testing.TB) {
	t.Helper()
	e.start(t)
}

// Dial connects to addr from inside the namespace, with the signature of
// grpc.WithContextDialer.
func (e *Etcd) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return e.NS.DialContext(ctx, "tcp", addr)
}

// Kill stops etcd at once, as a crash would; its data stays.
func (e *Etcd) Kill(t testing.TB) {
	t.Helper()
	if err := e.p.stop(os.Kill, 10*time.Second); err != nil && e.p.running() == nil {
		t.Fatalf("test/kube: %v", err)
	}
}
