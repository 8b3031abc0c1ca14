package kube

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"trellis.dev/trellis/test/testsync"
)

// TestCluster starts a cluster with the controller manager and checks
// what tests built on it rely on.
func TestCluster(t *testing.T) {
	c := Start(t, Options{ControllerManager: true})
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "smoke"
	Create(ctx, t, cl, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	t.Run("Kubeconfig", func(t *testing.T) {
		// What a process inside the namespace gets: the file, and the
		// namespace's network.
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Host != Server {
			t.Errorf("kubeconfig server %q, want %q", cfg.Host, Server)
		}
		cfg.Dial = c.NS.DialContext
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatalf("server version through the kubeconfig: %v", err)
		}
		if v.GitVersion != "v1.36.3" {
			t.Errorf("apiserver version %q, want v1.36.3", v.GitVersion)
		}
	})

	t.Run("AdvertiseAddress", func(t *testing.T) {
		// The apiserver publishes itself at NodeIP in default/kubernetes:
		// the address is neither loopback nor the host's.
		svc := &corev1.Service{}
		Get(ctx, t, cl, metav1.NamespaceDefault, "kubernetes", svc)
		if svc.Spec.ClusterIP != KubernetesServiceIP {
			t.Errorf("kubernetes Service cluster IP %s, want %s", svc.Spec.ClusterIP, KubernetesServiceIP)
		}
		testsync.Eventually(t, 30*time.Second, "", func() error {
			return sliceHas(ctx, cl, metav1.NamespaceDefault, "kubernetes", NodeIP, 6443)
		})
	})

	t.Run("ManualEndpointSlice", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "manual"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
			}},
		}
		Create(ctx, t, cl, svc)
		if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !netip.MustParsePrefix(ServiceCIDR).Contains(ip) {
			t.Errorf("cluster IP %q is not in %s", svc.Spec.ClusterIP, ServiceCIDR)
		}
		Create(ctx, t, cl, endpointSlice(ns, "manual-1", "manual", "198.18.3.4"))
		if err := sliceHas(ctx, cl, ns, "manual", "198.18.3.4", 8080); err != nil {
			t.Fatal(err)
		}
		// The reason pod addresses are 198.18.x.y: loopback is refused.
		err := cl.Create(ctx, endpointSlice(ns, "manual-2", "manual", "127.0.0.1"))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("EndpointSlice with 127.0.0.1: got %v, want it rejected as loopback", err)
		}
	})

	t.Run("GatewayAPI", func(t *testing.T) {
		// Only the experimental channel, at the module's version.
		var crds apiextensionsv1.CustomResourceDefinitionList
		if err := cl.List(ctx, &crds); err != nil {
			t.Fatal(err)
		}
		var gatewayCRDs []string
		for _, crd := range crds.Items {
			if !strings.HasPrefix(crd.Spec.Group, "gateway.networking.") {
				continue
			}
			gatewayCRDs = append(gatewayCRDs, crd.Name)
			if ch := crd.Annotations["gateway.networking.k8s.io/channel"]; ch != "experimental" {
				t.Errorf("CRD %s: channel %q, want experimental", crd.Name, ch)
			}
			if v := crd.Annotations["gateway.networking.k8s.io/bundle-version"]; v != "v1.6.3" {
				t.Errorf("CRD %s: bundle version %q, want v1.6.3", crd.Name, v)
			}
		}
		for _, want := range []string{"gatewayclasses.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io", "tcproutes.gateway.networking.k8s.io", "listenersets.gateway.networking.k8s.io"} {
			if !slices.Contains(gatewayCRDs, want) {
				t.Errorf("CRD %s not installed (have %v)", want, gatewayCRDs)
			}
		}

		Create(ctx, t, cl, &gatewayv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: "smoke"},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: "trellis.dev/smoke-test"},
		})
		Create(ctx, t, cl, &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
			Spec: gatewayv1.GatewaySpec{
				GatewayClassName: "smoke",
				Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
			},
		})
		port := gatewayv1.PortNumber(80)
		Create(ctx, t, cl, &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Hostnames:       []gatewayv1.Hostname{"smoke.example"},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{
					BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "manual", Port: &port}},
				}}}},
			},
		})

		gc := &gatewayv1.GatewayClass{}
		Get(ctx, t, cl, "", "smoke", gc)
		if gc.Spec.ControllerName != "trellis.dev/smoke-test" {
			t.Errorf("GatewayClass controllerName %q", gc.Spec.ControllerName)
		}
		gw := &gatewayv1.Gateway{}
		Get(ctx, t, cl, ns, "gw", gw)
		if len(gw.Spec.Listeners) != 1 || gw.Spec.Listeners[0].Port != 80 || gw.Spec.GatewayClassName != "smoke" {
			t.Errorf("Gateway spec read back as %+v", gw.Spec)
		}
		route := &gatewayv1.HTTPRoute{}
		Get(ctx, t, cl, ns, "web", route)
		// The CRD's defaults were applied: a rule gets a PathPrefix / match.
		if len(route.Spec.Rules) != 1 || len(route.Spec.Rules[0].Matches) != 1 ||
			route.Spec.Rules[0].Matches[0].Path == nil || *route.Spec.Rules[0].Matches[0].Path.Value != "/" {
			t.Errorf("HTTPRoute rules read back as %+v, want the defaulted PathPrefix / match", route.Spec.Rules)
		}
		// A schema violation is rejected by the CRD's validation.
		bad := &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: "smoke"},
		}
		if err := cl.Create(ctx, bad); !apierrors.IsInvalid(err) {
			t.Errorf("Gateway without listeners: got %v, want Invalid", err)
		}
	})

	t.Run("MultiClusterServices", func(t *testing.T) {
		Create(ctx, t, cl, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "manual"}})
		Get(ctx, t, cl, ns, "manual", &mcsv1alpha1.ServiceExport{})
	})

	t.Run("InstallCRDs", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "widgets.yaml"), []byte(widgetCRD), 0o644); err != nil {
			t.Fatal(err)
		}
		c.InstallCRDs(t, dir)
		w := &unstructured.Unstructured{}
		w.SetAPIVersion("test.trellis.dev/v1")
		w.SetKind("Widget")
		w.SetNamespace(ns)
		w.SetName("w1")
		unstructured.SetNestedField(w.Object, int64(3), "spec", "size")
		Create(ctx, t, cl, w)
		got := &unstructured.Unstructured{}
		got.SetAPIVersion("test.trellis.dev/v1")
		got.SetKind("Widget")
		Get(ctx, t, cl, ns, "w1", got)
		if size, _, _ := unstructured.NestedInt64(got.Object, "spec", "size"); size != 3 {
			t.Errorf("Widget spec.size %d, want 3", size)
		}
	})

	t.Run("EndpointSliceController", func(t *testing.T) {
		// No kubelet: the Pod is bound to a Node object by hand and its
		// status written as a kubelet would.
		Create(ctx, t, cl, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
		Create(ctx, t, cl, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		})
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				NodeName:   "node-1",
				Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
			},
		}
		Create(ctx, t, cl, pod)
		now := metav1.Now()
		pod.Status = corev1.PodStatus{
			Phase:  corev1.PodRunning,
			HostIP: NodeIP, HostIPs: []corev1.HostIP{{IP: NodeIP}},
			PodIP: "198.18.5.6", PodIPs: []corev1.PodIP{{IP: "198.18.5.6"}},
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
		}
		if err := cl.Status().Update(ctx, pod); err != nil {
			t.Fatalf("writing Pod status: %v", err)
		}
		start := time.Now()
		testsync.Eventually(t, time.Minute, "", func() error { return sliceHas(ctx, cl, ns, "web", "198.18.5.6", 8080) })
		t.Logf("the endpointslice controller published the Pod's address %.1f s after its status was written", time.Since(start).Seconds())
	})
}

// Without binaries, Start fails and says how to build them.
func TestMissingBinariesFail(t *testing.T) {
	for _, env := range []string{"", t.TempDir()} {
		t.Setenv("TRELLIS_KUBE_BIN", env)
		f := &fatalRecorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			binDir(f)
		}()
		<-done
		if !strings.Contains(f.msg, "hack/build-kube.sh") {
			t.Errorf("TRELLIS_KUBE_BIN=%q: fatal message %q does not mention hack/build-kube.sh", env, f.msg)
		}
	}
}

// fatalRecorder records a Fatal and ends the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper()           {}
func (f *fatalRecorder) Fatal(args ...any) { f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fatalRecorder) Fatalf(format string, a ...any) {
	f.msg = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

func TestDecodeCRDs(t *testing.T) {
	manifest := widgetCRD + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\n"
	crds, others, err := decodeCRDs("m.yaml", []byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) != 1 || crds[0].Name != "widgets.test.trellis.dev" || crds[0].Spec.Names.Kind != "Widget" {
		t.Errorf("CRDs %+v", crds)
	}
	if want := []string{"m.yaml: v1 ConfigMap"}; !slices.Equal(others, want) {
		t.Errorf("others %q, want %q", others, want)
	}
	if _, _, err := decodeCRDs("m.yaml", []byte(strings.Replace(widgetCRD, "scope:", "scop:", 1))); err == nil || !strings.Contains(err.Error(), "scop") {
		t.Errorf("unknown field: got %v, want an error naming it", err)
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
	} {
		if got := string(tail([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.trellis.dev
spec:
  group: test.trellis.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

func endpointSlice(ns, name, service, addr string) *discoveryv1.EndpointSlice {
	ready := true
	port, portName, proto := int32(8080), "http", corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
}

// sliceHas checks that an EndpointSlice of the service lists addr as ready
// with port.
func sliceHas(ctx context.Context, cl client.Client, ns, service, addr string, port int32) error {
	var slices discoveryv1.EndpointSliceList
	if err := cl.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return err
	}
	for _, s := range slices.Items {
		hasPort := false
		for _, p := range s.Ports {
			hasPort = hasPort || (p.Port != nil && *p.Port == port)
		}
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				if a == addr && hasPort && e.Conditions.Ready != nil && *e.Conditions.Ready {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no EndpointSlice of %s/%s has %s:%d ready (%d slices: %+v)", ns, service, addr, port, len(slices.Items), slices.Items)
}
