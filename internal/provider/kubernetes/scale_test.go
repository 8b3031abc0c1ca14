package kubernetes_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/test/testsync"
)

// TestOneRouteChangeCostsOneRoute changes the hostname of one of 40 routes
// and checks that the reconcile that serves it encodes and compares only
// the objects that route makes (and the Gateway's network, made whole
// every time), and compares the status of that route alone.
func TestOneRouteChangeCostsOneRoute(t *testing.T) {
	const routes = 40
	e := newEnv(t)
	e.proxy(t, proxyBind)
	serveName(t, e, "198.18.64.1:8080", "scale")
	e.create(t, classes+edgeGateway("scale")+backend("scale", "web", "198.18.64.1")+webRoutes("scale", routes))
	url := e.gatewayURL(t, "scale", "web")
	hc := e.NS.HTTPClient(5 * time.Second)
	for i := range routes {
		testsync.Eventually(t, 30*time.Second, "every route served", serves(hc, url, fmt.Sprintf("r-%d.scale.example", i), "scale"))
	}
	// Every status written: the reconciles of the creates are over.
	testsync.Eventually(t, 30*time.Second, "every route Accepted", func() error {
		if err := routesAccepted(context.Background(), e.kc, "scale", -1); err != nil {
			return err
		}
		if st := e.rec.Stats(); st.Objects <= routes {
			return fmt.Errorf("the controller sends %d objects; want more than %d", st.Objects, routes)
		}
		return nil
	})

	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "scale", Name: "r-7"}}
	update(t, e.kc, route, func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = []gatewayv1.Hostname{"r-7-new.scale.example"} })
	testsync.Eventually(t, 30*time.Second, "the new hostname served", serves(hc, url, "r-7-new.scale.example", "scale"))
	testsync.Eventually(t, 30*time.Second, "the changed route Accepted", func() error {
		if err := e.kc.Get(context.Background(), client.ObjectKeyFromObject(route), route); err != nil {
			return err
		}
		if len(route.Status.Parents) != 1 {
			return fmt.Errorf("%d parents in status", len(route.Status.Parents))
		}
		return hasCondition(route.Status.Parents[0].Conditions, "Accepted", True, "Accepted", route.Generation)
	})
	st := e.rec.Stats()
	// The route's service and target group, and the Gateway's network.
	if st.Encoded > 3 {
		t.Errorf("the latest send encoded %d of %d objects; want at most 3", st.Encoded, st.Objects)
	}
	if st.StatusChecked > 1 {
		t.Errorf("the latest reconcile compared the status of %d routes; want at most the changed one", st.StatusChecked)
	}
	if err := serves(hc, url, "r-0.scale.example", "scale")(); err != nil {
		t.Errorf("an unchanged route: %v", err)
	}
}

// TestStatusWritesInBatches has a controller that writes at most 8 statuses
// a reconcile create 40 routes at once: every route is Accepted all the
// same, over several reconciles.
func TestStatusWritesInBatches(t *testing.T) {
	const routes = 40
	e := newEnvWith(t, envOptions{statusBatch: 8, later: true})
	e.create(t, classes+edgeGateway("batch")+backend("batch", "web", "198.18.65.1")+webRoutes("batch", routes))
	e.start()
	testsync.Eventually(t, 60*time.Second, "every route Accepted", func() error {
		return routesAccepted(context.Background(), e.kc, "batch", -1)
	})
	// 40 routes and the Gateway, 8 writes a reconcile.
	if st := e.rec.Stats(); st.Reconciles < 5 || st.StatusWrites < routes {
		t.Errorf("%d reconciles made %d status writes; want at least 5 reconciles and %d writes", st.Reconciles, st.StatusWrites, routes)
	}
}

// webRoutes is n HTTPRoutes of namespace ns, r-0 to r-<n-1>, each for
// the host r-<i>.<ns>.example and sending it to Service web.
func webRoutes(ns string, n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(routeYAML("HTTPRoute", ns, fmt.Sprintf("r-%d", i),
			fmt.Sprintf("{parentRefs: [{name: web}], hostnames: [r-%d.%s.example], rules: [{backendRefs: [{name: web, port: 80}]}]}", i, ns)))
	}
	return b.String()
}

// routesAccepted checks that every HTTPRoute of namespace ns has one parent
// in its status, Accepted at the route's generation, and, when want is not
// negative, that there are want routes.
func routesAccepted(ctx context.Context, kc client.Client, ns string, want int) error {
	var list gatewayv1.HTTPRouteList
	if err := kc.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for i := range list.Items {
		if err := routeAccepted(&list.Items[i]); err != nil {
			return err
		}
	}
	if want >= 0 && len(list.Items) != want {
		return fmt.Errorf("%d routes, want %d", len(list.Items), want)
	}
	return nil
}

// routeAccepted checks that r has one parent in its status, Accepted at
// r's generation.
func routeAccepted(r *gatewayv1.HTTPRoute) error {
	if len(r.Status.Parents) != 1 {
		return fmt.Errorf("%s: %d parents in status", r.Name, len(r.Status.Parents))
	}
	if err := hasCondition(r.Status.Parents[0].Conditions, "Accepted", True, "Accepted", r.Generation); err != nil {
		return fmt.Errorf("%s: %w", r.Name, err)
	}
	return nil
}
