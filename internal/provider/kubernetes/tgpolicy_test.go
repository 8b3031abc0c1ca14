package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// tgpYAML is a TargetGroupPolicy in namespace ns on Service svc, with
// healthCheck (a YAML flow mapping).
func tgpYAML(ns, name, svc, healthCheck string) string {
	return fmt.Sprintf(`
apiVersion: trellis.dev/v1alpha1
kind: TargetGroupPolicy
metadata: {name: %s, namespace: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: %s}]
  healthCheck: %s
---
`, name, ns, svc, healthCheck)
}

// policyAccepted checks that policy name's status has one ancestor, whose
// Accepted condition has reason (True for "Accepted", else False) and
// the policy's generation.
func policyAccepted(name string, st gatewayv1.PolicyStatus, generation int64, reason string) error {
	if len(st.Ancestors) != 1 {
		return fmt.Errorf("policy %s: %d ancestors in status", name, len(st.Ancestors))
	}
	status := False
	if reason == "Accepted" {
		status = True
	}
	if err := hasCondition(st.Ancestors[0].Conditions, "Accepted", status, reason, generation); err != nil {
		return fmt.Errorf("policy %s: %w", name, err)
	}
	return nil
}

// TestTargetGroupPolicy: a TargetGroupPolicy on a Service sets its target
// group's health check in the control plane, and the proxy's checks reach
// the target at the policy's path; a change of the policy changes both. A
// younger policy on the same Service is Conflicted, one on a Service that
// is not there TargetNotFound until it is created, each condition of the
// policy's generation.
// The CRD refuses an interval out of range, naming the field.
func TestTargetGroupPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.proxy(t, proxyBind)

	// The target answers 200 and records the paths the proxy's health
	// checks ask for.
	var mu sync.Mutex
	var checked []string
	ln, err := e.NS.Listen("tcp", "198.18.72.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Trellis-HealthChecker") {
			mu.Lock()
			checked = append(checked, r.URL.Path)
			mu.Unlock()
		}
		w.Write([]byte("web"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	sawCheck := func(path string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if !slices.Contains(checked, path) {
				return fmt.Errorf("no health check at %s; checks asked for %v", path, checked)
			}
			return nil
		}
	}

	e.create(t, classes+edgeGateway("tgp")+backend("tgp", "web", "198.18.72.1")+
		routeYAML("HTTPRoute", "tgp", "web", `{parentRefs: [{name: web}], hostnames: [web.tgp.example], rules: [{backendRefs: [{name: web, port: 80}]}]}`)+
		tgpYAML("tgp", "checks", "web", `{intervalSeconds: 5, healthyThresholdCount: 2, path: /tgp-ready, statusMatch: "200-299"}`))
	// Younger by a second at least: creationTimestamp has seconds.
	time.Sleep(1100 * time.Millisecond)
	e.create(t, tgpYAML("tgp", "later", "web", `{path: /later}`)+tgpYAML("tgp", "missing", "nothing", `{path: /x}`))

	policyIs := func(name, reason string) func() error {
		return func() error {
			var p v1alpha1.TargetGroupPolicy
			if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "tgp", Name: name}, &p); err != nil {
				return err
			}
			return policyAccepted(name, p.Status, p.Generation, reason)
		}
	}
	checkPath := func(want string) func() error {
		return func() error {
			cp := e.controlPlane(t)
			i := slices.IndexFunc(cp.TargetGroups, func(tg model.TargetGroup) bool {
				return tg.Source != nil && tg.Source.Namespace == "tgp" && tg.Source.Name == "web"
			})
			if i < 0 {
				return errors.New("no target group of Service tgp/web in the control plane")
			}
			if hc := cp.TargetGroups[i].HealthCheck; hc.Path != want || hc.IntervalSeconds != 5 {
				return fmt.Errorf("target group %s checks %q every %d s; want %q every 5 s", cp.TargetGroups[i].Name, hc.Path, hc.IntervalSeconds, want)
			}
			return nil
		}
	}
	testsync.Eventually(t, time.Minute, "the oldest policy applies and the proxy checks its path", all(
		policyIs("checks", "Accepted"), policyIs("later", "Conflicted"), policyIs("missing", "TargetNotFound"),
		checkPath("/tgp-ready"), sawCheck("/tgp-ready")))

	update(t, e.kc, &v1alpha1.TargetGroupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "tgp", Name: "checks"}}, func(p *v1alpha1.TargetGroupPolicy) {
		p.Spec.HealthCheck.Path = ptr("/tgp-ready-v2")
	})
	testsync.Eventually(t, time.Minute, "the changed path checked", all(policyIs("checks", "Accepted"), checkPath("/tgp-ready-v2"), sawCheck("/tgp-ready-v2")))

	// The missing Service created: that policy's status follows (a
	// Service's change reaches the policies targeting it), the others
	// keep theirs.
	e.create(t, backend("tgp", "nothing", "198.18.72.2"))
	testsync.Eventually(t, time.Minute, "the policy of the new Service accepted", all(
		policyIs("missing", "Accepted"), policyIs("later", "Conflicted"), policyIs("checks", "Accepted")))

	// The API server refuses what is out of the CRD's bounds, naming the
	// field.
	bad := &v1alpha1.TargetGroupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tgp", Name: "too-often"},
		Spec: v1alpha1.TargetGroupPolicySpec{
			TargetRefs:  []gatewayv1.LocalPolicyTargetReference{{Kind: "Service", Name: "web"}},
			HealthCheck: &v1alpha1.HealthCheckPolicy{IntervalSeconds: ptr(int32(3))},
		},
	}
	err = e.kc.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "spec.healthCheck.intervalSeconds") {
		t.Errorf("creating a policy of intervalSeconds 3: %v; want a refusal naming spec.healthCheck.intervalSeconds", err)
	}
}
