package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// inventoryObjects is the quick start's inventory service as model objects,
// split ver1:ver2 by the given weights.
func inventoryObjects(ver1, ver2 int32) *model.Objects {
	tg := func(name string, port int32) model.TargetGroup {
		return model.TargetGroup{
			Meta:            model.Meta{Name: name},
			Protocol:        model.ProtocolHTTP,
			ProtocolVersion: model.HTTP1,
			Targets:         []model.Target{{Address: "127.0.0.1", Port: port, Cluster: "local", State: model.TargetActive}},
		}
	}
	return &model.Objects{
		Networks: []model.ServiceNetwork{{
			Meta: model.Meta{Name: "my-hotel"}, Mode: model.ModeServiceNetwork, Domain: "my-hotel.trellis.internal",
		}},
		Services: []model.Service{{
			Meta:          model.Meta{Name: "inventory-default.my-hotel"},
			Network:       "my-hotel",
			DNSName:       "inventory-default.my-hotel.trellis.internal",
			CustomDomains: []string{inventoryHost},
			Listeners:     []model.Listener{{Name: "http", Port: 8080, Protocol: model.ProtocolHTTP}},
			Rules: []model.Rule{{
				Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/"}}},
				Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{
					{TargetGroup: "inventory-ver1", Weight: ver1},
					{TargetGroup: "inventory-ver2", Weight: ver2},
				}}},
			}},
		}},
		TargetGroups: []model.TargetGroup{tg("inventory-ver1", 18083), tg("inventory-ver2", 18084)},
	}
}

// The proxy keeps answering from its last configuration while the control
// plane is down, and picks up changes once it is back. The control plane's
// API is served over TLS, as in production: the proxy and the test trust
// its CA file.
func TestProxyServesWhileServerDown(t *testing.T) {
	ns := netns.New(t)
	data := t.TempDir()
	const token = "e2e-token"
	certs := t.TempDir()
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "127.0.0.1")
	certFile, keyFile, caFile := filepath.Join(certs, "tls.crt"), filepath.Join(certs, "tls.key"), filepath.Join(certs, "ca.crt")
	for f, b := range map[string][]byte{certFile: leaf.CertPEM, keyFile: leaf.KeyPEM, caFile: ca.CertPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	serverArgs := []string{"server", "--listen", "127.0.0.1:7070", "--data", data, "--tokens", token + "=local", "--heartbeat", "500ms",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile}
	srv := start(t, ns, "server", serverArgs...)
	srv.waitOutput(t, 10*time.Second, "API on https://")
	for name, addr := range map[string]string{"inventory-ver1": "127.0.0.1:18083", "inventory-ver2": "127.0.0.1:18084"} {
		echo := start(t, ns, name, "echo", "--listen", addr, "--name", name)
		echo.waitOutput(t, 10*time.Second, "echo:")
	}
	proxyArgs := []string{"proxy", "--server", "https://127.0.0.1:7070", "--ca-file", caFile, "--token", token,
		"--cluster", "local", "--idle-timeout", "2s", "--cache", filepath.Join(t.TempDir(), "proxy-cache.json")}
	px := start(t, ns, "proxy", proxyArgs...)

	c := ns.HTTPClient(5 * time.Second)
	apiHTTP := ns.HTTPClient(5 * time.Second)
	apiHTTP.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool()}
	cl, err := client.New("https://127.0.0.1:7070", token, client.Options{HTTPClient: apiHTTP})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.Apply(ctx, inventoryObjects(50, 50)); err != nil {
		t.Fatal(err)
	}
	px.waitOutput(t, 10*time.Second, "listening on 127.0.0.1:8080")
	testsync.WaitFor(t, 10*time.Second, "the proxy to serve inventory", func() bool {
		status, _, err := get(c, proxyURL, inventoryHost)
		return err == nil && status == http.StatusOK
	})

	// `trellis get` shows what the control plane holds, over the same TLS.
	getArgs := []string{"--server", "https://127.0.0.1:7070", "--ca-file", caFile, "--token", token}
	out := trellisOutput(t, ns, append([]string{"get", "services"}, getArgs...)...)
	for _, want := range []string{"inventory-default.my-hotel", "inventory-default.my-hotel.trellis.internal," + inventoryHost, "8080/HTTP"} {
		if !strings.Contains(out, want) {
			t.Errorf("trellis get services: no %q in\n%s", want, out)
		}
	}
	out = trellisOutput(t, ns, append([]string{"get", "targetgroup", "inventory-ver2", "-o", "yaml"}, getArgs...)...)
	if !strings.Contains(out, "name: inventory-ver2") || !strings.Contains(out, "port: 18084") {
		t.Errorf("trellis get targetgroup inventory-ver2 -o yaml:\n%s", out)
	}

	srv.kill()
	px.waitOutput(t, 10*time.Second, "configuration stream broke")
	// Keep asking for several seconds of outage, across the proxy's retries.
	total := map[string]int{}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for k, v := range split(t, c, proxyURL, inventoryHost, 10) {
			total[k] += v
		}
	}
	n := total["inventory-ver1"] + total["inventory-ver2"]
	t.Logf("while the server was down: %v", total)
	if n < 100 {
		t.Fatalf("only %d answers during the outage", n)
	}
	assertShare(t, total, n, "inventory-ver1", 50, 8)

	// The proxy itself restarts while the server is still down: it serves
	// its cached configuration.
	px.kill()
	px = start(t, ns, "proxy-restarted", proxyArgs...)
	px.waitOutput(t, 10*time.Second, "listening on 127.0.0.1:8080")
	counts := split(t, c, proxyURL, inventoryHost, 100)
	t.Logf("restarted proxy, server still down: %v", counts)
	assertShare(t, counts, 100, "inventory-ver1", 50, 8)

	// The server comes back on the same data; a change reaches the proxy.
	srv = start(t, ns, "server-again", serverArgs...)
	srv.waitOutput(t, 10*time.Second, "API on")
	if _, err := cl.Apply(ctx, inventoryObjects(90, 10)); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 15*time.Second, "the proxy to pick up 90/10 after reconnecting", func() bool {
		return split(t, c, proxyURL, inventoryHost, 20)["inventory-ver1"] >= 16
	})
	counts = split(t, c, proxyURL, inventoryHost, 200)
	assertShare(t, counts, 200, "inventory-ver1", 90, 8)
}
