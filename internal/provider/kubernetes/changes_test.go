package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// TestEachKindOfChangeReachesItsDependents changes, one after another, an
// EndpointSlice, a Service, a ReferenceGrant and an AuthPolicy that routes
// read, among routes that read none of them, and checks after each that
// the routes that read it have the status and the served configuration
// the change calls for: the controller reads only the objects the events
// named, and the translator translates again only their dependents.
func TestEachKindOfChangeReachesItsDependents(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.proxy(t, proxyBind)
	serveName(t, e, "198.18.66.1:8080", "one")
	serveName(t, e, "198.18.66.2:8080", "two")
	e.create(t, classes+edgeGateway("dep")+namespace("dep-far", "")+
		backend("dep", "web", "198.18.66.1")+backend("dep-far", "far", "198.18.66.2")+
		routeYAML("HTTPRoute", "dep", "near", `{parentRefs: [{name: web}], hostnames: [near.dep.example], rules: [{backendRefs: [{name: web, port: 80}]}]}`)+
		routeYAML("HTTPRoute", "dep", "cross", `{parentRefs: [{name: web}], hostnames: [cross.dep.example], rules: [{backendRefs: [{name: far, namespace: dep-far, port: 80}]}]}`)+
		// Routes that read none of what changes.
		webRoutes("dep", 20))
	url := e.gatewayURL(t, "dep", "web")
	hc := e.NS.HTTPClient(5 * time.Second)

	// routeIs checks route name's one parent status for ResolvedRefs
	// (with reason) and Accepted.
	routeIs := func(name string, resolved metav1.ConditionStatus, reason string) func() error {
		return func() error {
			var r gatewayv1.HTTPRoute
			if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "dep", Name: name}, &r); err != nil {
				return err
			}
			if len(r.Status.Parents) != 1 {
				return fmt.Errorf("route %s: %d parents in status", name, len(r.Status.Parents))
			}
			conds := r.Status.Parents[0].Conditions
			return errors.Join(hasCondition(conds, "Accepted", True, "Accepted", r.Generation),
				hasCondition(conds, "ResolvedRefs", resolved, reason, r.Generation))
		}
	}
	notServed := func(host string) func() error {
		return func() error {
			if body, err := get(hc, url, host); err == nil {
				return fmt.Errorf("%s answered %q; want an error status", host, body)
			}
			return nil
		}
	}
	eventually := func(what string, check func() error) {
		t.Helper()
		testsync.Eventually(t, 30*time.Second, what, check)
	}
	eventually("near served by one; cross not permitted", all(serves(hc, url, "near.dep.example", "one"),
		routeIs("near", True, "ResolvedRefs"), routeIs("cross", False, "RefNotPermitted"), notServed("cross.dep.example"),
		serves(hc, url, "r-3.dep.example", "one")))

	// An EndpointSlice: its Service's routes follow the new endpoint.
	update(t, e.kc, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "dep", Name: "web-1"}}, func(s *discoveryv1.EndpointSlice) {
		s.Endpoints[0].Addresses = []string{"198.18.66.2"}
	})
	eventually("near and the other routes served by two", all(serves(hc, url, "near.dep.example", "two"), serves(hc, url, "r-3.dep.example", "two")))

	// A Service: gone, its routes' backend is not found; back, found.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "dep-far", Name: "far"}}
	grant := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "dep-far", Name: "allow-dep"}, Spec: gatewayv1.ReferenceGrantSpec{
		From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "dep"}},
		To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
	}}
	// A ReferenceGrant: the cross-namespace route resolves, and is served.
	if err := e.kc.Create(ctx, grant); err != nil {
		t.Fatal(err)
	}
	eventually("cross permitted and served by two", all(routeIs("cross", True, "ResolvedRefs"), serves(hc, url, "cross.dep.example", "two")))

	if err := e.kc.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually("cross's backend not found", all(routeIs("cross", False, "BackendNotFound"), notServed("cross.dep.example"),
		routeIs("near", True, "ResolvedRefs")))
	e.create(t, `
apiVersion: v1
kind: Service
metadata: {name: far, namespace: dep-far}
spec: {ports: [{port: 80, targetPort: 8080}]}
`)
	eventually("cross's backend found again", all(routeIs("cross", True, "ResolvedRefs"), serves(hc, url, "cross.dep.example", "two")))

	// The grant gone: not permitted again.
	if err := e.kc.Delete(ctx, grant); err != nil {
		t.Fatal(err)
	}
	eventually("cross not permitted again", all(routeIs("cross", False, "RefNotPermitted"), notServed("cross.dep.example")))

	// An AuthPolicy on a route: accepted, and the route's service has auth
	// on; removed, off again.
	policy := &v1alpha1.AuthPolicy{}
	e.create(t, authPolicyYAML("dep", "near-readers", "near", `{Effect: Allow, Principal: "*", Action: "trellis:Invoke", Resource: "*"}`))
	auth := func(want bool) func() error {
		return func() error {
			cp := e.controlPlane(t)
			i := slices.IndexFunc(cp.Services, func(s model.Service) bool { return s.Source != nil && s.Source.Name == "near" })
			if i < 0 {
				return errors.New("no service of route near in the control plane")
			}
			if got := cp.Services[i].Auth != nil; got != want {
				return fmt.Errorf("service %s has auth %v, want %v", cp.Services[i].Name, got, want)
			}
			return nil
		}
	}
	eventually("the policy accepted, near's service with auth", all(auth(true), func() error {
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "dep", Name: "near-readers"}, policy); err != nil {
			return err
		}
		if len(policy.Status.Ancestors) == 0 {
			return errors.New("no ancestors in the policy's status")
		}
		return hasCondition(policy.Status.Ancestors[0].Conditions, "Accepted", True, "Accepted", policy.Generation)
	}))
	if err := e.kc.Delete(ctx, policy); err != nil {
		t.Fatal(err)
	}
	eventually("near's service without auth", auth(false))

	// Through every change, an unrelated route kept its status and is served.
	eventually("an unrelated route accepted and served", all(serves(hc, url, "r-7.dep.example", "two"), func() error {
		return routesAccepted(ctx, e.kc, "dep", -1)
	}))
}

// TestChangeHooks checks the calls `trellis up` holds the proxy's health
// checks with: a route's change calls OnChange, and a change that makes
// nothing to send (a Service no route reads) calls NothingSent.
func TestChangeHooks(t *testing.T) {
	var changes, nothing atomic.Int64
	e := newEnvWith(t, envOptions{onChange: func() { changes.Add(1) }, nothingSent: func() { nothing.Add(1) }})
	e.proxy(t, proxyBind)
	serveName(t, e, "198.18.67.1:8080", "hooks")
	e.create(t, classes+edgeGateway("hooks")+backend("hooks", "web", "198.18.67.1")+webRoutes("hooks", 1))
	url := e.gatewayURL(t, "hooks", "web")
	hc := e.NS.HTTPClient(5 * time.Second)
	testsync.Eventually(t, 30*time.Second, "the route served", serves(hc, url, "r-0.hooks.example", "hooks"))

	before := changes.Load()
	update(t, e.kc, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "hooks", Name: "r-0"}}, func(r *gatewayv1.HTTPRoute) {
		r.Spec.Hostnames = []gatewayv1.Hostname{"new.hooks.example"}
	})
	testsync.Eventually(t, 30*time.Second, "the new hostname served", serves(hc, url, "new.hooks.example", "hooks"))
	if changes.Load() == before {
		t.Error("a route's change did not call OnChange")
	}

	before = nothing.Load()
	e.create(t, `
apiVersion: v1
kind: Service
metadata: {name: unread, namespace: hooks}
spec: {ports: [{port: 80}]}
`)
	testsync.Eventually(t, 30*time.Second, "NothingSent called", func() error {
		if nothing.Load() == before {
			return errors.New("a change that sends nothing did not call NothingSent")
		}
		return nil
	})
}
