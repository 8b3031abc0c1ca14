package kubernetes

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/translate"
)

func TestConditionsKeepTransitionTimeWhileStatusHolds(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(then.Add(time.Hour))
	have := []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: then, ObservedGeneration: 1},
		{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", LastTransitionTime: then, ObservedGeneration: 1},
	}
	want := []translate.Condition{
		{Type: "Accepted", Status: true, Reason: "Accepted"},                                 // unchanged
		{Type: "ResolvedRefs", Status: false, Reason: "BackendNotFound", Message: "missing"}, // flipped
		{Type: "PartiallyInvalid", Status: true, Reason: "UnsupportedValue"},                 // new
	}
	got := conditions(want, have, 2, now)
	tests := []struct {
		typ  string
		time metav1.Time
		st   metav1.ConditionStatus
	}{
		{"Accepted", then, metav1.ConditionTrue},
		{"ResolvedRefs", now, metav1.ConditionFalse},
		{"PartiallyInvalid", now, metav1.ConditionTrue},
	}
	for i, tt := range tests {
		c := got[i]
		if c.Type != tt.typ || !c.LastTransitionTime.Equal(&tt.time) || c.Status != tt.st || c.ObservedGeneration != 2 {
			t.Errorf("condition %d = %+v; want type %s, status %s, time %v, generation 2", i, c, tt.typ, tt.st, tt.time)
		}
	}
}

func TestRouteStatusKeepsOtherControllersParents(t *testing.T) {
	now := metav1.Now()
	theirs := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "other"}, ControllerName: "example.com/gateway"}
	stale := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gone"}, ControllerName: translate.EdgeController}
	have := gatewayv1.RouteStatus{Parents: []gatewayv1.RouteParentStatus{theirs, stale}}
	st := &translate.RouteStatus{Parents: []translate.RouteParentStatus{{
		ParentRef: gatewayv1.ParentReference{Name: "web"}, ControllerName: translate.EdgeController,
		Conditions: []translate.Condition{{Type: "Accepted", Status: true, Reason: "Accepted"}},
	}}}
	tests := []struct {
		name string
		st   *translate.RouteStatus
		want []gatewayv1.ObjectName
	}{
		{"ours replaced, theirs kept", st, []gatewayv1.ObjectName{"other", "web"}},
		{"no longer ours: ours removed", nil, []gatewayv1.ObjectName{"other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := routeStatus(tt.st, have, 3, now)
			var names []gatewayv1.ObjectName
			for _, p := range got.Parents {
				names = append(names, p.ParentRef.Name)
			}
			if len(names) != len(tt.want) {
				t.Fatalf("parents %v, want %v", names, tt.want)
			}
			for i := range names {
				if names[i] != tt.want[i] {
					t.Fatalf("parents %v, want %v", names, tt.want)
				}
			}
		})
	}
}

// A route parent's or a policy ancestor's conditions keep their transition
// times from the entry the same controller wrote for the same ref, never
// from another controller's entry for that ref or from another ref's.
func TestEntryConditionsKeepTheirOwnEntrysTimes(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(then.Add(time.Hour))
	web, shop := gatewayv1.ParentReference{Name: "web"}, gatewayv1.ParentReference{Name: "shop"}
	accepted := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: then}}
	wantAccepted := []translate.Condition{{Type: "Accepted", Status: true, Reason: "Accepted"}}
	type entry struct {
		controller gatewayv1.GatewayController
		ref        gatewayv1.ParentReference
	}
	tests := []struct {
		name string
		have entry
		want metav1.Time
	}{
		{"same controller, same ref", entry{translate.EdgeController, web}, then},
		{"another controller's entry for the ref", entry{"example.com/gateway", web}, now},
		{"same controller, another ref", entry{translate.EdgeController, shop}, now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := routeStatus(&translate.RouteStatus{Parents: []translate.RouteParentStatus{{
				ParentRef: web, ControllerName: translate.EdgeController, Conditions: wantAccepted,
			}}}, gatewayv1.RouteStatus{Parents: []gatewayv1.RouteParentStatus{{
				ParentRef: tt.have.ref, ControllerName: tt.have.controller, Conditions: accepted,
			}}}, 2, now)
			i := len(route.Parents) - 1 // another controller's entry is kept first
			if got := route.Parents[i].Conditions[0].LastTransitionTime; !got.Equal(&tt.want) {
				t.Errorf("route parent: transition time %v, want %v", got, tt.want)
			}
			policy := policyStatus(translate.PolicyStatus{Ancestors: []translate.PolicyAncestorStatus{{
				AncestorRef: web, ControllerName: translate.EdgeController, Conditions: wantAccepted,
			}}}, gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{{
				AncestorRef: tt.have.ref, ControllerName: tt.have.controller, Conditions: accepted,
			}}}, 2, now)
			if got := policy.Ancestors[0].Conditions[0].LastTransitionTime; !got.Equal(&tt.want) {
				t.Errorf("policy ancestor: transition time %v, want %v", got, tt.want)
			}
		})
	}
}
