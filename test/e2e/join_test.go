package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// A proxy joins the control plane with a one-time token from `trellis
// cluster add`, keeps its certificate across a restart, renews it before it
// expires, and is cut off by `trellis cluster remove`; the token works
// once. The API is served over TLS with a certificate from the control
// plane's own CA.
func TestClusterJoinRenewRemove(t *testing.T) {
	ns := netns.New(t)
	data, dir := t.TempDir(), t.TempDir()
	const writer, admin = "writer-token", "admin-token"
	adminFile := filepath.Join(dir, "admins")
	if err := os.WriteFile(adminFile, []byte("# administrators\n"+admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, ns, "server", "server", "--listen", "127.0.0.1:7070", "--data", data, "--tokens", writer+"=local",
		"--admin-tokens-file", adminFile, "--tls-hosts", "127.0.0.1", "--cert-ttl", "8s", "--heartbeat", "500ms")
	srv.waitOutput(t, 10*time.Second, "API on https://127.0.0.1:7070")
	caFile := filepath.Join(data, "ca.crt")
	api := []string{"--server", "https://127.0.0.1:7070", "--ca-file", caFile}

	// Only an administrator admits clusters.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refused := ns.Command(ctx, trellisBin, append([]string{"cluster", "add", "local", "--token", writer}, api...)...)
	if out, err := refused.CombinedOutput(); err == nil || !strings.Contains(string(out), "administrator token") {
		t.Errorf("cluster add with a cluster's token: %v\n%s", err, out)
	}
	token := strings.TrimSpace(trellisOutput(t, ns, append([]string{"cluster", "add", "local", "--token", admin}, api...)...))
	if !strings.HasPrefix(token, "trellis-join.") {
		t.Fatalf("cluster add printed %q", token)
	}
	tokenFile := filepath.Join(dir, "join-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	echo := start(t, ns, "inventory-ver1", "echo", "--listen", "127.0.0.1:18083", "--name", "inventory-ver1")
	echo.waitOutput(t, 10*time.Second, "echo:")
	echo2 := start(t, ns, "inventory-ver2", "echo", "--listen", "127.0.0.1:18084", "--name", "inventory-ver2")
	echo2.waitOutput(t, 10*time.Second, "echo:")
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA file: %v", err)
	}
	apiHTTP := ns.HTTPClient(5 * time.Second)
	apiHTTP.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
	cl, err := client.New("https://127.0.0.1:7070", writer, client.Options{HTTPClient: apiHTTP})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Apply(context.Background(), inventoryObjects(50, 50)); err != nil {
		t.Fatal(err)
	}

	idDir := filepath.Join(dir, "identity")
	proxyArgs := append([]string{"proxy", "--identity-dir", idDir, "--idle-timeout", "2s"}, api...)
	px := start(t, ns, "proxy", append(proxyArgs, "--join-token-file", tokenFile)...)
	px.waitOutput(t, 10*time.Second, "joined the control plane")
	px.waitOutput(t, 10*time.Second, "listening on 127.0.0.1:8080")
	c := ns.HTTPClient(5 * time.Second)
	testsync.WaitFor(t, 10*time.Second, "the joined proxy to serve", func() bool {
		status, _, err := get(c, proxyURL, inventoryHost)
		return err == nil && status == http.StatusOK
	})
	if fi, err := os.Stat(filepath.Join(idDir, "identity.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file: %v, %v", fi, err)
	}
	// The certificate lives 8 s: the proxy renews it on its own, two thirds
	// of the way, leaving the last third (2.7 s) for the renewal, which a
	// loaded CI machine needs.
	px.waitOutput(t, 20*time.Second, "cluster certificate renewed")

	// The token is spent: a second component cannot use it.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	again := ns.Command(ctx2, trellisBin, append([]string{"proxy", "--identity-dir", filepath.Join(dir, "other"), "--join-token-file", tokenFile,
		"--admin-listen", "", "--bind", "127.0.0.2"}, api...)...)
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "already used") || !strings.Contains(string(out), "trellis cluster add") {
		t.Errorf("a second join with the token: %v\n%s", err, out)
	}

	// Restarted without the token, the proxy uses the certificate it kept.
	px.stop()
	px = start(t, ns, "proxy-restarted", proxyArgs...)
	px.waitOutput(t, 10*time.Second, "cluster certificate loaded")
	px.waitOutput(t, 10*time.Second, "listening on 127.0.0.1:8080")
	// Wait for its renewal, so that the proxy below takes up a certificate
	// with its whole life ahead: one taken up with a second left would
	// leave its own renewal a third of that second.
	px.waitOutput(t, 20*time.Second, "cluster certificate renewed")

	// A proxy that may only read the directory (as a proxy mounting the
	// controller's Secret) starts from it and renews in memory.
	ro := start(t, ns, "proxy-read-only", append([]string{"proxy", "--identity-dir", idDir, "--identity-read-only", "--idle-timeout", "2s",
		"--admin-listen", "", "--bind", "127.0.0.2"}, api...)...)
	ro.waitOutput(t, 10*time.Second, "cluster certificate loaded")
	ro.waitOutput(t, 10*time.Second, "listening on 127.0.0.2:8080")
	ro.waitOutput(t, 20*time.Second, "cluster certificate renewed")
	ro.stop()
	if out := ro.stderr.String(); strings.Contains(out, "not renewed") || strings.Contains(out, "keeping the certificate failed") {
		t.Errorf("the read-only proxy's renewal failed:\n%s", out)
	}

	// Removal cuts the proxy off the control plane: its stream ends and it
	// cannot reconnect, while it keeps serving what it last had.
	out := trellisOutput(t, ns, append([]string{"cluster", "list", "--token", admin}, api...)...)
	if !strings.Contains(out, "local") {
		t.Errorf("cluster list:\n%s", out)
	}
	trellisOutput(t, ns, append([]string{"cluster", "remove", "local", "--token", admin}, api...)...)
	px.waitOutput(t, 10*time.Second, "was removed from the control plane")
	if status, _, err := get(c, proxyURL, inventoryHost); err != nil || status != http.StatusOK {
		t.Errorf("after removal the proxy stopped serving its last configuration: %d, %v", status, err)
	}
}
