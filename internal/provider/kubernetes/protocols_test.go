package kubernetes_test

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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/grpchealth"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// tlsSecret creates a kubernetes.io/tls Secret holding a leaf of ca for names.
func (e *env) tlsSecret(t testing.TB, ca *pki.CA, ns, name string, names ...string) {
	t.Helper()
	l := ca.Issue(t, names...)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: l.CertPEM, corev1.TLSPrivateKeyKey: l.KeyPEM},
	}
	if err := e.kc.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// listenerConditions checks the conditions of one listener of a Gateway.
func (e *env) listenerCondition(ns, gw, listener, typ string, status metav1.ConditionStatus, reason string) error {
	g := &gatewayv1.Gateway{}
	if err := e.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: gw}, g); err != nil {
		return err
	}
	i := slices.IndexFunc(g.Status.Listeners, func(l gatewayv1.ListenerStatus) bool { return string(l.Name) == listener })
	if i < 0 {
		return fmt.Errorf("no status for listener %s", listener)
	}
	return hasCondition(g.Status.Listeners[i].Conditions, typ, status, reason, g.Generation)
}

// TestCertificateRefs checks the listener conditions of HTTPS listeners'
// certificate references, and that the certificates reach the control
// plane: a Secret in another namespace needs a ReferenceGrant, a missing
// or malformed one leaves the listener unserved, and a fixed one serves.
func TestCertificateRefs(t *testing.T) {
	e := newEnv(t)
	ca := pki.NewCA(t)
	e.create(t, classes+namespace("tlsgw", "")+namespace("certs", "")+gatewayYAML("tlsgw", "web", "trellis-edge", `[
  {name: local, protocol: HTTPS, port: 443, hostname: shop.example.com, tls: {certificateRefs: [{name: shop}]}},
  {name: remote, protocol: HTTPS, port: 443, hostname: api.example.com, tls: {certificateRefs: [{name: api, namespace: certs}]}},
  {name: broken, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: broken}]}},
  {name: passthrough, protocol: TLS, port: 9443, tls: {mode: Passthrough}}]`))
	e.tlsSecret(t, ca, "tlsgw", "shop", "shop.example.com")
	e.tlsSecret(t, ca, "certs", "api", "api.example.com")
	if err := e.kc.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tlsgw", Name: "broken"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("not PEM"), corev1.TLSPrivateKeyKey: []byte("not PEM")},
	}); err != nil {
		t.Fatal(err)
	}
	check := func(listener, typ string, status metav1.ConditionStatus, reason string) {
		t.Helper()
		testsync.Eventually(t, 20*time.Second, listener+" "+typ, func() error {
			return e.listenerCondition("tlsgw", "web", listener, typ, status, reason)
		})
	}
	check("local", "ResolvedRefs", True, "ResolvedRefs")
	check("local", "Programmed", True, "Programmed")
	check("remote", "ResolvedRefs", False, "RefNotPermitted")
	check("remote", "Programmed", False, "Invalid")
	check("broken", "Accepted", True, "Accepted")
	check("broken", "ResolvedRefs", False, "InvalidCertificateRef")
	check("broken", "Programmed", False, "Invalid")
	check("passthrough", "Programmed", True, "Programmed")

	// A grant resolves the remote reference, and fixing the Secret the
	// broken one.
	e.create(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: tlsgw}]
  to: [{group: "", kind: Secret}]
`)
	check("remote", "ResolvedRefs", True, "ResolvedRefs")
	l := ca.Issue(t, "broken.example.com")
	update(t, e.kc, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tlsgw", Name: "broken"}}, func(s *corev1.Secret) {
		s.Data = map[string][]byte{corev1.TLSCertKey: l.CertPEM, corev1.TLSPrivateKeyKey: l.KeyPEM}
	})
	check("broken", "ResolvedRefs", True, "ResolvedRefs")
	check("broken", "Programmed", True, "Programmed")

	// Certificates are sent once a route serves them.
	e.create(t, backend("tlsgw", "shop", "198.18.66.1")+
		routeYAML("HTTPRoute", "tlsgw", "shop", `{parentRefs: [{name: web}], rules: [{backendRefs: [{name: shop, port: 80}]}]}`))
	testsync.Eventually(t, 20*time.Second, "the certificates in the control plane", func() error {
		var names []string
		for _, c := range e.controlPlane(t).Certificates {
			names = append(names, c.Name)
		}
		if want := []string{"api-certs", "broken-tlsgw", "shop-tlsgw"}; !slices.Equal(names, want) {
			return fmt.Errorf("certificates %v, want %v", names, want)
		}
		return nil
	})
	// Deleting a Secret unresolves its listener and takes its certificate
	// out of the control plane.
	if err := e.kc.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "api"}}); err != nil {
		t.Fatal(err)
	}
	check("remote", "ResolvedRefs", False, "InvalidCertificateRef")
	testsync.Eventually(t, 20*time.Second, "the certificate deleted", func() error {
		for _, c := range e.controlPlane(t).Certificates {
			if c.Name == "api-certs" {
				return errors.New("api-certs is still there")
			}
		}
		return nil
	})
}

// TestHTTPSThroughProxy serves an HTTPRoute on an HTTPS listener whose
// certificate is a Secret, and requests it over TLS through a proxy.
func TestHTTPSThroughProxy(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, proxyBind)
	ca := pki.NewCA(t)
	serveName(t, e, "198.18.67.1:8080", "secure")
	e.create(t, classes+namespace("https", "")+backend("https", "web", "198.18.67.1")+
		gatewayYAML("https", "web", "trellis-edge", `[{name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: shop}]}}]`)+
		routeYAML("HTTPRoute", "https", "shop", `{parentRefs: [{name: web}], hostnames: [shop.example.com], rules: [{backendRefs: [{name: web, port: 80}]}]}`))
	e.tlsSecret(t, ca, "https", "shop", "shop.example.com")
	addr := net.JoinHostPort(e.gatewayAddress(t, "https", "web"), "8443")
	hc := e.NS.HTTPClient(5 * time.Second)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool(), ServerName: "shop.example.com"}
	testsync.Eventually(t, 20*time.Second, "the route served over TLS", func() error {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
		req.Host = "shop.example.com"
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != "secure" {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		if got := resp.TLS.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{"shop.example.com"}) {
			return fmt.Errorf("served a certificate for %v", got)
		}
		return nil
	})
}

// waitRouteAccepted waits until route, read anew into itself, has one
// parent status and it is Accepted; status points into route.
func (e *env) waitRouteAccepted(t testing.TB, route client.Object, status *gatewayv1.RouteStatus) {
	t.Helper()
	testsync.Eventually(t, 20*time.Second, "route "+route.GetName()+" accepted", func() error {
		if err := e.kc.Get(context.Background(), client.ObjectKeyFromObject(route), route); err != nil {
			return err
		}
		if len(status.Parents) != 1 {
			return fmt.Errorf("%d parent statuses", len(status.Parents))
		}
		return hasCondition(status.Parents[0].Conditions, "Accepted", True, "Accepted", route.GetGeneration())
	})
}

// gatewayAddress waits for the Gateway's published address.
func (e *env) gatewayAddress(t testing.TB, ns, name string) string {
	t.Helper()
	var addr string
	testsync.Eventually(t, 20*time.Second, "the Gateway's address", func() error {
		gw := &gatewayv1.Gateway{}
		if err := e.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, gw); err != nil {
			return err
		}
		if len(gw.Status.Addresses) == 0 {
			return errors.New("no address yet")
		}
		addr = gw.Status.Addresses[0].Value
		return nil
	})
	return addr
}

// TestGRPCRouteThroughProxy serves a real gRPC health server through a
// GRPCRoute and calls it with a real gRPC client through a proxy: a call
// the route matches reaches the server, one it does not is answered by the
// proxy.
func TestGRPCRouteThroughProxy(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, proxyBind)
	ln, err := e.NS.Listen("tcp", "198.18.68.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	grpchealth.Serve(t, ln)
	e.create(t, classes+edgeGateway("grpc")+
		serviceYAML("grpc", "health", "{port: 9000, appProtocol: grpc}", 9000, "198.18.68.1")+`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: grpc}
spec:
  parentRefs: [{name: web}]
  hostnames: [grpc.example.com]
  rules:
    - matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
      backendRefs: [{name: health, port: 9000}]
`)
	grpcRoute := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "grpc", Name: "health"}}
	e.waitRouteAccepted(t, grpcRoute, &grpcRoute.Status.RouteStatus)
	tgs := e.controlPlane(t).TargetGroups
	if i := slices.IndexFunc(tgs, func(tg model.TargetGroup) bool { return tg.Name == "health-grpc-9000-grpc" }); i < 0 || tgs[i].ProtocolVersion != model.GRPC {
		t.Fatalf("no GRPC target group health-grpc-9000-grpc in %v", tgs)
	}
	addr := net.JoinHostPort(e.gatewayAddress(t, "grpc", "web"), "8080")
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return e.NS.DialContext(ctx, "tcp", a) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	testsync.Eventually(t, 20*time.Second, "Check through the proxy", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "inventory"})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.Status)
		}
		return nil
	})
	// Watch is not matched by the route: the proxy answers it, not the server.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "inventory"})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil {
		t.Error("Watch, which the route does not match, reached the server")
	}
}

// TestTLSRouteThroughProxy routes a TLS connection by its SNI through a
// Passthrough listener to a target that terminates TLS itself: the client
// sees the target's own certificate.
func TestTLSRouteThroughProxy(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, proxyBind)
	ca := pki.NewCA(t)
	ln, err := e.NS.Listen("tcp", "198.18.69.1:8443")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "db") }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "db.example.com").TLS(t)}},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	e.create(t, classes+namespace("passthrough", "")+
		gatewayYAML("passthrough", "web", "trellis-edge", `[{name: tls, protocol: TLS, port: 9443, tls: {mode: Passthrough}}]`)+
		serviceYAML("passthrough", "db", "{port: 443, targetPort: 8443}", 8443, "198.18.69.1")+
		routeYAML("TLSRoute", "passthrough", "db", `{parentRefs: [{name: web}], hostnames: [db.example.com], rules: [{backendRefs: [{name: db, port: 443}]}]}`))
	addr := net.JoinHostPort(e.gatewayAddress(t, "passthrough", "web"), "9443")
	hc := e.NS.HTTPClient(5 * time.Second)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool(), ServerName: "db.example.com"}
	testsync.Eventually(t, 20*time.Second, "the TLSRoute served", func() error {
		resp, err := hc.Get("https://" + addr + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "db" {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	})
	tlsRoute := &gatewayv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "passthrough", Name: "db"}}
	e.waitRouteAccepted(t, tlsRoute, &tlsRoute.Status.RouteStatus)
}
