package kubernetes_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
)

// Two clusters with the same Service and a route to it translate to one
// target group name, which the first to send owns. The second cluster's
// send drops what the control plane refuses (the target group, and the
// route's service that forwards to it) and sends the rest: its other
// route arrives. Once the first cluster lets the name go, the second's
// next sync takes it.
func TestNameOwnedByAnotherClusterHoldsBackOnlyWhatClaimsIt(t *testing.T) {
	e := newMCSEnv(t)
	ctx := context.Background()
	const group = "reviews-shop-80"
	route := func(c *mcsCluster, name, gateway string) *gatewayv1.HTTPRoute {
		port := gatewayv1.PortNumber(80)
		r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(gateway)}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port}}}}}},
		}}
		if err := c.kc.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// app gives c a service network of its own, gateway, and the Service
	// and route reviews in it.
	app := func(c *mcsCluster, gateway, endpoint string) *gatewayv1.HTTPRoute {
		c.ensureNamespace(t, "shop")
		class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "trellis"},
			Spec: gatewayv1.GatewayClassSpec{ControllerName: "trellis.dev/service-network"}}
		if err := c.kc.Create(ctx, class); err != nil {
			t.Fatal(err)
		}
		gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: gateway}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "trellis",
			Listeners:        []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}},
		}}
		if err := c.kc.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
		c.createService(t, "shop", "reviews", service{ports: []corev1.ServicePort{httpPort(80)}, endpoint: endpoint})
		return route(c, "reviews", gateway)
	}
	owner := func(objs *model.Objects, kind model.Kind, name string) string {
		l, _ := objs.List(kind)
		if obj := l.Find(name); obj != nil {
			return obj.ObjectMeta().Owner
		}
		return ""
	}
	ownedBy := func(kind model.Kind, name, cluster string) func() error {
		return func() error {
			if got := owner(e.controlPlane(t), kind, name); got != cluster {
				return fmt.Errorf("%s %s owned by %q, want %q", kind, name, got, cluster)
			}
			return nil
		}
	}

	aRoute := app(e.a, "mesh-a", "198.18.0.70")
	within(t, time.Now(), 20*time.Second, "a's target group in the control plane", ownedBy(model.KindTargetGroup, group, "a"))

	// b: the same Service and route, and one of its own.
	app(e.b, "mesh-b", "198.18.0.71")
	e.b.createService(t, "shop", "ratings", service{ports: []corev1.ServicePort{httpPort(80)}, endpoint: "198.18.0.72"})
	route(e.b, "ratings", "mesh-b")
	within(t, time.Now(), 20*time.Second, "b's network, ratings target group and service in the control plane", all(
		ownedBy(model.KindServiceNetwork, "mesh-b", "b"),
		ownedBy(model.KindTargetGroup, "ratings-shop-80", "b"),
		ownedBy(model.KindService, "ratings-shop.mesh-b", "b")))
	objs := e.controlPlane(t)
	if got := owner(objs, model.KindTargetGroup, group); got != "a" {
		t.Errorf("target group %s owned by %q, want a's still", group, got)
	}
	if got := owner(objs, model.KindService, "reviews-shop.mesh-b"); got != "" {
		t.Errorf("b's service reviews-shop.mesh-b, which forwards to a's target group, was stored (owner %q)", got)
	}

	// a lets the name go; b's next sync (any change in b) takes it, and
	// sends the service that forwards to it.
	if err := e.a.kc.Delete(ctx, aRoute); err != nil {
		t.Fatal(err)
	}
	within(t, time.Now(), 20*time.Second, "a's target group gone", ownedBy(model.KindTargetGroup, group, ""))
	route(e.b, "details", "mesh-b")
	within(t, time.Now(), 20*time.Second, "b's reviews target group and service in the control plane", all(
		ownedBy(model.KindTargetGroup, group, "b"),
		ownedBy(model.KindService, "reviews-shop.mesh-b", "b")))
}
