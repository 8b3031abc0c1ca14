package kubernetes_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/internal/translate"
)

// A Gateway of class trellis in a second cluster, named like the first
// cluster's service network, associates with that network instead of
// claiming it: refused (NotAllowed on the Gateway, its routes not sent,
// everything else the cluster sends still sent) until the owner's Gateway
// allows the cluster, then accepted, its routes services of the owner's
// network.
func TestServiceNetworkAssociation(t *testing.T) {
	e := newMCSEnv(t)
	ctx := context.Background()
	gateway := func(c *mcsCluster) *gatewayv1.Gateway {
		c.ensureNamespace(t, "shop")
		class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "trellis"},
			Spec: gatewayv1.GatewayClassSpec{ControllerName: "trellis.dev/service-network"}}
		if err := c.kc.Create(ctx, class); err != nil {
			t.Fatal(err)
		}
		gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "mesh"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "trellis",
			Listeners:        []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}},
		}}
		if err := c.kc.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
		return gw
	}
	aGateway := gateway(e.a)
	within(t, time.Now(), 20*time.Second, "a's network mesh in the control plane", func() error {
		for _, n := range e.controlPlane(t).Networks {
			if n.Name == "mesh" && n.Owner == "a" {
				return nil
			}
		}
		return fmt.Errorf("no network mesh owned by a")
	})

	gateway(e.b)
	e.b.createService(t, "shop", "reviews", service{ports: []corev1.ServicePort{httpPort(80)}, endpoint: "198.18.0.60"})
	port := gatewayv1.PortNumber(80)
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "mesh"}}},
		Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: "reviews", Port: &port}}}}}},
	}}
	if err := e.b.kc.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	accepted := func(status metav1.ConditionStatus, reason, message string) func() error {
		return func() error {
			var gw gatewayv1.Gateway
			if err := e.b.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "mesh"}, &gw); err != nil {
				return err
			}
			c := meta.FindStatusCondition(gw.Status.Conditions, "Accepted")
			if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, message) {
				return fmt.Errorf("b's Gateway Accepted: %+v", c)
			}
			return nil
		}
	}
	within(t, time.Now(), 20*time.Second, "b's Gateway refused", accepted(metav1.ConditionFalse, kubernetes.ReasonNotAllowed, `owned by cluster "a", which does not allow cluster "b"`))
	// The refusal did not hold back what else b sends: its target group
	// arrives, while its service does not.
	within(t, time.Now(), 20*time.Second, "b's target group sent, its service not", func() error {
		objs := e.controlPlane(t)
		for _, s := range objs.Services {
			if s.Owner == "b" {
				t.Fatalf("b's service %s was sent to a network that does not allow b", s.Name)
			}
		}
		for _, tg := range objs.TargetGroups {
			if tg.Owner == "b" {
				return nil
			}
		}
		return fmt.Errorf("no target group of b in the control plane")
	})

	// a allows b: b associates, and its route is a service of a's network.
	if err := e.a.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "mesh"}, aGateway); err != nil {
		t.Fatal(err)
	}
	aGateway.Annotations = map[string]string{translate.AllowedClustersAnnotation: "b"}
	if err := e.a.kc.Update(ctx, aGateway); err != nil {
		t.Fatal(err)
	}
	within(t, time.Now(), 20*time.Second, "b's Gateway associated", accepted(metav1.ConditionTrue, "Accepted", `associated with service network "mesh", owned by cluster "a"`))
	within(t, time.Now(), 20*time.Second, "b's route a service of a's network", func() error {
		for _, s := range e.controlPlane(t).Services {
			if s.Owner == "b" && s.Network == "mesh" && s.DNSName == "reviews-shop.mesh.trellis.internal" {
				return nil
			}
		}
		return fmt.Errorf("no service of b in mesh")
	})
	for _, n := range e.controlPlane(t).Networks {
		if n.Name == "mesh" && n.Owner != "a" {
			t.Errorf("network mesh is now owned by %s", n.Owner)
		}
	}
}

// controlPlane reads every object the control plane holds.
func (e *mcsEnv) controlPlane(t *testing.T) *model.Objects {
	t.Helper()
	return readControlPlane(t, e.cp)
}
