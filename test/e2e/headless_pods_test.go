package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// A StatefulSet-like headless Service "web" runs in clusters b and c with
// the SAME pod addresses (web-0 and web-1 at 198.18.<index>.30 and .31 in
// both); a client in cluster a resolves web-0.b.web.<ns>.svc.clusterset.local
// with its own nameserver (its proxy's address) and is answered by b's
// web-0, and by c's for web-0.c (through the peer hop to each cluster's
// proxy, which delivers to its own pod). A name of no ready pod answers 503
// and is NXDOMAIN in DNS; the SRV records name the four pods.
func checkPodNamesAcrossClusters(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.svc = "web"
	addrs := []string{fmt.Sprintf("198.18.%d.30", c.index), fmt.Sprintf("198.18.%d.31", c.index)}
	for _, i := range []int{1, 2} {
		c.deployPods(t, i, addrs)
		c.export(t, i, nil, nil)
	}
	a := e.clusters[0]
	get := func(host string) (int, string, error) {
		resolved, err := a.resolve(host)
		if err != nil {
			return 0, "", err
		}
		if !slices.Equal(resolved, []string{meshProxyIP}) {
			return 0, "", fmt.Errorf("%s resolves to %v, want the proxy %s", host, resolved, meshProxyIP)
		}
		hc := a.kube.NS.HTTPClient(5 * time.Second)
		defer hc.CloseIdleConnections()
		return getBody(hc, fmt.Sprintf("http://%s:4242/", resolved[0]), host)
	}
	for _, cluster := range []string{"b", "c"} {
		for n, addr := range addrs {
			host := fmt.Sprintf("web-%d.%s.%s", n, cluster, c.fqdn())
			want := fmt.Sprintf("cluster %s pod web-%d ip %s", cluster, n, addr)
			testsync.Eventually(t, mcsWait, "a request from a for "+host, func() error {
				status, body, err := get(host)
				if err == nil && (status != http.StatusOK || body != want) {
					err = fmt.Errorf("%d %q, want %q", status, body, want)
				}
				return err
			})
			for range 10 {
				if status, body, err := get(host); err != nil || status != http.StatusOK || body != want {
					t.Errorf("%s: %d %q %v, want only %q", host, status, body, err, want)
				}
			}
		}
	}
	// No pod web-2 in b, and a exports none: no name, and a request with
	// such a Host (a stale cache) gets 503, never another pod.
	for _, host := range []string{"web-2.b." + c.fqdn(), "web-0.a." + c.fqdn()} {
		if _, err := a.resolve(host); err == nil {
			t.Errorf("%s resolves", host)
		}
		hc := a.kube.NS.HTTPClient(5 * time.Second)
		status, body, err := getBody(hc, fmt.Sprintf("http://%s:4242/", meshProxyIP), host)
		hc.CloseIdleConnections()
		if err != nil || status != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %q %v, want 503", host, status, body, err)
		}
	}
	var want []string
	for _, cluster := range []string{"b", "c"} {
		for n := range addrs {
			want = append(want, fmt.Sprintf("4242 web-%d.%s.%s", n, cluster, c.fqdn()))
		}
	}
	c.awaitSRVRecords(t, want...)
}

// deployPods creates the check's headless Service (port http 4242) in
// cluster i, with one ready endpoint per address, named web-<n> as a
// StatefulSet's pods are, each answering "cluster <name> pod web-<n> ip
// <addr>".
func (c *mcsCheck) deployPods(t *testing.T, i int, addrs []string) {
	t.Helper()
	cl := c.e.clusters[i]
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name()},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": c.name()},
			Ports: []corev1.ServicePort{{Name: "http", Port: 4242, Protocol: corev1.ProtocolTCP}}},
	}
	es := servePods(t, cl, svc, 8080, "web", addrs, func(n int, a string) string {
		return fmt.Sprintf("cluster %s pod web-%d ip %s", cl.name, n, a)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.kc.Create(ctx, svc); err != nil {
		t.Fatalf("creating Service in %s: %v", cl.name, err)
	}
	if err := cl.kc.Create(ctx, es); err != nil {
		t.Fatalf("creating EndpointSlice in %s: %v", cl.name, err)
	}
}

// The same by SNI: a headless "kafka" (port tls/9093) in b and c with the
// same pod addresses, TLS servers whose certificates name their cluster's
// pods; a TLSRoute in a over "*.kafka.<ns>.svc.clusterset.local" to the
// ServiceImport. A client in a connecting to web-0.b.kafka.… (its
// nameserver's answer, port 9093) completes its handshake with b's pod
// (verified against the name) and is echoed by it; web-0.c.… by c's; a
// pod that is not known gets no connection through.
func checkPodNamesBySNI(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.svc = "kafka"
	ca := testpki.NewCA(t)
	addr := fmt.Sprintf("198.18.%d.30", c.index)
	for _, i := range []int{1, 2} {
		cl := e.clusters[i]
		cert := ca.Issue(t, fmt.Sprintf("*.%s.%s", cl.name, c.fqdn())).TLS(t)
		ln, err := cl.kube.NS.Listen("tcp", addr+":9093")
		if err != nil {
			t.Fatal(err)
		}
		tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		testsync.ServeConns(t, tln, func(conn net.Conn) {
			buf := make([]byte, 64)
			n, _ := conn.Read(buf)
			fmt.Fprintf(conn, "cluster %s pod web-0: %s", cl.name, buf[:n])
		})
		apply(t, cl.kc, fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: %[1]s}
spec:
  clusterIP: None
  ports: [{name: tls, port: 9093, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kafka-1
  namespace: %[1]s
  labels: {kubernetes.io/service-name: kafka, endpointslice.kubernetes.io/managed-by: e2e-test}
addressType: IPv4
ports: [{name: tls, port: 9093, protocol: TCP}]
endpoints: [{addresses: ["%[2]s"], hostname: web-0, conditions: {ready: true}}]
`, c.ns, addr))
		c.export(t, i, nil, nil)
	}
	apply(t, e.clusters[0].kc, fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: kafka, namespace: %s}
spec:
  parentRefs: [{name: mcs, namespace: %s, sectionName: p9093}]
  hostnames: ["*.%s"]
  rules:
  - backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: kafka, port: 9093}]
`, c.ns, mcsGatewayNS, c.fqdn()))
	a := e.clusters[0]
	dial := func(host string) (string, error) {
		resolved, err := a.resolve(host)
		if err != nil {
			return "", err
		}
		if len(resolved) == 0 {
			return "", errors.New("no address")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		raw, err := a.kube.NS.DialContext(ctx, "tcp", resolved[0]+":9093")
		if err != nil {
			return "", err
		}
		conn := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: ca.Pool()})
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			return "", err
		}
		b, err := io.ReadAll(conn)
		if len(b) > 0 {
			err = nil
		}
		return string(b), err
	}
	for _, cluster := range []string{"b", "c"} {
		host := "web-0." + cluster + "." + c.fqdn()
		want := "cluster " + cluster + " pod web-0: ping"
		testsync.Eventually(t, mcsWait, "a TLS connection from a to "+host, func() error {
			got, err := dial(host)
			if err == nil && got != want {
				err = fmt.Errorf("%q, want %q", got, want)
			}
			return err
		})
		for range 10 {
			if got, err := dial(host); err != nil || got != want {
				t.Errorf("%s: %q %v, want only %q", host, got, err, want)
			}
		}
	}
	// web-1 of b is no pod: no name, and a connection naming it (to the
	// proxy's address) reaches no pod.
	if _, err := a.resolve("web-1.b." + c.fqdn()); err == nil {
		t.Error("web-1.b resolves")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if raw, err := a.kube.NS.DialContext(ctx, "tcp", meshProxyIP+":9093"); err == nil {
		conn := tls.Client(raw, &tls.Config{ServerName: "web-1.b." + c.fqdn(), InsecureSkipVerify: true})
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := conn.Handshake(); err == nil {
			t.Errorf("web-1.b: a handshake completed with %v", conn.ConnectionState().PeerCertificates[0].DNSNames)
		}
		conn.Close()
	}
}
