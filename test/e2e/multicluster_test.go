package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"trellis.dev/trellis/test/manifest"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// The service network across three clusters, each a real kube-apiserver
// with its own trellis controller and proxy in its own network namespace,
// joined to one control plane by one-time tokens, on a LAN that carries
// only the control plane's API and the proxies' peer hop. Cluster A routes
// 90/10 between a local Service and a ServiceImport of "cart", which B and
// C export; B's and C's cart backends have the same IP address, each
// reached only through its own cluster's proxy.
func TestServiceNetworkAcrossClusters(t *testing.T) { serviceNetworkAcrossClusters(t, false) }

// The same on a highly available control plane: two servers on one etcd,
// every component given both; the server killed mid-traffic is one of
// them.
func TestServiceNetworkAcrossClustersEtcd(t *testing.T) { serviceNetworkAcrossClusters(t, true) }

func serviceNetworkAcrossClusters(t *testing.T, withEtcd bool) {
	m := startMesh(t, meshOptions{etcd: withEtcd})
	clusters, cp, srv, pxC := m.clusters, m.cp, m.server, m.clusters[2].proxy

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
	apply(t, clusters[0].kc, namespaceYAML("shop")+cartService("cart-local", "198.18.0.51")+
		manifest.ServiceNetwork("mesh", "shop", "[{name: http, protocol: HTTP, port: 8080}]")+`---
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

	// The client in A is a pod of shop running as frontend: the platform
	// gave it its address (set here as a kubelet would).
	const clientIP = "198.18.0.77"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "frontend-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "frontend", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	ctx := context.Background()
	if err := clusters[0].kc.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: clientIP, PodIPs: []corev1.PodIP{{IP: clientIP}}}
	if err := clusters[0].kc.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}

	// Every target, in A or across the hop, sees the caller as A's
	// frontend workload.
	const wantID = "Principal=spiffe://a/ns/shop/sa/frontend; Type=Workload"
	host := "storefront-shop.mesh.trellis.internal"
	aNS := clusters[0].kube.NS
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 4,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			var err error
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
			if doErr := aNS.Do(ctx, func() { conn, err = d.DialContext(ctx, network, addr) }); doErr != nil {
				return nil, doErr
			}
			return conn, err
		},
	}}
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
				if id := strings.TrimPrefix(body, strings.Fields(body)[0]+" "); id != wantID {
					out["identity "+id]++
				}
			}
		}
		return out
	}

	testsync.WaitFor(t, 60*time.Second, "A's proxy to reach both B's and C's cart", func() bool {
		got := count(40)
		return got["b"] > 0 && got["c"] > 0
	})
	testsync.WaitFor(t, 30*time.Second, "the caller's identity to reach every target", func() bool {
		got := count(20)
		for k := range got {
			if strings.HasPrefix(k, "identity ") {
				return false
			}
		}
		return true
	})
	got := count(1000)
	t.Logf("1000 requests from A: %v", got)
	if got["a-local"] < 870 || got["a-local"] > 930 || got["b"]+got["c"] < 70 || got["b"]+got["c"] > 130 || got["b"] == 0 || got["c"] == 0 || len(got) != 3 {
		t.Errorf("90/10 between A's Service and the import of B and C, every answer naming A's frontend: %v", got)
	}

	// New weights, 50/50: measured from the update to the first traffic
	// that follows them.
	var route unstructured.Unstructured
	route.SetAPIVersion("gateway.networking.k8s.io/v1")
	route.SetKind("HTTPRoute")
	if err := clusters[0].kc.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "storefront"}, &route); err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
	refs := rules[0].(map[string]any)["backendRefs"].([]any)
	refs[0].(map[string]any)["weight"], refs[1].(map[string]any)["weight"] = int64(50), int64(50)
	unstructured.SetNestedSlice(route.Object, rules, "spec", "rules")
	changed := time.Now()
	if err := clusters[0].kc.Update(ctx, &route); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the 50/50 weights to take effect", func() bool {
		got := count(20)
		return got["b"]+got["c"] >= 7
	})
	t.Logf("weights 90/10 → 50/50: traffic followed %v after the update", time.Since(changed).Round(time.Millisecond))
	got = count(400)
	if got["a-local"] < 170 || got["a-local"] > 230 {
		t.Errorf("50/50 after the change: %v", got)
	}

	// The control plane dies and comes back under steady cross-cluster
	// traffic: no request fails (every proxy serves what it has).
	got = tally(func() {
		time.Sleep(500 * time.Millisecond)
		srv.kill()
		time.Sleep(2 * time.Second)
		srv = start(t, cp, "server-again", m.serverArgs("192.0.2.1:7070")...)
		srv.waitOutput(t, 10*time.Second, "API on https://192.0.2.1:7070")
		time.Sleep(2 * time.Second)
	}, func(total map[string]int) {
		for k, v := range count(10) {
			total[k] += v
		}
	})
	t.Logf("while the control plane was killed and restarted: %v", got)
	if got["a-local"]+got["b"]+got["c"] < 200 || got["error"] > 0 || len(got) != 3 {
		t.Errorf("requests failed while the control plane restarted: %v", got)
	}

	// Cluster C is lost whole (its proxy killed, no drain): its share goes
	// to B. Measured: requests that fail after the loss, by time since.
	pxC.kill()
	lost := time.Now()
	failed := map[string]int{}
	for time.Since(lost) < 6*time.Second {
		for k, v := range count(10) {
			if k != "a-local" && k != "b" {
				failed[fmt.Sprintf("%s after %ds", k, int(time.Since(lost).Seconds()))] += v
			}
		}
	}
	t.Logf("after C's proxy was killed, failures: %v", failed)
	for k, n := range failed {
		if !strings.HasSuffix(k, "after 0s") {
			t.Errorf("%d requests failed 1 s or more after cluster C was lost (%s)", n, k)
		}
	}

	// B is removed from the control plane: though its certificates are
	// still valid, A sends it nothing more (its share now has no cluster
	// to go to) and B's proxy cannot reach A's targets.
	m.trellis(t, "cluster", "remove", "b")
	removed := time.Now()
	testsync.WaitFor(t, 5*time.Second, "A to stop sending to B", func() bool { return count(20)["b"] == 0 })
	t.Logf("B removed: A stopped sending to it after %v", time.Since(removed).Round(time.Millisecond))
	if got := count(200); got["b"] != 0 || got["a-local"] < 80 {
		t.Errorf("after B's removal: %v", got)
	}
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
	objs, err := manifest.Decode(stream)
	if err != nil {
		t.Fatalf("%v in\n%s", err, stream)
	}
	for _, obj := range objs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Create(ctx, obj)
		cancel()
		if err != nil {
			t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}
