package translate_test

import (
	"reflect"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
)

// policyWorld is a network with a route to Service web (one endpoint).
const policyWorld = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/service-network}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mesh}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: mesh}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: ["10.0.0.1"]}]
`

// FuzzTargetGroupPolicy sets a TargetGroupPolicy's health-check fields to
// arbitrary values: a policy the translator takes (no Problem) gives the
// target group exactly its fields, which the model accepts; one it refuses
// (a Problem naming a spec.healthCheck field) leaves the target group's
// check at the defaults. Nothing panics, and every output is valid.
func FuzzTargetGroupPolicy(f *testing.F) {
	f.Add(int32(10), int32(2), int32(3), int32(4), int32(8081), "200-299,304", "/healthz", "HTTP", "HTTP1", true)
	f.Add(int32(3), int32(0), int32(11), int32(1), int32(70000), "299-200", "/a b", "TCP", "GRPC", false)
	f.Add(int32(300), int32(120), int32(10), int32(2), int32(1), "200", "/", "HTTPS", "HTTP2", false)
	f.Add(int32(-1), int32(1<<30), int32(0), int32(0), int32(0), "", "", "", "", true)
	f.Add(int32(5), int32(1), int32(2), int32(2), int32(65535), "200,", "/h HTTP/1.1\r\nX: 1", "http", "HTTP1 ", true)
	f.Fuzz(func(t *testing.T, interval, timeout, healthy, unhealthy, port int32, match, path, protocol, version string, enabled bool) {
		in, err := file.Parse("world.yaml", []byte(policyWorld))
		if err != nil {
			t.Fatal(err)
		}
		in.Cluster = "local"
		hc := &v1alpha1.HealthCheckPolicy{
			Enabled: &enabled, IntervalSeconds: &interval, TimeoutSeconds: &timeout,
			HealthyThresholdCount: &healthy, UnhealthyThresholdCount: &unhealthy, Port: &port,
			StatusMatch: &match, Path: &path, Protocol: &protocol, ProtocolVersion: &version,
		}
		p := v1alpha1.TargetGroupPolicy{Spec: v1alpha1.TargetGroupPolicySpec{
			TargetRefs:  []gatewayv1.LocalPolicyTargetReference{{Kind: "Service", Name: "web"}},
			HealthCheck: hc,
		}}
		p.Name, p.Namespace = "checks", "default"
		in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{p}
		out := translate.Translate(in)
		checkValid(t, out)
		if len(out.TargetGroups) != 1 {
			t.Fatalf("%d target groups, want 1", len(out.TargetGroups))
		}
		got := out.TargetGroups[0].HealthCheck
		refused := false
		for _, pr := range out.Problems {
			if pr.Object.Kind != "TargetGroupPolicy" {
				t.Fatalf("a problem of another object: %v", pr)
			}
			refused = true
		}
		if refused {
			if !reflect.DeepEqual(got, model.HealthCheck{}) {
				t.Fatalf("a refused policy set the health check %+v", got)
			}
			return
		}
		want := model.HealthCheck{
			Enabled: &enabled, IntervalSeconds: interval, TimeoutSeconds: timeout,
			HealthyThresholdCount: healthy, UnhealthyThresholdCount: unhealthy, Port: port,
			Matcher: match, Path: path, Protocol: model.Protocol(protocol), ProtocolVersion: model.ProtocolVersion(version),
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("health check %+v, want %+v", got, want)
		}
	})
}

// TestHealthChecksExample: examples/health-checks translates without a
// problem, its policy accepted, and the target group checks as it says.
func TestHealthChecksExample(t *testing.T) {
	in, err := file.Load("../../examples/health-checks")
	if err != nil {
		t.Fatal(err)
	}
	out := translateClean(t, in)
	if len(out.TargetGroups) != 1 {
		t.Fatalf("%d target groups, want 1", len(out.TargetGroups))
	}
	hc := out.TargetGroups[0].HealthCheck
	if hc.Path != "/healthz" || hc.IntervalSeconds != 10 || hc.HealthyThresholdCount != 2 || hc.UnhealthyThresholdCount != 3 || hc.Matcher != "200-299" {
		t.Errorf("health check %+v, want the example policy's", hc)
	}
	st := out.Status.TargetGroupPolicies
	if len(st) != 1 || len(st[0].Ancestors) != 1 || !st[0].Ancestors[0].Conditions[0].Status {
		t.Errorf("policy status %+v, want accepted at Service rates", st)
	}
}
