package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/testsync"
)

// Two control-plane servers on one etcd are one control plane: a change
// applied through either reaches a proxy that follows the other, and when
// the proxy's server crashes, the proxy (given both) moves to the other and
// resumes its watch there, as do API calls.
func TestServersShareEtcd(t *testing.T) {
	e := kube.StartEtcd(t)
	ns := e.NS
	const token = "e2e-token"
	serverArgs := func(listen string) []string {
		return []string{"server", "--listen", listen, "--etcd-endpoints", e.Endpoint, "--etcd-prefix", "/e2e/",
			"--tokens", token + "=local", "--heartbeat", "500ms", "--log-level", "debug"}
	}
	a := start(t, ns, "server-a", serverArgs("127.0.0.1:7070")...)
	b := start(t, ns, "server-b", serverArgs("127.0.0.1:7071")...)
	a.waitOutput(t, 10*time.Second, "store in etcd "+e.Endpoint+" under /e2e/")
	b.waitOutput(t, 10*time.Second, "API on http://")
	for name, addr := range map[string]string{"inventory-ver1": "127.0.0.1:18083", "inventory-ver2": "127.0.0.1:18084"} {
		echo := start(t, ns, name, "echo", "--listen", addr, "--name", name)
		echo.waitOutput(t, 10*time.Second, "echo:")
	}
	const both = "http://127.0.0.1:7070,http://127.0.0.1:7071"
	px := start(t, ns, "proxy", "proxy", "--server", both, "--token", token,
		"--cluster", "local", "--cache", filepath.Join(t.TempDir(), "proxy-cache.json"))

	viaB, err := client.New("http://127.0.0.1:7071", token, client.Options{HTTPClient: ns.HTTPClient(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := viaB.Apply(ctx, inventoryObjects(50, 50)); err != nil {
		t.Fatal(err)
	}
	c := ns.HTTPClient(5 * time.Second)
	px.waitOutput(t, 10*time.Second, "listening on 127.0.0.1:8080")
	testsync.WaitFor(t, 10*time.Second, "the proxy (following A) to serve what B applied", func() bool {
		status, _, err := get(c, proxyURL, inventoryHost)
		return err == nil && status == http.StatusOK
	})
	assertShare(t, split(t, c, proxyURL, inventoryHost, 100), 100, "inventory-ver1", 50, 8)
	if strings.Contains(b.stderr.String(), "watch started") {
		t.Fatal("the proxy watched B before A failed")
	}

	// A crashes. A client given both servers applies through B; the
	// proxy moves to B and takes the change.
	a.kill()
	viaBoth, err := client.New(both, token, client.Options{HTTPClient: ns.HTTPClient(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := viaBoth.Apply(ctx, inventoryObjects(90, 10)); err != nil {
		t.Fatalf("Apply with A down and B up: %v", err)
	}
	testsync.WaitFor(t, 15*time.Second, "the proxy to pick up 90/10 from B", func() bool {
		return split(t, c, proxyURL, inventoryHost, 20)["inventory-ver1"] >= 16
	})
	assertShare(t, split(t, c, proxyURL, inventoryHost, 200), 200, "inventory-ver1", 90, 8)

	// It resumed on B, which had never seen it: no snapshot, because both
	// servers are one store.
	logs := b.stderr.String()
	i := strings.Index(logs, "watch started")
	if i < 0 {
		t.Fatalf("B logged no watch:\n%s", logs)
	}
	line, _, _ := strings.Cut(logs[i:], "\n")
	t.Logf("B: %s", line)
	if !strings.Contains(line, "snapshot=false") {
		t.Errorf("the proxy's watch on B: %q, want a resumed watch (snapshot=false)", line)
	}

	// B's readiness follows etcd, so that a load balancer in front of
	// several servers sends clients to one that can serve them.
	ready := func() int {
		resp, err := c.Get("http://127.0.0.1:7071/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("B's /readyz with etcd up: %d", code)
	}
	e.Kill(t)
	testsync.WaitFor(t, 10*time.Second, "B's /readyz to fail with etcd down", func() bool { return ready() == http.StatusServiceUnavailable })
	e.Restart(t)
	testsync.WaitFor(t, 30*time.Second, "B's /readyz to pass with etcd back", func() bool { return ready() == http.StatusOK })
}
