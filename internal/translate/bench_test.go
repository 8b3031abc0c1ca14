package translate_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkTranslate translates a cluster of n HTTPRoutes, each with its
// own Service of ten endpoints, on one edge Gateway: what the controller does
// on every reconcile. Its time per route must not grow with n (issue 15).
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) { benchmarkTranslate(b, n) })
	}
}

func benchmarkTranslate(b *testing.B, n int) {
	in := benchInput(n)
	b.ReportAllocs()
	for b.Loop() {
		out := translate.Translate(in)
		if len(out.Services) != n || len(out.Problems) != 0 {
			b.Fatalf("%d services, problems %v", len(out.Services), out.Problems)
		}
	}
}

// BenchmarkTranslateChange is one change at n routes through Incremental:
// one route's hostname changes (a new resourceVersion), as in
// bench/scale's changes. Its time must not grow with n as a full
// translation's does (issue 15).
func BenchmarkTranslateChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			in, x := benchIncremental(n, nil)
			b.ReportAllocs()
			version := 1
			defer reportCPU(b)()
			for b.Loop() {
				version++
				changeHostname(in, n, version)
				out := x.Translate(in)
				x.Acknowledge()
				if len(out.Services) != n || len(out.Problems) != 0 || len(out.Changed) != 3 {
					b.Fatalf("%d services, problems %v, changed %v", len(out.Services), out.Problems, out.Changed)
				}
			}
		})
	}
}

// benchIncremental is benchInput(n) at resourceVersion 1, with add (if
// any) run for each route i (to give its world a policy, say), translated
// and acknowledged by the Incremental it returns. The incremental tests
// start from it as the benchmarks do.
func benchIncremental(n int, add func(in *translate.Input, i int)) (*translate.Input, *translate.Incremental) {
	in := benchInput(n)
	for i := range in.HTTPRoutes {
		in.HTTPRoutes[i].ResourceVersion = "1"
		in.Services[i].ResourceVersion = "1"
		in.EndpointSlices[i].ResourceVersion = "1"
		if add != nil {
			add(in, i)
		}
	}
	in.GatewayClasses[0].ResourceVersion = "1"
	in.Gateways[0].ResourceVersion = "1"
	x := new(translate.Incremental)
	x.Translate(in)
	x.Acknowledge()
	return in, x
}

// changeHostname gives the middle route of n a new hostname at version,
// as a new object, as a provider makes: the last one stays as the
// Incremental saw it.
func changeHostname(in *translate.Input, n, version int) {
	r := &in.HTTPRoutes[n/2]
	changed := *r
	changed.ResourceVersion = fmt.Sprint(version)
	changed.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(fmt.Sprintf("v%d.example.com", version))}
	*r = changed
}

// reportCPU starts counting the process's CPU time (testsync.CPUTime:
// what a benchmark costs on a machine that other work slows, which the
// time per op is not); the function it returns reports it per op as
// cpu-ns/op.
func reportCPU(b *testing.B) func() {
	cpu := testsync.CPUTime()
	return func() { b.ReportMetric(float64(testsync.CPUTime()-cpu)/float64(b.N), "cpu-ns/op") }
}

// benchInput is n HTTPRoutes, each with its own Service of ten endpoints,
// on one edge Gateway.
func benchInput(n int) *translate.Input {
	in := &translate.Input{
		Cluster:        "local",
		GatewayClasses: []gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: translate.EdgeController}}},
		Gateways: []gatewayv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "edge",
			Listeners:        []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}},
		}}},
	}
	port := int32(8080)
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
		es := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: &port}}}
		for j := range 10 {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1)}})
		}
		in.EndpointSlices = append(in.EndpointSlices, es)
		svcPort := gatewayv1.PortNumber(80)
		in.HTTPRoutes = append(in.HTTPRoutes, gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("r-%d", i)},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "web"}}},
				Hostnames:       []gatewayv1.Hostname{gatewayv1.Hostname(fmt.Sprintf("r-%d.example.com", i))},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &svcPort}}}}}},
			}})
	}
	return in
}

// BenchmarkTranslatePolicyChange is one TargetGroupPolicy's interval
// changed through Incremental at n routes, with a policy per Service (what
// bench/scale gen -interval writes), against one route's hostname changed
// in the same world: policies are resolved on every call, so both cost
// what n policies cost besides the routes translated again.
func BenchmarkTranslatePolicyChange(b *testing.B) {
	benchPolicyChange(b, func(in *translate.Input, i int) {
		interval := int32(10)
		p := v1alpha1.TargetGroupPolicy{Spec: v1alpha1.TargetGroupPolicySpec{
			TargetRefs:  []gatewayv1.LocalPolicyTargetReference{{Kind: "Service", Name: gatewayv1.ObjectName(in.Services[i].Name)}},
			HealthCheck: &v1alpha1.HealthCheckPolicy{IntervalSeconds: &interval},
		}}
		p.Namespace, p.Name, p.ResourceVersion = "default", in.Services[i].Name, "1"
		in.TargetGroupPolicies = append(in.TargetGroupPolicies, p)
	}, func(in *translate.Input, version int) {
		p := &in.TargetGroupPolicies[len(in.TargetGroupPolicies)/2]
		changed := *p
		changed.ResourceVersion = fmt.Sprint(version)
		interval := int32(5 + version%296)
		changed.Spec.HealthCheck = &v1alpha1.HealthCheckPolicy{IntervalSeconds: &interval}
		*p = changed
	}, func(out *translate.Output, n int) error {
		if len(out.Services) != n || len(out.Problems) != 0 || len(out.Changed) > 3 {
			return fmt.Errorf("%d services, problems %v, changed %v", len(out.Services), out.Problems, out.Changed)
		}
		return nil
	})
}

// BenchmarkTranslateAuthPolicyChange is one AuthPolicy's document changed
// through Incremental at n routes, with a policy per route, against one
// route's hostname changed in the same world. Out.RetranslatedPolicies
// names the AuthPolicies whose status the controller compares.
func BenchmarkTranslateAuthPolicyChange(b *testing.B) {
	benchPolicyChange(b, func(in *translate.Input, i int) {
		p := v1alpha1.AuthPolicy{Spec: v1alpha1.AuthPolicySpec{
			TargetRefs: []gatewayv1.LocalPolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: gatewayv1.ObjectName(in.HTTPRoutes[i].Name)}},
			Policy:     apiextensionsv1.JSON{Raw: []byte(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`)},
		}}
		p.Namespace, p.Name, p.ResourceVersion, p.Generation = "default", in.HTTPRoutes[i].Name, "1", 1
		in.AuthPolicies = append(in.AuthPolicies, p)
	}, func(in *translate.Input, version int) {
		p := &in.AuthPolicies[len(in.AuthPolicies)/2]
		changed := *p
		changed.ResourceVersion = fmt.Sprint(version)
		changed.Generation = int64(version)
		changed.Spec.Policy = apiextensionsv1.JSON{Raw: fmt.Appendf(nil, `{"Statement":[{"Sid":"v%d","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`, version)}
		*p = changed
	}, func(out *translate.Output, n int) error {
		if len(out.Services) != n || len(out.Problems) != 0 || len(out.Status.Policies) != n {
			return fmt.Errorf("%d services, %d policy statuses, problems %v", len(out.Services), len(out.Status.Policies), out.Problems)
		}
		return nil
	})
}

// benchPolicyChange runs a policy benchmark at 1,000 and 10,000 routes: add
// gives route i's world its policy, then each iteration changes either the
// middle policy (change, at a new version) or the middle route's hostname,
// translates through Incremental and checks the output.
func benchPolicyChange(b *testing.B, add func(in *translate.Input, i int), change func(in *translate.Input, version int), check func(out *translate.Output, n int) error) {
	for _, n := range []int{1000, 10000} {
		for _, what := range []string{"policy", "route"} {
			b.Run(fmt.Sprintf("routes=%d/change=%s", n, what), func(b *testing.B) {
				in, x := benchIncremental(n, add)
				b.ReportAllocs()
				version := 1
				defer reportCPU(b)()
				for b.Loop() {
					version++
					if what == "policy" {
						change(in, version)
					} else {
						changeHostname(in, n, version)
					}
					out := x.Translate(in)
					x.Acknowledge()
					if err := check(out, n); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
