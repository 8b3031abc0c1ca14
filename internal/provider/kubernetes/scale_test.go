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

// TestChangeServedWhileStatusesWait starts a controller whose API client
// may make 10 requests a second on 100 routes, so that their statuses take
// it 10 s to write, and changes a route's hostname meanwhile: the change
// is served without waiting for the status writes queued before it, and
// in the end every route is Accepted at its generation and the Gateway
// counts every route.
func TestChangeServedWhileStatusesWait(t *testing.T) {
	const routes = 100
	e := newEnvWith(t, envOptions{apiQPS: 10, apiBurst: 10, later: true})
	e.proxy(t, proxyBind)
	serveName(t, e, "198.18.65.1:8080", "batch")
	e.create(t, classes+edgeGateway("batch")+backend("batch", "web", "198.18.65.1")+webRoutes("batch", routes))
	e.start()
	url := e.gatewayURL(t, "batch", "web")
	hc := e.NS.HTTPClient(5 * time.Second)
	testsync.Eventually(t, 30*time.Second, "the routes served", serves(hc, url, "r-0.batch.example", "batch"))

	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "batch", Name: "r-7"}}
	update(t, e.kc, route, func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = []gatewayv1.Hostname{"r-7-new.batch.example"} })
	testsync.Eventually(t, 30*time.Second, "the new hostname served", serves(hc, url, "r-7-new.batch.example", "batch"))
	if st := e.rec.Stats(); st.StatusWrites >= routes {
		t.Errorf("the change was served after %d status writes; want it served before the %d routes' statuses were all written", st.StatusWrites, routes)
	}

	testsync.Eventually(t, 60*time.Second, "every route Accepted", func() error {
		return routesAccepted(context.Background(), e.kc, "batch", routes)
	})
	if err := e.kc.Get(context.Background(), client.ObjectKeyFromObject(route), route); err != nil {
		t.Fatal(err)
	}
	if route.Generation != 2 {
		t.Errorf("route r-7 is at generation %d; want 2", route.Generation)
	}
	testsync.Eventually(t, 30*time.Second, "the Gateway counts every route", func() error {
		gw := &gatewayv1.Gateway{}
		if err := e.kc.Get(context.Background(), client.ObjectKey{Namespace: "batch", Name: "web"}, gw); err != nil {
			return err
		}
		for _, l := range gw.Status.Listeners {
			if l.AttachedRoutes != routes {
				return fmt.Errorf("listener %s: %d attached routes, want %d", l.Name, l.AttachedRoutes, routes)
			}
		}
		if len(gw.Status.Listeners) == 0 {
			return fmt.Errorf("no listener status")
		}
		return nil
	})
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
