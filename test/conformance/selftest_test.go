package conformance_test

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/gateway-api/conformance"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	grpcutil "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	httputil "sigs.k8s.io/gateway-api/conformance/utils/http"
	kubeutil "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	confsuite "sigs.k8s.io/gateway-api/conformance/utils/suite"
	tcputil "sigs.k8s.io/gateway-api/conformance/utils/tcp"
	tlsutil "sigs.k8s.io/gateway-api/conformance/utils/tls"
	udputil "sigs.k8s.io/gateway-api/conformance/utils/udp"
	wsutil "sigs.k8s.io/gateway-api/conformance/utils/websocket"
	"sigs.k8s.io/gateway-api/pkg/features"

	"trellis.dev/trellis/test/kube"
)

// stubClass is the GatewayClass the self-test's stub controller accepts.
const stubClass = "conformance-harness-stub"

// TestHarnessSelfTest proves the harness without Trellis: cluster, node
// agent and every emulated backend, judged by the suite's own helpers (see
// TestBackendsInNamespace, which it runs inside the cluster's namespace).
func TestHarnessSelfTest(t *testing.T) {
	begin := time.Now()
	e := startEnv(t)
	runStub(t, e.client)
	ensureGatewayClass(t, e.client, stubClass, stubController)
	t.Logf("cluster and node agent up in %.1f s", time.Since(begin).Seconds())
	const name = "TestBackendsInNamespace"
	out := testOutput(t, os.Getenv("TRELLIS_CONFORMANCE_LOG_DIR"), name)
	if err := runInside(t, e, name, settings{GatewayClass: stubClass}, 5*time.Minute, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("self-test done in %.1f s", time.Since(begin).Seconds())
}

// TestBackendsInNamespace runs the suite's Setup against the stub class,
// adds the test-owned backends of the client-certificate and UDP tests, and
// checks each backend Pod directly at its IP with the suite's helpers.
func TestBackendsInNamespace(t *testing.T) {
	s := innerSettings(t)
	cfg := innerConfig(t, s)
	cl := innerClient(t, s)
	cs := kubernetes.NewForConfigOrDie(cfg)
	timeouts := config.DefaultTimeoutConfig()
	timeouts.NamespacesMustBeReady = 2 * time.Minute
	timeouts.GWCMustBeAccepted = 30 * time.Second

	begin := time.Now()
	cSuite, err := confsuite.NewConformanceTestSuite(confsuite.ConformanceOptions{
		ConfigurableOptions: confsuite.ConfigurableOptions{
			GatewayClassName:     s.GatewayClass,
			SupportedFeatures:    []features.FeatureName{features.SupportGateway, features.SupportHTTPRoute},
			CleanupBaseResources: true,
			TimeoutConfig:        timeouts,
		},
		Client:        cl,
		ClientOptions: client.Options{Scheme: kube.Scheme()},
		Clientset:     cs,
		RestConfig:    cfg,
		ManifestFS:    []fs.FS{&conformance.Manifests},
	})
	if err != nil {
		t.Fatalf("creating the suite: %v", err)
	}
	cSuite.Setup(t, tests.ConformanceTests)
	for _, m := range []string{"tests/gateway-tls-backend-client-certificate.yaml", "tests/udproute-weighted-routing.yaml"} {
		cSuite.Applier.MustApplyWithCleanup(t, cl, timeouts, m, true)
	}
	waitDeploymentsAvailable(t, cl, suiteNamespaces, 2*time.Minute)
	t.Logf("suite Setup and backends ready in %.1f s", time.Since(begin).Seconds())

	infra, app, web := confsuite.InfrastructureNamespace, confsuite.AppBackendNamespace, confsuite.WebBackendNamespace
	pods := func(t *testing.T, ns, app string) []corev1.Pod {
		t.Helper()
		var list corev1.PodList
		if err := cl.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == 0 {
			t.Fatalf("no pods of %s/%s", ns, app)
		}
		return list.Items
	}
	at := func(p corev1.Pod, port string) string { return net.JoinHostPort(p.Status.PodIP, port) }
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts}
	caMap := func(t *testing.T, name string) []byte {
		var cm corev1.ConfigMap
		if err := cl.Get(context.Background(), client.ObjectKey{Namespace: infra, Name: name}, &cm); err != nil {
			t.Fatal(err)
		}
		return []byte(cm.Data["ca.crt"])
	}

	t.Run("http", func(t *testing.T) {
		for _, b := range []struct{ ns, app string }{
			{infra, "infra-backend-v1"}, {infra, "infra-backend-v2"}, {infra, "infra-backend-v3"},
			{app, "app-backend-v1"}, {app, "app-backend-v2"}, {web, "web-backend"},
		} {
			for _, p := range pods(t, b.ns, b.app) {
				httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, at(p, "3000"), httputil.ExpectedResponse{
					Request: httputil.Request{Host: "selftest.example.com", Path: "/selftest?x=1", Headers: map[string]string{"X-Selftest": "yes"}},
					ExpectedRequest: &httputil.ExpectedRequest{
						Request:  httputil.Request{Host: "selftest.example.com", Path: "/selftest?x=1", Headers: map[string]string{"X-Selftest": "yes"}},
						HTTPPort: "3000",
					},
					BackendSetResponseHeaders: map[string]string{"X-Set-By-Backend": "1"},
					Response:                  httputil.Response{Headers: map[string]string{"X-Set-By-Backend": "1"}},
					Backend:                   b.app,
					Namespace:                 b.ns,
				})
			}
		}
		p := pods(t, infra, "infra-backend-v1")[0]
		httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, at(p, "3000"), httputil.ExpectedResponse{
			Request: httputil.Request{Path: "/status/503"}, Response: httputil.Response{StatusCodes: []int{503}},
		})
	})

	t.Run("h2c", func(t *testing.T) {
		for _, p := range pods(t, infra, "infra-backend-v1") {
			exp := httputil.ExpectedResponse{
				Request:   httputil.Request{Path: "/h2c", Protocol: roundtripper.H2CPriorKnowledgeProtocol},
				Response:  httputil.Response{Protocol: "HTTP/2.0"},
				Backend:   "infra-backend-v1",
				Namespace: infra,
			}
			req := httputil.MakeRequest(t, &exp, at(p, "3001"), roundtripper.H2CPriorKnowledgeProtocol, "http")
			httputil.WaitForConsistentResponse(t, rt, req, exp, timeouts.RequiredConsecutiveSuccesses, timeouts.MaxTimeToConsistency)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		p := pods(t, infra, "infra-backend-v1")[0]
		ws, err := (&wsutil.DefaultDialer{}).Dial("ws://"+at(p, "3000")+"/ws", "", "http://"+at(p, "3000"))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.Close()
		ws.Write([]byte("ping"))
		buf := make([]byte, 8)
		if n, err := ws.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Errorf("echo %q, %v", buf[:n], err)
		}
	})

	t.Run("tls", func(t *testing.T) {
		ca := caMap(t, "tls-checks-ca-certificate")
		for _, b := range []struct{ ns, app string }{{infra, "tls-backend"}, {infra, "tls-backend-2"}, {app, "tls-backend"}} {
			for _, p := range pods(t, b.ns, b.app) {
				tlsutil.MakeTLSRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, at(p, "8443"), ca, nil, nil, "abc.example.com", httputil.ExpectedResponse{
					Request:         httputil.Request{Host: "abc.example.com", Path: "/"},
					ExpectedRequest: &httputil.ExpectedRequest{Request: httputil.Request{Host: "abc.example.com", Path: "/", SNI: "abc.example.com"}},
					Backend:         b.app,
					Namespace:       b.ns,
				})
			}
		}
	})

	t.Run("tls client certificate", func(t *testing.T) {
		ca := caMap(t, "tls-checks-ca-certificate")
		cert, key, err := kubeutil.GetTLSSecret(cl, types.NamespacedName{Namespace: infra, Name: "tls-checks-client-certificate"})
		if err != nil {
			t.Fatal(err)
		}
		const app = "tls-backend-with-client-cert-validation"
		for _, p := range pods(t, infra, app) {
			tlsutil.MakeTLSRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, at(p, "8443"), ca, cert, key, "abc.example.com", httputil.ExpectedResponse{
				Request: httputil.Request{Host: "abc.example.com", Path: "/"},
				ExpectedRequest: &httputil.ExpectedRequest{Request: httputil.Request{
					Host: "abc.example.com", Path: "/", SNI: "abc.example.com", ClientCert: string(cert),
				}},
				Backend:   app,
				Namespace: infra,
			})
		}
	})

	t.Run("grpc", func(t *testing.T) {
		for _, app := range []string{"grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3"} {
			for _, p := range pods(t, infra, app) {
				for _, exp := range []grpcutil.ExpectedResponse{
					{EchoRequest: &pb.EchoRequest{}, Backend: app, Namespace: infra},
					{EchoTwoRequest: &pb.EchoRequest{}, Backend: app, Namespace: infra},
				} {
					grpcutil.MakeRequestAndExpectEventuallyConsistentResponse(t, nil, timeouts, at(p, "3000"), exp)
				}
			}
		}
	})

	t.Run("tcp", func(t *testing.T) {
		ca := caMap(t, "tls-checks-ca-certificate")
		for _, p := range pods(t, infra, "tcp-backend") {
			exp := tcputil.ExpectedResponse{Backend: "tcp-backend", Namespace: infra}
			tcputil.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts, at(p, "3000"), nil, "", false, exp)
			exp.BackendIsTLS, exp.Hostname = true, "abc.example.com"
			tcputil.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts, at(p, "8443"), ca, "abc.example.com", true, exp)
		}
	})

	t.Run("udp", func(t *testing.T) {
		for _, app := range []string{"udp-backend-v1", "udp-backend-v2", "udp-backend-v3"} {
			for _, p := range pods(t, infra, app) {
				udputil.ExpectEchoResponseFromBackend(t, timeouts.MaxTimeToConsistency, at(p, "8080"), udputil.ExpectedResponse{Service: app, Namespace: infra})
			}
		}
	})

	t.Run("dns", func(t *testing.T) {
		p := pods(t, infra, "udp")[0]
		m := new(dns.Msg)
		m.SetQuestion("foo.bar.com.", dns.TypeA)
		r, err := dns.Exchange(m, at(p, "53"))
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Extra) == 0 {
			t.Fatalf("DNS query to the coredns stand-in: %v, %v", r, err)
		}
	})

	t.Run("pod logs", func(t *testing.T) {
		path := fmt.Sprintf("/mirror-selftest-%d", time.Now().UnixNano())
		for _, p := range pods(t, infra, "infra-backend-v2") {
			httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, at(p, "3000"), httputil.ExpectedResponse{
				Request: httputil.Request{Path: path}, Backend: "infra-backend-v2", Namespace: infra,
			})
		}
		wait := httputil.ExpectMirroredRequest(t, cl, cs, []httputil.MirroredBackend{
			{BackendRef: httputil.BackendRef{Name: "infra-backend-v2", Namespace: infra}},
		}, path, timeouts)
		wait()
	})
}
