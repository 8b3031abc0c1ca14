package framing

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/manifest"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
	"trellis.dev/trellis/test/trellisbin"
)

var trellisBin string

func TestMain(m *testing.M) { trellisbin.Main(m, &trellisBin) }

// up is a `trellis up` on loopback serving one edge Gateway with an HTTP
// and an HTTPS listener, whose route sends everything to an Echo target.
type up struct {
	http, https string // listener addresses
	// tls is a client configuration that trusts the HTTPS listener's
	// certificate and speaks HTTP/1.1.
	tls *tls.Config
}

// startUp writes the configuration and runs `trellis up` until the test
// ends.
func startUp(t *testing.T) up {
	t.Helper()
	echo := httptest.NewServer(http.HandlerFunc(Echo))
	t.Cleanup(echo.Close)
	_, echoPort, _ := net.SplitHostPort(echo.Listener.Addr().String())
	ports := testsync.FreePorts(t, 2)
	httpPort, httpsPort := ports[0], ports[1]
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "shop.example.com", "127.0.0.1")
	config := fmt.Sprintf(gatewayYAML, httpPort, httpsPort, echoPort,
		base64.StdEncoding.EncodeToString(leaf.CertPEM), base64.StdEncoding.EncodeToString(leaf.KeyPEM))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, trellisBin, "up", "--config", dir, "--bind", "127.0.0.1",
		"--api-listen", "127.0.0.1:0", "--admin-listen", "", "--log-level", "warn")
	var out testsync.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("trellis up output:\n%s", out.String())
		}
	})
	u := up{
		http: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)), https: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpsPort)),
		tls: &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}},
	}
	testsync.WaitFor(t, 30*time.Second, "trellis up to serve "+u.http, func() bool { return Run(u.http, "", Table[0]) == nil })
	return u
}

// gatewayYAML is a format of the edge Gateway with an HTTP and an HTTPS
// listener, its route to the Service echo and the HTTPS listener's
// certificate; its arguments are the two listeners' ports, echo's port, and
// the certificate and its key in base64.
var gatewayYAML = manifest.Class("edge", manifest.GatewayController) + manifest.Gateway("edge", "", "edge",
	"[{name: http, protocol: HTTP, port: %d}, {name: https, protocol: HTTPS, port: %d, tls: {certificateRefs: [{name: shop}]}}]") + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
spec:
  parentRefs:
    - name: edge
  rules:
    - backendRefs:
        - name: echo
          port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  ports:
    - name: http
      port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  labels:
    kubernetes.io/service-name: echo
addressType: IPv4
ports:
  - name: http
    protocol: TCP
    port: %s
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
---
apiVersion: v1
kind: Secret
metadata:
  name: shop
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`

// TestSmuggling runs the framing table against a built `trellis up`, on
// fresh connections (the fast path, which hands what it does not take to
// net/http) and on ones handed to net/http before the row (by a chunked
// request, or by an upgrade the target declines), of its HTTP and its
// HTTPS (HTTP/1.1) listener, and prints the table.
func TestSmuggling(t *testing.T) {
	u := startUp(t)
	columns := []struct {
		name   string
		dial   func() (net.Conn, error)
		prefix string
	}{
		{"http", func() (net.Conn, error) { return net.Dial("tcp", u.http) }, ""},
		{"http handed-off", func() (net.Conn, error) { return net.Dial("tcp", u.http) }, Warmup},
		{"https", func() (net.Conn, error) { return tls.Dial("tcp", u.https, u.tls) }, ""},
		{"https handed-off", func() (net.Conn, error) { return tls.Dial("tcp", u.https, u.tls) }, Warmup},
		{"declined upgrade", func() (net.Conn, error) { return net.Dial("tcp", u.http) }, DeclinedUpgrade},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-38s %-20s", "request", "expected (RFC 9112)")
	for _, col := range columns {
		fmt.Fprintf(&b, " %-17s", col.name)
	}
	b.WriteString("\n")
	failed := 0
	for _, c := range Table {
		fmt.Fprintf(&b, "%-38s %-20s", c.Name, c.Outcome())
		for _, col := range columns {
			result := "ok"
			conn, err := col.dial()
			if err == nil {
				err = RunConn(conn, col.prefix, c)
			}
			if err != nil {
				result = "FAIL"
				failed++
				t.Errorf("%s (RFC 9112 %s) on %s: %v", c.Name, c.RFC, col.name, err)
			}
			fmt.Fprintf(&b, " %-17s", result)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%d rows on %d kinds of connection, %d failures\n", len(Table), len(columns), failed)
	fmt.Print(b.String())
}

// TestH2Spec runs h2spec (the binary TRELLIS_H2SPEC names; hack/h2spec.sh
// builds it) against the HTTPS listener of a built `trellis up`.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv("TRELLIS_H2SPEC")
	if bin == "" {
		t.Skip("TRELLIS_H2SPEC is not set (hack/h2spec.sh sets it)")
	}
	u := startUp(t)
	cases, out := H2Spec(t, bin, u.https, 5)
	var passed, failed, skipped int
	var failures []string
	for _, c := range cases {
		switch {
		case c.Skipped:
			skipped++
		case c.Failed:
			failed++
			failures = append(failures, c.ID)
			if why, known := H2SpecKnownFailures[c.ID]; known {
				t.Logf("known failure: %s (%s)", c.ID, why)
			} else {
				t.Errorf("h2spec regression: %s: expected and got:\n%s", c.ID, c.Detail)
			}
		default:
			passed++
			if _, known := H2SpecKnownFailures[c.ID]; known {
				t.Logf("listed as a known failure but passes: %s", c.ID)
			}
		}
	}
	slices.Sort(failures)
	fmt.Printf("h2spec: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	for _, f := range failures {
		fmt.Println("  failed:", f)
	}
	if passed == 0 {
		t.Fatalf("no h2spec case passed:\n%s", out)
	}
}
