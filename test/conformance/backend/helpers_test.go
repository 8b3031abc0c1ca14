package backend_test

import (
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc/codes"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	grpcutil "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	httputil "sigs.k8s.io/gateway-api/conformance/utils/http"
	"sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	tcputil "sigs.k8s.io/gateway-api/conformance/utils/tcp"
	tlsutil "sigs.k8s.io/gateway-api/conformance/utils/tls"
	udputil "sigs.k8s.io/gateway-api/conformance/utils/udp"

	"trellis.dev/trellis/test/conformance/backend"
	"trellis.dev/trellis/test/testsync"
)

// These tests check the emulated images with the conformance suite's own
// request helpers, the same code that judges a Gateway in the real run. They
// bind random 127.x.y.z addresses in the test's own network namespace, so
// the images' fixed ports cannot collide with anything else on the machine.

// loopbackIP returns a random address in 127.0.0.0/8 (never 127.0.0.x).
func loopbackIP() netip.Addr {
	b := make([]byte, 3)
	rand.Read(b)
	return netip.AddrFrom4([4]byte{127, b[0]%254 + 1, b[1], b[2]%250 + 2})
}

// run starts c on a fresh loopback address and stops it when the test ends.
func run(t *testing.T, c backend.Container) (netip.Addr, *testsync.Buffer) {
	t.Helper()
	c.IP = loopbackIP()
	logs := &testsync.Buffer{}
	c.Stdout = logs
	in, err := backend.Run(c)
	if err != nil {
		t.Fatalf("run %s: %v", c.Image, err)
	}
	t.Cleanup(in.Stop)
	return c.IP, logs
}

func podEnv(pod, ns string, extra ...string) map[string]string {
	env := map[string]string{"POD_NAME": pod, "NAMESPACE": ns}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

const echoImage = "registry.k8s.io/gateway-api/echo-basic:v1.5.1"

var timeouts = func() config.TimeoutConfig {
	tc := config.DefaultTimeoutConfig()
	tc.MaxTimeToConsistency = 10 * time.Second
	tc.RequestTimeout = 5 * time.Second
	return tc
}()

func TestHTTPEcho(t *testing.T) {
	ip, logs := run(t, backend.Container{Image: echoImage, Env: podEnv("infra-backend-v1-abc", "gateway-conformance-infra")})
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts}
	addr := net.JoinHostPort(ip.String(), "3000")

	for _, exp := range []httputil.ExpectedResponse{
		{
			Request: httputil.Request{Host: "example.com", Path: "/some/path?x=1", Headers: map[string]string{"X-Test": "a"}},
			ExpectedRequest: &httputil.ExpectedRequest{
				Request:  httputil.Request{Host: "example.com", Path: "/some/path?x=1", Headers: map[string]string{"X-Test": "a"}},
				HTTPPort: "3000",
			},
			Backend:   "infra-backend-v1",
			Namespace: "gateway-conformance-infra",
		},
		{
			Request:                   httputil.Request{Method: "POST", Path: "/"},
			BackendSetResponseHeaders: map[string]string{"X-Header-Set": "set-overwrites-values"},
			Response:                  httputil.Response{Headers: map[string]string{"X-Header-Set": "set-overwrites-values"}},
			Backend:                   "infra-backend-v1",
			Namespace:                 "gateway-conformance-infra",
		},
		{
			Request:   httputil.Request{Path: "//double//slash"},
			Backend:   "infra-backend-v1",
			Namespace: "gateway-conformance-infra",
		},
		{Request: httputil.Request{Path: "/status/503"}, Response: httputil.Response{StatusCodes: []int{503}}},
		{Request: httputil.Request{Path: "/status/503?q"}, Response: httputil.Response{StatusCodes: []int{400}}},
		{Request: httputil.Request{Path: "/?delay=10ms"}, Backend: "infra-backend-v1", Namespace: "gateway-conformance-infra"},
		{Request: httputil.Request{Path: "/?delay=nonsense"}, Response: httputil.Response{StatusCodes: []int{500}}},
	} {
		t.Run(exp.GetTestCaseName(0), func(t *testing.T) {
			httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, addr, exp)
		})
	}

	t.Run("h2c", func(t *testing.T) {
		exp := httputil.ExpectedResponse{
			Request:   httputil.Request{Path: "/h2c", Protocol: roundtripper.H2CPriorKnowledgeProtocol},
			Response:  httputil.Response{Protocol: "HTTP/2.0"},
			Backend:   "infra-backend-v1",
			Namespace: "gateway-conformance-infra",
		}
		req := httputil.MakeRequest(t, &exp, net.JoinHostPort(ip.String(), "3001"), roundtripper.H2CPriorKnowledgeProtocol, "http")
		httputil.WaitForConsistentResponse(t, rt, req, exp, 1, timeouts.MaxTimeToConsistency)
	})
	t.Run("h2c port refuses HTTP/1.1", func(t *testing.T) {
		exp := httputil.ExpectedResponse{Request: httputil.Request{Path: "/"}, Response: httputil.Response{StatusCodes: []int{400}}}
		httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, net.JoinHostPort(ip.String(), "3001"), exp)
	})

	t.Run("health", func(t *testing.T) {
		res, err := http.Get("http://" + addr + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "OK" {
			t.Errorf("/health: %d %q, want 200 OK", res.StatusCode, body)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.Close()
		if _, err := ws.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := ws.Read(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v; want hello", buf[:n], err)
		}
	})

	t.Run("mirror log", func(t *testing.T) {
		if !httputil.GetMirrorLogRegexp("/some/path?x=1").MatchString(logs.String()) {
			t.Errorf("log lacks the echo line the mirror tests grep for:\n%s", logs)
		}
	})
}

func TestHTTPRetry(t *testing.T) {
	ip, _ := run(t, backend.Container{Image: echoImage, Env: podEnv("infra-backend-v3-x", "ns")})
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts}
	addr := net.JoinHostPort(ip.String(), "3000")
	get := func(path string) (int, error) {
		exp := httputil.ExpectedResponse{Request: httputil.Request{Path: path}}
		req := httputil.MakeRequest(t, &exp, addr, "HTTP", "http")
		_, res, err := rt.CaptureRoundTrip(req)
		if err != nil {
			return 0, err
		}
		return res.StatusCode, nil
	}
	for i, want := range []int{503, 503, 200, 200} {
		if got, err := get("/retry/?uuid=a&succeedAfter=2&responseCode=503"); err != nil || got != want {
			t.Fatalf("attempt %d: status %d, %v; want %d", i, got, err, want)
		}
	}
	if _, err := get("/retry/?uuid=b&succeedAfter=1"); err == nil {
		t.Errorf("first attempt without responseCode: want a reset connection, got a response")
	}
	if got, err := get("/retry/?uuid=b&succeedAfter=1"); err != nil || got != 200 {
		t.Errorf("second attempt: status %d, %v; want 200", got, err)
	}
	if got, _ := get("/retry/?succeedAfter=1"); got != 400 {
		t.Errorf("without uuid: status %d, want 400", got)
	}
}

// certs is the suite's own certificate material, made as in its Setup.
type certs struct {
	ca                    []byte
	serverCert, serverKey []byte
	clientCert, clientKey []byte
}

func makeCerts(t *testing.T, host string) certs {
	cm, ca, caKey := kubernetes.MustCreateCACertConfigMap(t, "ns", "ca")
	server := kubernetes.MustCreateCASignedCertSecret(t, "ns", "server", []string{host}, ca, caKey)
	client := kubernetes.MustCreateCASignedClientCertSecret(t, "ns", "client", ca, caKey)
	return certs{
		ca:         []byte(cm.Data["ca.crt"]),
		serverCert: server.Data["tls.crt"], serverKey: server.Data["tls.key"],
		clientCert: client.Data["tls.crt"], clientKey: client.Data["tls.key"],
	}
}

func TestHTTPSWithClientCertificates(t *testing.T) {
	cs := makeCerts(t, "abc.example.com")
	ip, _ := run(t, backend.Container{
		Image: echoImage,
		Env: podEnv("tls-backend-1", "infra",
			"TLS_SERVER_CERT", "/etc/secret-volume/crt",
			"TLS_SERVER_PRIVKEY", "/etc/secret-volume/key",
			"TLS_CLIENT_CACERTS", "/etc/configmap-volume/ca"),
		Files: map[string][]byte{
			"/etc/secret-volume/crt":   cs.serverCert,
			"/etc/secret-volume/key":   cs.serverKey,
			"/etc/configmap-volume/ca": cs.ca,
		},
	})
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts}
	addr := net.JoinHostPort(ip.String(), "8443")

	t.Run("client certificate", func(t *testing.T) {
		exp := httputil.ExpectedResponse{
			Request: httputil.Request{Host: "abc.example.com", Path: "/"},
			ExpectedRequest: &httputil.ExpectedRequest{Request: httputil.Request{
				Host: "abc.example.com", Path: "/", SNI: "abc.example.com", ClientCert: string(cs.clientCert),
			}},
			Backend: "tls-backend", Namespace: "infra",
		}
		tlsutil.MakeTLSRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, addr, cs.ca, cs.clientCert, cs.clientKey, "abc.example.com", exp)
	})
	t.Run("no client certificate", func(t *testing.T) {
		exp := httputil.ExpectedResponse{
			Request:         httputil.Request{Host: "abc.example.com", Path: "/"},
			ExpectedRequest: &httputil.ExpectedRequest{Request: httputil.Request{Host: "abc.example.com", Path: "/", SNI: "abc.example.com"}},
			Backend:         "tls-backend", Namespace: "infra",
		}
		tlsutil.MakeTLSRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, addr, cs.ca, nil, nil, "abc.example.com", exp)
	})
	t.Run("untrusted client certificate", func(t *testing.T) {
		other := makeCerts(t, "abc.example.com")
		exp := httputil.ExpectedResponse{Request: httputil.Request{Host: "abc.example.com", Path: "/"}}
		tlsutil.MakeTLSRequestAndExpectFailureResponse(t, rt, addr, cs.ca, other.clientCert, other.clientKey, "abc.example.com", exp)
	})
}

// runWithServerCert runs the echo image as pod of
// gateway-conformance-infra with server (GRPC_ECHO_SERVER...) on and a
// server certificate for abc.example.com, returning its address and the
// certificates.
func runWithServerCert(t *testing.T, pod, server string) (netip.Addr, certs) {
	t.Helper()
	cs := makeCerts(t, "abc.example.com")
	ip, _ := run(t, backend.Container{
		Image: echoImage,
		Env: podEnv(pod, "gateway-conformance-infra", server, "1",
			"TLS_SERVER_CERT", "/c", "TLS_SERVER_PRIV_KEY", "/k"),
		Files: map[string][]byte{"/c": cs.serverCert, "/k": cs.serverKey},
	})
	return ip, cs
}

func TestGRPCEcho(t *testing.T) {
	ip, _ := runWithServerCert(t, "grpc-infra-backend-v1-x", "GRPC_ECHO_SERVER")
	addr := net.JoinHostPort(ip.String(), "3000")
	for _, exp := range []grpcutil.ExpectedResponse{
		{EchoRequest: &pb.EchoRequest{}, Backend: "grpc-infra-backend-v1", Namespace: "gateway-conformance-infra"},
		{EchoTwoRequest: &pb.EchoRequest{}, Backend: "grpc-infra-backend-v1", Namespace: "gateway-conformance-infra",
			RequestMetadata: &grpcutil.RequestMetadata{Authority: "grpc.example.com", Metadata: map[string]string{"x-test": "v"}}},
		{EchoThreeRequest: &pb.EchoRequest{}, Response: grpcutil.Response{Code: codes.Unimplemented}},
	} {
		t.Run(exp.GetTestCaseName(0), func(t *testing.T) {
			grpcutil.MakeRequestAndExpectEventuallyConsistentResponse(t, nil, timeouts, addr, exp)
		})
	}

	t.Run("metadata and authority", func(t *testing.T) {
		c := &grpcutil.DefaultClient{}
		defer c.Close()
		res, err := c.SendRPC(t, addr, grpcutil.ExpectedResponse{
			EchoRequest:     &pb.EchoRequest{},
			RequestMetadata: &grpcutil.RequestMetadata{Authority: "grpc.example.com", Metadata: map[string]string{"x-test": "v"}},
		}, 5*time.Second)
		if err != nil || res.Code != codes.OK {
			t.Fatalf("rpc: %v, %v", res.Code, err)
		}
		a := res.Response.GetAssertions()
		if a.GetAuthority() != "grpc.example.com" {
			t.Errorf("authority %q, want grpc.example.com", a.GetAuthority())
		}
		found := false
		for _, h := range a.GetHeaders() {
			found = found || (h.GetKey() == "x-test" && h.GetValue() == "v")
		}
		if !found {
			t.Errorf("headers %v lack x-test: v", a.GetHeaders())
		}
		if a.GetTlsAssertions() != nil {
			t.Errorf("plain-text RPC reports TLS %v", a.GetTlsAssertions())
		}
	})
}

func TestTCPEcho(t *testing.T) {
	ip, cs := runWithServerCert(t, "tcp-backend-x", "TCP_ECHO_SERVER")
	exp := tcputil.ExpectedResponse{Backend: "tcp-backend", Namespace: "gateway-conformance-infra"}
	tcputil.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts, net.JoinHostPort(ip.String(), "3000"), nil, "", false, exp)

	exp.BackendIsTLS = true
	exp.Hostname = "abc.example.com"
	tcputil.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts, net.JoinHostPort(ip.String(), "8443"), cs.ca, "abc.example.com", true, exp)
}

func TestUDPEcho(t *testing.T) {
	ip, logs := run(t, backend.Container{
		Image: "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
		Env:   podEnv("udp-backend-v1-x", "gateway-conformance-infra", "UDP_ECHO_SERVER", "1", "SERVICE_NAME", "udp-backend-v1"),
	})
	udputil.ExpectEchoResponseFromBackend(t, timeouts.MaxTimeToConsistency, net.JoinHostPort(ip.String(), "8080"),
		udputil.ExpectedResponse{Service: "udp-backend-v1", Namespace: "gateway-conformance-infra"})
	if !strings.Contains(logs.String(), "Received UDP gateway-api-conformance-udp-echo") {
		t.Errorf("log lacks the datagram:\n%s", logs)
	}
}

func TestDNSStandIn(t *testing.T) {
	corefile := ".:53 {\n    forward . 8.8.8.8 9.9.9.9\n}\nfoo.bar.com:53 {\n  whoami\n}\n"
	ip, _ := run(t, backend.Container{
		Image: "registry.k8s.io/coredns/coredns:v1.12.2",
		Args:  []string{"-conf", "/root/Corefile"},
		Files: map[string][]byte{"/root/Corefile": []byte(corefile)},
	})
	addr := net.JoinHostPort(ip.String(), "53")
	query := func(name string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, err := dns.Exchange(m, addr)
		if err != nil {
			t.Fatalf("query %s: %v", name, err)
		}
		return r
	}
	r := query("foo.bar.com.")
	if r.Rcode != dns.RcodeSuccess || len(r.Extra) != 2 {
		t.Fatalf("foo.bar.com: %v", r)
	}
	if a, ok := r.Extra[0].(*dns.A); !ok || !a.A.IsLoopback() {
		t.Errorf("whoami address %v, want the client's loopback address", r.Extra[0])
	}
	if r := query("example.org."); r.Rcode != dns.RcodeRefused {
		t.Errorf("example.org: rcode %s, want REFUSED (the stand-in never forwards)", dns.RcodeToString[r.Rcode])
	}
}

func TestGenericImage(t *testing.T) {
	ip, _ := run(t, backend.Container{
		Image: "example.com/some/app:v1",
		Env:   podEnv("app-1", "ns"),
		Ports: []backend.Port{{Port: 9090}, {Port: 9091, Protocol: "UDP"}},
	})
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts}
	exp := httputil.ExpectedResponse{
		Request:         httputil.Request{Path: "/"},
		ExpectedRequest: &httputil.ExpectedRequest{Request: httputil.Request{Path: "/"}, HTTPPort: "9090"},
		Backend:         "app", Namespace: "ns",
	}
	httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, net.JoinHostPort(ip.String(), "9090"), exp)
	udputil.ExpectEchoResponseFromBackend(t, timeouts.MaxTimeToConsistency, net.JoinHostPort(ip.String(), "9091"), udputil.ExpectedResponse{Namespace: "ns"})
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    backend.Container
		want string
	}{
		{"missing secret file", backend.Container{Image: echoImage, Env: map[string]string{"TLS_SERVER_CERT": "/a", "TLS_SERVER_PRIVKEY": "/b"}}, "https: open /a"},
		{"bad port", backend.Container{Image: echoImage, Env: map[string]string{"HTTP_PORT": "http"}}, `HTTP_PORT="http"`},
		{"bad CA", backend.Container{Image: echoImage, Env: map[string]string{"TLS_SERVER_CERT": "/a", "TLS_SERVER_PRIVKEY": "/a", "TLS_CLIENT_CACERTS": "/a"}, Files: map[string][]byte{"/a": []byte("x")}}, "https: key pair"},
		{"sctp", backend.Container{Image: "x", Ports: []backend.Port{{Port: 1, Protocol: "SCTP"}}}, "SCTP is not emulated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.IP = loopbackIP()
			in, err := backend.Run(tc.c)
			if err == nil {
				in.Stop()
				t.Fatalf("started; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestStopFreesPorts(t *testing.T) {
	ip := loopbackIP()
	for i := range 2 {
		in, err := backend.Run(backend.Container{Image: echoImage, IP: ip})
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		in.Stop()
	}
	if _, err := backend.Run(backend.Container{Image: echoImage}); err == nil || !strings.Contains(err.Error(), "no IP") {
		t.Errorf("without IP: err %v", err)
	}
}
