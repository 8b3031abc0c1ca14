package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/test/testsync"
)

const (
	True  = metav1.ConditionTrue
	False = metav1.ConditionFalse
)

// TestStatus creates Gateway API objects in a real apiserver and checks the
// status `kubectl get -o yaml` shows for each condition and reason, and what
// reached the control plane.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	e.create(t, classes)
	ctx := context.Background()

	gateway := func(ns, name string) (*gatewayv1.Gateway, error) {
		gw := &gatewayv1.Gateway{}
		return gw, e.kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, gw)
	}
	route := func(ns, name string) (*gatewayv1.HTTPRoute, error) {
		r := &gatewayv1.HTTPRoute{}
		return r, e.kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, r)
	}
	// parent returns the conditions of a route's status entry for the
	// parentRef to Gateway gw (and section, when not empty).
	parent := func(r *gatewayv1.HTTPRoute, gw, section string) ([]metav1.Condition, error) {
		for _, p := range r.Status.Parents {
			if string(p.ParentRef.Name) == gw && string(deref(p.ParentRef.SectionName)) == section {
				return p.Conditions, nil
			}
		}
		return nil, fmt.Errorf("route %s has no status for parent %s %s: %+v", r.Name, gw, section, r.Status.Parents)
	}
	listener := func(gw *gatewayv1.Gateway, name string) (*gatewayv1.ListenerStatus, error) {
		for i := range gw.Status.Listeners {
			if string(gw.Status.Listeners[i].Name) == name {
				return &gw.Status.Listeners[i], nil
			}
		}
		return nil, fmt.Errorf("gateway %s has no status for listener %s", gw.Name, name)
	}
	// routeConds checks a route's conditions for one parent.
	routeConds := func(ns, name, gw, section string, want ...metav1.Condition) error {
		r, err := route(ns, name)
		if err != nil {
			return err
		}
		conds, err := parent(r, gw, section)
		if err != nil {
			return err
		}
		for _, w := range want {
			if err := hasCondition(conds, w.Type, w.Status, w.Reason, r.Generation); err != nil {
				return fmt.Errorf("route %s/%s: %w", ns, name, err)
			}
		}
		return nil
	}
	// gatewayConds reads a Gateway and checks its conditions.
	gatewayConds := func(ns, name string, want ...metav1.Condition) (*gatewayv1.Gateway, error) {
		gw, err := gateway(ns, name)
		if err != nil {
			return nil, err
		}
		for _, w := range want {
			if err := hasCondition(gw.Status.Conditions, w.Type, w.Status, w.Reason, gw.Generation); err != nil {
				return nil, fmt.Errorf("gateway %s/%s: %w", ns, name, err)
			}
		}
		return gw, nil
	}
	cond := func(typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason}
	}
	accepted := cond("Accepted", True, "Accepted")
	resolved := cond("ResolvedRefs", True, "ResolvedRefs")

	tests := []struct {
		name    string
		objects string
		check   func() error
		// then, if set, changes something and thenCheck checks the result.
		then      func(t *testing.T)
		thenCheck func() error
	}{{
		name: "service network: Gateway accepted and programmed at its domain, route served under its DNS name",
		objects: namespace("sn", "") +
			gatewayYAML("sn", "hotel", "trellis", httpListener) +
			routeYAML("HTTPRoute", "sn", "inventory", `{parentRefs: [{name: hotel}], rules: [{backendRefs: [{name: web, port: 80}]}]}`) +
			backend("sn", "web", "198.18.60.1"),
		check: func() error {
			gw, err := gatewayConds("sn", "hotel", cond("Accepted", True, "Accepted"), cond("Programmed", True, "Programmed"))
			if err != nil {
				return err
			}
			if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != "hotel.trellis.internal" ||
				deref(gw.Status.Addresses[0].Type) != gatewayv1.HostnameAddressType {
				return fmt.Errorf("addresses = %+v", gw.Status.Addresses)
			}
			l, err := listener(gw, "http")
			if err != nil {
				return err
			}
			if l.AttachedRoutes != 1 {
				return fmt.Errorf("attachedRoutes = %d", l.AttachedRoutes)
			}
			for _, c := range []metav1.Condition{cond("Accepted", True, "Accepted"), cond("ResolvedRefs", True, "ResolvedRefs"),
				cond("Programmed", True, "Programmed"), cond("Conflicted", False, "NoConflicts")} {
				if err := hasCondition(l.Conditions, c.Type, c.Status, c.Reason, gw.Generation); err != nil {
					return fmt.Errorf("listener http: %w", err)
				}
			}
			if err := routeConds("sn", "inventory", "hotel", "", accepted, resolved); err != nil {
				return err
			}
			r, _ := route("sn", "inventory")
			if got := r.Annotations[kubernetes.AssignedDomainNameAnnotation]; got != "inventory-sn.hotel.trellis.internal" {
				return fmt.Errorf("assigned domain name annotation = %q", got)
			}
			// What the control plane holds.
			cp := e.controlPlane(t)
			i := slices.IndexFunc(cp.Services, func(s model.Service) bool { return s.Name == "inventory-sn.hotel" })
			if i < 0 {
				return errors.New("service inventory-sn.hotel not in the control plane")
			}
			if s := cp.Services[i]; s.Owner != cluster || s.DNSName != "inventory-sn.hotel.trellis.internal" || s.Network != "hotel" {
				return fmt.Errorf("service = %+v", s)
			}
			j := slices.IndexFunc(cp.TargetGroups, func(tg model.TargetGroup) bool { return tg.Name == "web-sn-80" })
			if j < 0 {
				return errors.New("target group web-sn-80 not in the control plane")
			}
			if tg := cp.TargetGroups[j]; len(tg.Targets) != 1 || tg.Targets[0].Address != "198.18.60.1" || tg.Targets[0].Port != 8080 ||
				tg.Targets[0].State != model.TargetActive {
				return fmt.Errorf("targets = %+v", tg.Targets)
			}
			return nil
		},
	}, {
		name: "edge: address from the pool, recorded; hostname intersection",
		objects: namespace("edge", "") +
			gatewayYAML("edge", "shop", "trellis-edge", `[{name: http, protocol: HTTP, port: 8080, hostname: "*.shop.example"}]`) +
			routeYAML("HTTPRoute", "edge", "cart", `{parentRefs: [{name: shop}], hostnames: [cart.shop.example, cart.other.example], rules: [{backendRefs: [{name: web, port: 80}]}]}`) +
			routeYAML("HTTPRoute", "edge", "elsewhere", `{parentRefs: [{name: shop}], hostnames: [www.other.example], rules: [{backendRefs: [{name: web, port: 80}]}]}`) +
			backend("edge", "web", "198.18.60.2"),
		check: func() error {
			gw, err := gatewayConds("edge", "shop", cond("Programmed", True, "Programmed"))
			if err != nil {
				return err
			}
			if len(gw.Status.Addresses) != 1 || deref(gw.Status.Addresses[0].Type) != gatewayv1.IPAddressType {
				return fmt.Errorf("addresses = %+v", gw.Status.Addresses)
			}
			addr := gw.Status.Addresses[0].Value
			if ip, err := netip.ParseAddr(addr); err != nil || !netip.MustParsePrefix(pool).Contains(ip) {
				return fmt.Errorf("address %q is not in the pool %s", addr, pool)
			}
			if got := gw.Annotations[kubernetes.GatewayAddressAnnotation]; got != addr {
				return fmt.Errorf("address annotation %q, status address %q", got, addr)
			}
			if err := routeConds("edge", "cart", "shop", "", accepted, resolved); err != nil {
				return err
			}
			if err := routeConds("edge", "elsewhere", "shop", "", cond("Accepted", False, "NoMatchingListenerHostname")); err != nil {
				return err
			}
			cp := e.controlPlane(t)
			i := slices.IndexFunc(cp.Networks, func(n model.ServiceNetwork) bool { return n.Name == "shop-edge" })
			if i < 0 || !slices.Equal(cp.Networks[i].Addresses, []string{addr}) {
				return fmt.Errorf("network shop-edge in the control plane: %+v", cp.Networks)
			}
			j := slices.IndexFunc(cp.Services, func(s model.Service) bool { return s.Name == "cart-edge.shop-edge" })
			if j < 0 || len(cp.Services[j].Listeners) != 1 || !slices.Equal(cp.Services[j].Listeners[0].Hostnames, []string{"cart.shop.example"}) {
				return fmt.Errorf("service cart-edge.shop-edge in the control plane: %+v", cp.Services)
			}
			r, _ := route("edge", "cart")
			if _, set := r.Annotations[kubernetes.AssignedDomainNameAnnotation]; set {
				return errors.New("an edge route has an assigned domain name")
			}
			return nil
		},
	}, {
		// Two listeners with one port, protocol and hostname cannot be
		// created (the CRD's validation refuses them), so HostnameConflict
		// is covered by the translator's golden cases only.
		name: "listeners: unsupported protocol, invalid route kinds",
		objects: namespace("listeners", "") + gatewayYAML("listeners", "mixed", "trellis-edge", `[
  {name: http, protocol: HTTP, port: 80},
  {name: tcp, protocol: TCP, port: 5432},
  {name: kinds, protocol: HTTP, port: 81, allowedRoutes: {kinds: [{kind: TCPRoute}]}}]`),
		check: func() error {
			gw, err := gatewayConds("listeners", "mixed", cond("Accepted", True, "ListenersNotValid"))
			if err != nil {
				return err
			}
			want := map[string][]metav1.Condition{
				"http":  {cond("Accepted", True, "Accepted"), cond("Programmed", True, "Programmed")},
				"tcp":   {cond("Accepted", False, "UnsupportedProtocol"), cond("Programmed", False, "Invalid")},
				"kinds": {cond("ResolvedRefs", False, "InvalidRouteKinds"), cond("Accepted", True, "Accepted")},
			}
			for name, conds := range want {
				l, err := listener(gw, name)
				if err != nil {
					return err
				}
				for _, c := range conds {
					if err := hasCondition(l.Conditions, c.Type, c.Status, c.Reason, gw.Generation); err != nil {
						return fmt.Errorf("listener %s: %w", name, err)
					}
				}
			}
			return nil
		},
	}, {
		name: "not accepted: unsupported address, class with parameters",
		objects: namespace("gwbad", "") + gatewayYAML("gwbad", "tuned", "trellis-tuned", httpListener) + `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: pinned, namespace: gwbad}
spec:
  gatewayClassName: trellis
  addresses: [{type: IPAddress, value: 10.0.0.1}]
  listeners: [{name: http, protocol: HTTP, port: 80}]
`,
		check: func() error {
			if _, err := gatewayConds("gwbad", "pinned", cond("Accepted", False, "UnsupportedAddress"), cond("Programmed", False, "Invalid")); err != nil {
				return err
			}
			gc := &gatewayv1.GatewayClass{}
			if err := e.kc.Get(ctx, types.NamespacedName{Name: "trellis-tuned"}, gc); err != nil {
				return err
			}
			if err := hasCondition(gc.Status.Conditions, "Accepted", False, "InvalidParameters", gc.Generation); err != nil {
				return fmt.Errorf("class trellis-tuned: %w", err)
			}
			_, err := gatewayConds("gwbad", "tuned", cond("Accepted", False, "Invalid"))
			return err
		},
	}, {
		name: "route parents: no matching parent, not allowed by listeners",
		objects: namespace("parents", "") +
			namespace("parents-b", "") +
			gatewayYAML("parents", "parents-net", "trellis", httpListener) +
			routeYAML("HTTPRoute", "parents", "lost", `{parentRefs: [{name: parents-net, sectionName: https}]}`) +
			routeYAML("HTTPRoute", "parents-b", "outsider", `{parentRefs: [{name: parents-net, namespace: parents}]}`),
		check: func() error {
			if err := routeConds("parents", "lost", "parents-net", "https", cond("Accepted", False, "NoMatchingParent")); err != nil {
				return err
			}
			return routeConds("parents-b", "outsider", "parents-net", "", cond("Accepted", False, "NotAllowedByListeners"))
		},
	}, {
		name: "backend refs: not found, invalid kind, not permitted until a ReferenceGrant, unsupported protocol",
		objects: namespace("refs", "") +
			namespace("refs-other", "") +
			gatewayYAML("refs", "refs-net", "trellis", httpListener) +
			routeYAML("HTTPRoute", "refs", "missing", `{parentRefs: [{name: refs-net}], rules: [{backendRefs: [{name: nothing, port: 80}]}]}`) +
			routeYAML("HTTPRoute", "refs", "kind", `{parentRefs: [{name: refs-net}], rules: [{backendRefs: [{group: "", kind: ConfigMap, name: web, port: 80}]}]}`) +
			routeYAML("HTTPRoute", "refs", "cross", `{parentRefs: [{name: refs-net}], rules: [{backendRefs: [{name: web, namespace: refs-other, port: 80}]}]}`) +
			routeYAML("HTTPRoute", "refs", "udp", `{parentRefs: [{name: refs-net}], rules: [{backendRefs: [{name: dns, port: 53}]}]}`) +
			backend("refs-other", "web", "198.18.60.3") + `
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: refs}
spec:
  ports: [{port: 53, protocol: UDP}]
`,
		check: func() error {
			for name, reason := range map[string]string{"missing": "BackendNotFound", "kind": "InvalidKind", "cross": "RefNotPermitted", "udp": "UnsupportedProtocol"} {
				// A route with a bad backend is still accepted: that
				// backend's share is answered with 500.
				if err := routeConds("refs", name, "refs-net", "", accepted, cond("ResolvedRefs", False, reason)); err != nil {
					return err
				}
			}
			return nil
		},
		then: func(t *testing.T) {
			e.create(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: allow-refs, namespace: refs-other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: refs}]
  to: [{group: "", kind: Service}]
`)
		},
		thenCheck: func() error {
			if err := routeConds("refs", "cross", "refs-net", "", accepted, resolved); err != nil {
				return err
			}
			cp := e.controlPlane(t)
			if !slices.ContainsFunc(cp.TargetGroups, func(tg model.TargetGroup) bool { return tg.Name == "web-refs-other-80" }) {
				return errors.New("target group web-refs-other-80 not in the control plane")
			}
			return nil
		},
	}, {
		name: "partially invalid: an invalid rule is dropped, the rest served",
		objects: namespace("partial", "") + gatewayYAML("partial", "partial-net", "trellis", httpListener) +
			backend("partial", "web", "198.18.60.4") + `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: half, namespace: partial}
spec:
  parentRefs: [{name: partial-net}]
  rules:
    - matches: [{path: {type: RegularExpression, value: "/(?=x)"}}]
      backendRefs: [{name: web, port: 80}]
    - backendRefs: [{name: web, port: 80}]
`,
		check: func() error {
			if err := routeConds("partial", "half", "partial-net", "", accepted, resolved,
				cond("PartiallyInvalid", True, "UnsupportedValue")); err != nil {
				return err
			}
			r, _ := route("partial", "half")
			conds, _ := parent(r, "partial-net", "")
			for _, c := range conds {
				if c.Type == "PartiallyInvalid" && !strings.HasPrefix(c.Message, "Dropped Rule") {
					return fmt.Errorf("PartiallyInvalid message %q does not start with \"Dropped Rule\"", c.Message)
				}
			}
			cp := e.controlPlane(t)
			i := slices.IndexFunc(cp.Services, func(s model.Service) bool { return s.Name == "half-partial.partial-net" })
			if i < 0 || len(cp.Services[i].Rules) != 1 || cp.Services[i].Rules[0].Name != "rule-1" {
				return fmt.Errorf("service half-partial.partial-net: %+v", cp.Services)
			}
			return nil
		},
	}, {
		name: "namespace selector: admitted once the namespace has the label",
		objects: namespace("sel", "") + namespace("sel-team", "") +
			gatewayYAML("sel", "sel-net", "trellis",
				`[{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}]`) +
			routeYAML("HTTPRoute", "sel-team", "app", `{parentRefs: [{name: sel-net, namespace: sel}]}`),
		check: func() error {
			return routeConds("sel-team", "app", "sel-net", "", cond("Accepted", False, "NotAllowedByListeners"))
		},
		then: func(t *testing.T) {
			update(t, e.kc, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sel-team"}}, func(ns *corev1.Namespace) {
				ns.Labels["team"] = "a"
			})
		},
		thenCheck: func() error {
			return routeConds("sel-team", "app", "sel-net", "", accepted, resolved)
		},
	}, {
		name: "observedGeneration follows the spec",
		objects: namespace("gen", "") +
			gatewayYAML("gen", "gen-net", "trellis", httpListener) +
			routeYAML("HTTPRoute", "gen", "app", `{parentRefs: [{name: gen-net}]}`),
		check: func() error { return routeConds("gen", "app", "gen-net", "", accepted) },
		then: func(t *testing.T) {
			update(t, e.kc, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "gen", Name: "app"}}, func(r *gatewayv1.HTTPRoute) {
				r.Spec.Hostnames = []gatewayv1.Hostname{"app.example.com"}
			})
		},
		thenCheck: func() error {
			r, err := route("gen", "app")
			if err != nil {
				return err
			}
			if r.Generation < 2 {
				return fmt.Errorf("generation %d", r.Generation)
			}
			return routeConds("gen", "app", "gen-net", "", accepted, resolved)
		},
	}}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				e.create(t, tt.objects)
				testsync.Eventually(t, 20*time.Second, "status", tt.check)
				if tt.then != nil {
					tt.then(t)
					testsync.Eventually(t, 20*time.Second, "status after the change", tt.thenCheck)
				}
			})
		}
	})

	t.Run("GatewayClass accepted, versioned, featured, finalized while used", func(t *testing.T) {
		testsync.Eventually(t, 10*time.Second, "class status", func() error {
			gc := &gatewayv1.GatewayClass{}
			if err := e.kc.Get(ctx, types.NamespacedName{Name: "trellis"}, gc); err != nil {
				return err
			}
			if err := hasCondition(gc.Status.Conditions, "Accepted", True, "Accepted", gc.Generation); err != nil {
				return err
			}
			if err := hasCondition(gc.Status.Conditions, "SupportedVersion", True, "SupportedVersion", gc.Generation); err != nil {
				return err
			}
			if len(gc.Status.SupportedFeatures) == 0 {
				return errors.New("no supportedFeatures")
			}
			if !slices.Contains(gc.Finalizers, kubernetes.GatewayClassFinalizer) {
				return errors.New("no finalizer while Gateways use the class")
			}
			return nil
		})
	})

	t.Run("a resync that changes nothing sends and writes nothing", func(t *testing.T) {
		// Earlier cases' last reconciles and status writes may still be
		// running (their checks pass on the first status that shows, and
		// a Gateway's status waits out an interval after its last write);
		// measure from a controller that has been idle for a second.
		before := e.rec.Stats()
		for idle, deadline := time.Now(), time.Now().Add(20*time.Second); time.Since(idle) < time.Second; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the controller never went idle for a second")
			}
			if now := e.rec.Stats(); now.Reconciles != before.Reconciles || now.StatusWrites != before.StatusWrites {
				before, idle = now, time.Now()
			}
		}
		// A label on a Service is an event but changes no translation.
		update(t, e.kc, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "sn", Name: "web"}}, func(s *corev1.Service) {
			if s.Labels == nil {
				s.Labels = map[string]string{}
			}
			s.Labels["touched"] = "yes"
		})
		testsync.Eventually(t, 10*time.Second, "a reconcile", func() error {
			if e.rec.Stats().Reconciles <= before.Reconciles {
				return errors.New("no reconcile yet")
			}
			return nil
		})
		after := e.rec.Stats()
		if after.Sent != before.Sent || after.StatusWrites != before.StatusWrites {
			t.Errorf("a no-op reconcile sent %d transactions and made %d writes",
				after.Sent-before.Sent, after.StatusWrites-before.StatusWrites)
		}
	})
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
