package conformance_test

import (
	"context"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// stubController is the harness's stand-in for a Gateway implementation:
// it accepts GatewayClasses that name it and marks their Gateways Accepted
// and Programmed with a fixed address. Nothing listens there; it only lets
// the suite's Setup finish without Trellis.
const stubController gatewayv1.GatewayController = "trellis.dev/conformance-harness-stub"

// stubAddress is the address the stub gives every Gateway.
const stubAddress = "198.18.254.254"

// runStub runs the stub until the test ends.
func runStub(t *testing.T, cl client.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	var done sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		done.Wait()
	})
	done.Go(func() {
		for ctx.Err() == nil {
			if err := stubPass(ctx, cl); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) {
				t.Logf("stub controller: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}

// stubPass updates the status of every stub-owned object once.
func stubPass(ctx context.Context, cl client.Client) error {
	var classes gatewayv1.GatewayClassList
	if err := cl.List(ctx, &classes); err != nil {
		return err
	}
	ours := map[string]bool{}
	for i := range classes.Items {
		gc := &classes.Items[i]
		if gc.Spec.ControllerName != stubController {
			continue
		}
		ours[gc.Name] = true
		if setTrue(&gc.Status.Conditions, gc.Generation, string(gatewayv1.GatewayClassConditionStatusAccepted)) {
			if err := cl.Status().Update(ctx, gc); err != nil {
				return err
			}
		}
	}
	var gateways gatewayv1.GatewayList
	if err := cl.List(ctx, &gateways); err != nil {
		return err
	}
	for i := range gateways.Items {
		gw := &gateways.Items[i]
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		changed := setTrue(&gw.Status.Conditions, gw.Generation, string(gatewayv1.GatewayConditionAccepted))
		changed = setTrue(&gw.Status.Conditions, gw.Generation, string(gatewayv1.GatewayConditionProgrammed)) || changed
		if len(gw.Status.Addresses) == 0 {
			gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: stubAddress}}
			changed = true
		}
		if changed {
			if err := cl.Status().Update(ctx, gw); err != nil {
				return err
			}
		}
	}
	return nil
}

// setTrue sets condition t to True for generation; it reports whether
// anything changed.
func setTrue(conds *[]metav1.Condition, generation int64, t string) bool {
	if c := meta.FindStatusCondition(*conds, t); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == generation {
		return false
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: t, Status: metav1.ConditionTrue, Reason: t, ObservedGeneration: generation,
		Message: "accepted by the conformance harness's stub controller",
	})
	return true
}
