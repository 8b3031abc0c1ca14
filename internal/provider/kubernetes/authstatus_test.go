package kubernetes_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/test/testsync"
)

// TestAuthPolicyStatusCostsWhatChanged puts an AuthPolicy on each of 20
// routes and checks that a change compares the status of the policies it
// concerns, not all 20, while every policy still ends with the right
// condition: a route moved off the Gateway (the policy unchanged) makes
// its policy TargetNotFound; a route deleted, the same; a policy
// retargeted onto a route that has a younger policy makes that other,
// unchanged, policy Conflicted. A controller that compared only the
// policies that changed themselves would miss all three.
func TestAuthPolicyStatusCostsWhatChanged(t *testing.T) {
	const routes = 20
	ctx := context.Background()
	e := newEnv(t)
	var policies strings.Builder
	for i := range routes {
		policies.WriteString(authPolicyYAML("aps", fmt.Sprintf("p-%d", i), fmt.Sprintf("r-%d", i), `{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}`))
	}
	e.create(t, classes+edgeGateway("aps")+backend("aps", "web", "198.18.73.1")+webRoutes("aps", routes)+policies.String())

	policyIs := func(name, reason string) error {
		var p v1alpha1.AuthPolicy
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "aps", Name: name}, &p); err != nil {
			return err
		}
		return policyAccepted(name, p.Status, p.Generation, reason)
	}
	// want is each policy's reason; Accepted for those not named.
	expect := func(want map[string]string) func() error {
		return func() error {
			for i := range routes {
				name := fmt.Sprintf("p-%d", i)
				reason := want[name]
				if reason == "" {
					reason = "Accepted"
				}
				if err := policyIs(name, reason); err != nil {
					return err
				}
			}
			return nil
		}
	}
	// checked asserts that the latest reconcile compared at most n
	// policies' status.
	checked := func(what string, n int) {
		t.Helper()
		if got := e.rec.Stats().PoliciesChecked; got > n {
			t.Errorf("%s: the latest reconcile compared the status of %d policies; want at most %d", what, got, n)
		}
	}
	// quiet waits for a reconcile that compares no policy's status: the
	// events of the status writes before (which reach the controller's
	// copy without a reconcile of their own) are behind it. It changes a
	// label of route r-19 (no policy's status depends on it) to have one.
	touches := 0
	quiet := func() {
		t.Helper()
		testsync.Eventually(t, time.Minute, "a reconcile that compares no policy", func() error {
			n := e.rec.Stats().Reconciles
			touches++
			update(t, e.kc, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "aps", Name: "r-19"}}, func(r *gatewayv1.HTTPRoute) {
				r.Labels = map[string]string{"touch": fmt.Sprint(touches)}
			})
			testsync.Eventually(t, 30*time.Second, "the label's reconcile", func() error {
				if st := e.rec.Stats(); st.Reconciles <= n || st.StatusQueued > 0 {
					return fmt.Errorf("%d reconciles, %d status writes queued", st.Reconciles, st.StatusQueued)
				}
				return nil
			})
			if got := e.rec.Stats().PoliciesChecked; got != 0 {
				return fmt.Errorf("the reconcile compared %d policies", got)
			}
			return nil
		})
	}
	want := map[string]string{}
	testsync.Eventually(t, time.Minute, "every policy Accepted", expect(want))
	quiet()

	// A route moved to a Gateway that is not there: its policy, unchanged,
	// finds no target.
	update(t, e.kc, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "aps", Name: "r-3"}}, func(r *gatewayv1.HTTPRoute) {
		r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "elsewhere"}}
	})
	want["p-3"] = "TargetNotFound"
	testsync.Eventually(t, time.Minute, "the moved route's policy TargetNotFound", expect(want))
	checked("a route moved", 1)
	quiet()

	// A route deleted: its policy finds no target.
	if err := e.kc.Delete(ctx, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "aps", Name: "r-5"}}); err != nil {
		t.Fatal(err)
	}
	want["p-5"] = "TargetNotFound"
	testsync.Eventually(t, time.Minute, "the deleted route's policy TargetNotFound", expect(want))
	checked("a route deleted", 1)
	quiet()

	// p-7 retargeted onto r-8: p-7, created before p-8, keeps r-8 and p-8
	// is Conflicted there.
	update(t, e.kc, &v1alpha1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "aps", Name: "p-7"}}, func(p *v1alpha1.AuthPolicy) {
		p.Spec.TargetRefs[0].Name = "r-8"
	})
	want["p-8"] = "Conflicted"
	testsync.Eventually(t, time.Minute, "the retargeted policy Accepted, the younger one Conflicted", expect(want))
	checked("a policy retargeted", 2)

	// r-3 back on the Gateway, r-5 created again: their policies apply.
	update(t, e.kc, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "aps", Name: "r-3"}}, func(r *gatewayv1.HTTPRoute) {
		r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "web"}}
	})
	e.create(t, routeYAML("HTTPRoute", "aps", "r-5", "{parentRefs: [{name: web}], hostnames: [r-5.aps.example], rules: [{backendRefs: [{name: web, port: 80}]}]}"))
	delete(want, "p-3")
	delete(want, "p-5")
	testsync.Eventually(t, time.Minute, "the routes' policies Accepted again", expect(want))
}
