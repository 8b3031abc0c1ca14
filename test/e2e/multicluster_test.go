package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/netns"
)

// The service network across three clusters, each a real kube-apiserver
// with its own trellis controller and proxy in its own network namespace,
// joined to one control plane by one-time tokens, on a LAN that carries
// only the control plane's API and the proxies' peer hop. Cluster A routes
// 90/10 between a local Service and a ServiceImport of "cart", which B and
// C export; B's and C's cart backends have the same IP address, each
// reached only through its own cluster's proxy.
func TestServiceNetworkAcrossClusters(t *testing.T) {
	lan := netns.NewLAN(t)
	cp := netns.New(t)
	lan.Attach(t, cp, "192.0.2.1")
	dir := t.TempDir()
	const admin = "admin-token"
	adminFile := filepath.Join(dir, "admins")
	if err := os.WriteFile(adminFile, []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	srv := start(t, cp, "server", "server", "--listen", "192.0.2.1:7070", "--data", data, "--tokens", "unused-token=unused",
		"--admin-tokens-file", adminFile, "--tls-hosts", "192.0.2.1", "--heartbeat", "1s")
	srv.waitOutput(t, 10*time.Second, "API on https://192.0.2.1:7070")
	caFile := filepath.Join(data, "ca.crt")
	api := []string{"--server", "https://192.0.2.1:7070", "--ca-file", caFile}

	type cluster struct {
		name string
		kube *kube.Cluster
		kc   client.Client
		lan  string
	}
	var clusters []*cluster
	for i, name := range []string{"a", "b", "c"} {
		c := &cluster{name: name, kube: kube.Start(t, kube.Options{}), lan: fmt.Sprintf("192.0.2.%d", 10+i)}
		c.kc = c.kube.Client(t)
		lan.Attach(t, c.kube.NS, c.lan)
		clusters = append(clusters, c)
	}
	joinToken := func(c *cluster, component string) string {
		tok := strings.TrimSpace(trellisOutput(t, cp, append([]string{"cluster", "add", c.name, "--token", admin}, api...)...))
		f := filepath.Join(dir, c.name+"-"+component+".token")
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, c := range clusters {
		ctl := start(t, c.kube.NS, c.name+"-controller", append([]string{"controller", "--kubeconfig", c.kube.Kubeconfig,
			"--identity-dir", filepath.Join(dir, c.name+"-controller"), "--join-token-file", joinToken(c, "controller"),
			"--metrics-address", "0", "--health-address", "0"}, api...)...)
		ctl.waitOutput(t, 30*time.Second, "joined the control plane")
		px := start(t, c.kube.NS, c.name+"-proxy", append([]string{"proxy", "--bind", "198.18.0.2", "--admin-listen", "",
			"--identity-dir", filepath.Join(dir, c.name+"-proxy"), "--join-token-file", joinToken(c, "proxy"),
			"--peer-listen", c.lan + ":15443"}, api...)...)
		px.waitOutput(t, 30*time.Second, "peer address published")
	}

	// The same address in B and C: each cluster's cart answers with its
	// own name. A has its own cart at another address.
	serve := func(ns *netns.NS, addr, name string) {
		ln, err := ns.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.Header.Get("X-Trellis-Identity"))
		})}
		go s.Serve(ln)
		t.Cleanup(func() { s.Close() })
	}
	serve(clusters[0].kube.NS, "198.18.0.51:8080", "a-local")
	serve(clusters[1].kube.NS, "198.18.0.50:8080", "b")
	serve(clusters[2].kube.NS, "198.18.0.50:8080", "c")

	for _, c := range clusters[1:] {
		apply(t, c.kc, namespaceYAML("shop")+cartService("cart", "198.18.0.50")+`---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: cart, namespace: shop}
`)
	}
	apply(t, clusters[0].kc, namespaceYAML("shop")+cartService("cart-local", "198.18.0.51")+`---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/service-network}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mesh, namespace: shop}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: storefront, namespace: shop}
spec:
  parentRefs: [{name: mesh}]
  rules:
  - backendRefs:
    - {name: cart-local, port: 80, weight: 90}
    - {group: multicluster.x-k8s.io, kind: ServiceImport, name: cart, port: 80, weight: 10}
`)

	host := "storefront-shop.mesh.trellis.internal"
	hc := clusters[0].kube.NS.HTTPClient(5 * time.Second)
	count := func(n int) map[string]int {
		out := map[string]int{}
		for range n {
			status, body, err := getBody(hc, "http://198.18.0.2:8080/", host)
			switch {
			case err != nil:
				out["error"]++
			case status != http.StatusOK:
				out[fmt.Sprint(status)]++
			default:
				out[strings.Fields(body)[0]]++
			}
		}
		return out
	}
	waitFor(t, 60*time.Second, "A's proxy to reach both B's and C's cart", func() bool {
		got := count(40)
		return got["b"] > 0 && got["c"] > 0
	})
	got := count(1000)
	t.Logf("1000 requests from A: %v", got)
	if got["a-local"] < 870 || got["a-local"] > 930 || got["b"]+got["c"] < 70 || got["b"]+got["c"] > 130 || got["b"] == 0 || got["c"] == 0 {
		t.Errorf("90/10 between A's Service and the import of B and C: %v", got)
	}
}

// getBody sends one GET with the given Host and returns the status and body.
func getBody(c *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func namespaceYAML(name string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + "}\n"
}

// cartService is a Service of port 80 in namespace shop whose one endpoint
// is addr:8080, with its EndpointSlice (no controller makes it: the test
// clusters run no kube-controller-manager).
func cartService(name, addr string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: shop
  labels: {kubernetes.io/service-name: %[1]s}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [%[2]s], conditions: {ready: true}}]
`, name, addr)
}

// apply creates every object of a YAML stream in c.
func apply(t *testing.T, c client.Client, stream string) {
	t.Helper()
	for _, doc := range strings.Split(stream, "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(strings.TrimPrefix(doc, "---\n")), &obj.Object); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Create(ctx, &obj)
		cancel()
		if err != nil {
			t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}
