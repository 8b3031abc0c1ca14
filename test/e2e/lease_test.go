package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// relay forwards TCP connections from listen to target inside ns until
// cut: then the listener and every connection close, as a partition would
// cut them. restore listens again.
type relay struct {
	ns             *netns.NS
	listen, target string
	mu             sync.Mutex
	ln             net.Listener
	conns          map[net.Conn]bool
}

func newRelay(t *testing.T, ns *netns.NS, listen, target string) *relay {
	r := &relay{ns: ns, listen: listen, target: target, conns: map[net.Conn]bool{}}
	r.restore(t)
	t.Cleanup(r.cut)
	return r
}

func (r *relay) restore(t *testing.T) {
	t.Helper()
	ln, err := r.ns.Listen("tcp", r.listen)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := r.ns.DialContext(context.Background(), "tcp", r.target)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns[in], r.conns[out] = true, true
			r.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
}

func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	r.conns = map[net.Conn]bool{}
}

// A cluster cut off from the control plane (its proxy still answering
// peers) lapses, and every other cluster's proxy stops sending to it
// within its lease and a second; it comes back when it can renew again.
// The control plane killed and restarted takes nobody out. `trellis get
// clusters` shows the leases and what proxies measured of the peers, and
// `trellis cluster remove` deletes the removed cluster's objects.
func TestLeaseLapseFailover(t *testing.T) {
	const lease = 2 * time.Second
	ns := netns.New(t)
	data, dir := t.TempDir(), t.TempDir()
	const admin = "admin-token"
	adminFile := filepath.Join(dir, "admins")
	if err := os.WriteFile(adminFile, []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverArgs := []string{"server", "--listen", "127.0.0.1:7070", "--data", data, "--tokens", "reader-token=local", "--admin-tokens-file", adminFile,
		"--tls-hosts", "127.0.0.1,127.0.0.3", "--lease-duration", lease.String(), "--heartbeat", "500ms"}
	srv := start(t, ns, "server", serverArgs...)
	srv.waitOutput(t, 10*time.Second, "API on https://127.0.0.1:7070")
	caFile := filepath.Join(data, "ca.crt")
	adminAPI := []string{"--server", "https://127.0.0.1:7070", "--ca-file", caFile, "--token", admin}
	// West reaches the control plane through a relay the test can cut.
	toPlane := newRelay(t, ns, "127.0.0.3:7070", "127.0.0.1:7070")

	joinFile := func(cluster string) string {
		tok := strings.TrimSpace(trellisOutput(t, ns, append([]string{"cluster", "add", cluster}, adminAPI...)...))
		f := filepath.Join(dir, cluster+"-join")
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	eastJoin, westJoin := joinFile("east"), joinFile("west")
	for _, e := range [][2]string{{"east-cart", "127.0.0.1:18091"}, {"west-cart", "127.0.0.2:18092"}} {
		p := start(t, ns, e[0], "echo", "--listen", e[1], "--name", e[0])
		p.waitOutput(t, 10*time.Second, "echo:")
	}
	eastDir, westDir := filepath.Join(dir, "east"), filepath.Join(dir, "west")
	east := start(t, ns, "east-proxy", "proxy", "--server", "https://127.0.0.1:7070", "--ca-file", caFile, "--identity-dir", eastDir,
		"--join-token-file", eastJoin, "--bind", "127.0.0.1", "--admin-listen", "127.0.0.1:9901", "--peer-listen", "127.0.0.1:9443", "--idle-timeout", "2s")
	west := start(t, ns, "west-proxy", "proxy", "--server", "https://127.0.0.3:7070", "--ca-file", caFile, "--identity-dir", westDir,
		"--join-token-file", westJoin, "--bind", "127.0.0.2", "--admin-listen", "127.0.0.2:9901", "--peer-listen", "127.0.0.2:9443", "--idle-timeout", "2s")
	east.waitOutput(t, 10*time.Second, "peer address published")
	west.waitOutput(t, 10*time.Second, "peer address published")

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA file: %v", err)
	}
	// The test writes each cluster's objects with the cluster's own
	// certificate, as its controller would.
	as := func(idDir string) *client.Client {
		b, err := os.ReadFile(filepath.Join(idDir, "identity.pem"))
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(b, b)
		if err != nil {
			t.Fatal(err)
		}
		hc := ns.HTTPClient(5 * time.Second)
		hc.Transport.(*http.Transport).TLSClientConfig = id.ClientConfig(roots)
		c, err := client.New("https://127.0.0.1:7070", "", client.Options{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	export := func(cluster, addr string, port int32) model.ServiceExport {
		return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart")}, Namespace: "shop", Service: "cart",
			Type: model.ExportClusterSetIP, ExportedAt: time.Now(),
			Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: []model.Target{{Address: addr, Port: port, Cluster: cluster, State: model.TargetActive}}}}}
	}
	ctx := context.Background()
	if _, err := as(eastDir).Txn(ctx, &api.TxnRequest{Puts: model.Objects{
		Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "edge"}, Mode: model.ModeEdge}},
		Services: []model.Service{{Meta: model.Meta{Name: "shop"}, Network: "edge", CustomDomains: []string{"shop.example"},
			Listeners: []model.Listener{{Name: "http", Port: 8080, Protocol: model.ProtocolHTTP}},
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1,
				Import: &model.ImportRef{Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}}}}}}}}},
		Exports: []model.ServiceExport{export("east", "127.0.0.1", 18091)},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := as(westDir).Txn(ctx, &api.TxnRequest{Puts: model.Objects{Exports: []model.ServiceExport{export("west", "127.0.0.2", 18092)}}}); err != nil {
		t.Fatal(err)
	}

	c := ns.HTTPClient(2 * time.Second)
	const eastURL, westURL = "http://127.0.0.1:8080/", "http://127.0.0.2:8080/"
	pick := func() string {
		status, backend, err := get(c, eastURL, "shop.example")
		switch {
		case err != nil:
			return "error"
		case status != http.StatusOK:
			return "status " + http.StatusText(status)
		}
		return backend
	}
	testsync.WaitForAnswers(t, 15*time.Second, "east's proxy to send to both clusters", 10, pick, "east-cart", "west-cart")

	// West is cut off from the control plane; its proxy still answers
	// peers. East's proxy stops sending to it once its lease lapses.
	toPlane.cut()
	cut := time.Now()
	lastWest, settled := testsync.LastSeen(t, lease+10*time.Second, "west-cart", "east-cart", pick)
	left := lastWest.Sub(cut)
	t.Logf("west left east's pick %v after it was cut off from the control plane (lease %v)", left.Round(time.Millisecond), lease)
	if !settled || left > lease+time.Second {
		t.Errorf("west left east's pick %v after it was cut off (east alone 50 times in a row: %v), want within the lease %v and a second", left, settled, lease)
	}
	if status, _, err := get(c, westURL, "shop.example"); err != nil || status != http.StatusOK {
		t.Errorf("west's own proxy, cut off from the control plane: %d, %v", status, err)
	}
	clusters := getClusters(t, ns, adminAPI)
	if w := clusters["west"]; w.Lease.Alive || clusters["east"].Lease.Holder != "proxy" || !clusters["east"].Lease.Alive {
		t.Errorf("get clusters while west is cut off: %+v", clusters)
	}

	// West reaches the control plane again: back in the pick.
	toPlane.restore(t)
	restored := time.Now()
	// Two requests: round robin gives west one of them once it is back.
	testsync.WaitForAnswers(t, 10*time.Second, "west back in east's pick", 2, pick, "west-cart")
	t.Logf("west back in east's pick %v after it could renew again", time.Since(restored).Round(time.Millisecond))

	// The control plane dies for twice the lease, then comes back: no
	// request fails and west keeps its share throughout.
	share := func(what string, d time.Duration) {
		t.Helper()
		counts := map[string]int{}
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			window := map[string]int{}
			for stop := time.Now().Add(500 * time.Millisecond); time.Now().Before(stop); time.Sleep(10 * time.Millisecond) {
				got := pick()
				window[got]++
				counts[got]++
			}
			if window["west-cart"] == 0 {
				t.Errorf("%s: half a second without a request to west: %v", what, window)
			}
		}
		if counts["east-cart"]+counts["west-cart"] != sumCounts(counts) {
			t.Errorf("%s: %v, want every request answered", what, counts)
		}
		t.Logf("%s: %v", what, counts)
	}
	srv.kill()
	share("control plane dead", 2*lease)
	srv = start(t, ns, "server-restarted", serverArgs...)
	srv.waitOutput(t, 10*time.Second, "API on https://127.0.0.1:7070")
	share("control plane restarted", lease+time.Second)

	// get clusters: both alive, west's peer reached by east's proxy.
	testsync.WaitFor(t, 20*time.Second, "east's report on west's peer", func() bool {
		w := getClusters(t, ns, adminAPI)["west"]
		return w.PeersReached == 1
	})
	clusters = getClusters(t, ns, adminAPI)
	w := clusters["west"]
	if !w.Lease.Alive || w.PeersPublished != 1 || w.RTTMicros <= 0 || w.LastSync.IsZero() || !clusters["east"].Lease.Alive {
		t.Errorf("get clusters: %+v", clusters)
	}
	t.Logf("west as get clusters shows it: lease %+v, peers %d/%d, RTT %dµs", w.Lease, w.PeersReached, w.PeersPublished, w.RTTMicros)
	table := trellisOutput(t, ns, append([]string{"get", "clusters"}, adminAPI...)...)
	t.Logf("trellis get clusters:\n%s", table)

	// Removing west deletes its peer and export; east's stay, and east
	// sends everything to its own cluster.
	out := trellisOutput(t, ns, append([]string{"cluster", "remove", "west"}, adminAPI...)...)
	if !strings.Contains(out, "2 of its objects deleted") {
		t.Errorf("cluster remove west: %s", out)
	}
	peers := trellisOutput(t, ns, "get", "peers", "--server", "https://127.0.0.1:7070", "--ca-file", caFile, "--token", "reader-token")
	if strings.Contains(peers, "west") || !strings.Contains(peers, "proxy.east") {
		t.Errorf("peers after west's removal:\n%s", peers)
	}
	testsync.WaitFor(t, 5*time.Second, "east to send only to itself", func() bool {
		for range 20 {
			if pick() != "east-cart" {
				return false
			}
		}
		return true
	})
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// getClusters runs `trellis get clusters -o json` and returns the
// clusters by name.
func getClusters(t *testing.T, ns *netns.NS, adminAPI []string) map[string]api.Cluster {
	t.Helper()
	out := trellisOutput(t, ns, append([]string{"get", "clusters", "-o", "json"}, adminAPI...)...)
	var list []api.Cluster
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("get clusters -o json: %v\n%s", err, out)
	}
	m := map[string]api.Cluster{}
	for _, c := range list {
		m[c.Name] = c
	}
	return m
}
