package nodeagent

import (
	"context"
	"fmt"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// Heartbeat timing, as the kubelet's defaults: the Lease is renewed every
// 10 s and lasts 40 s; the Node's conditions are refreshed every minute.
const (
	leaseDuration   = 40 * time.Second
	leaseRenewEvery = 10 * time.Second
	statusEvery     = time.Minute
)

// capacity is what the Node offers: plenty, so no quota or fit check ever
// matters.
var capacity = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("64"),
	corev1.ResourceMemory: resource.MustParse("256Gi"),
	corev1.ResourcePods:   resource.MustParse("2000"),
}

// registerNode creates the Node (or takes over an existing one of the same
// name), reports it Ready, and creates its Lease.
func (a *Agent) registerNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.opts.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   a.opts.NodeName,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: runtime.GOARCH,
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: a.opts.PodCIDR.String(), PodCIDRs: []string{a.opts.PodCIDR.String()}},
	}
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		if created, err = nodes.Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if err := a.updateNodeStatus(ctx); err != nil {
		return err
	}
	a.nodeUID = created.UID
	return a.renewLease(ctx)
}

// updateNodeStatus writes the Node's status: Ready, no pressure, its one
// address (InternalIP only: the apiserver reaches the kubelet API by the
// first address of its preferred types, and a Hostname would need DNS),
// and the kubelet endpoint.
func (a *Agent) updateNodeStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
			c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
			for _, old := range node.Status.Conditions {
				if old.Type == t && old.Status == s {
					c.LastTransitionTime = old.LastTransitionTime
				}
			}
			return c
		}
		node.Status.Capacity = capacity
		node.Status.Allocatable = capacity
		node.Status.Phase = corev1.NodeRunning
		node.Status.Conditions = []corev1.NodeCondition{
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "trellis node agent is posting ready status"),
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.opts.NodeIP.String()}}
		node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(a.opts.KubeletPort)
		node.Status.NodeInfo = corev1.NodeSystemInfo{
			MachineID:               a.opts.NodeName,
			SystemUUID:              a.opts.NodeName,
			BootID:                  a.opts.NodeName,
			KernelVersion:           "n/a",
			OSImage:                 "trellis node agent",
			ContainerRuntimeVersion: "trellis-nodeagent://1",
			KubeletVersion:          "v1.36.3",
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
		}
		_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

// renewLease creates or renews kube-node-lease/<node>, owned by the Node
// so that it goes away with it.
func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.opts.NodeName, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.opts.NodeName),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		if a.nodeUID != "" {
			lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: a.opts.NodeName, UID: a.nodeUID}}
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.HolderIdentity = ptr.To(a.opts.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the Lease and refreshes the Node's status until ctx
// ends. Failures are logged and retried at the next tick: a missed beat or
// two is harmless (the node controller waits 50 s).
func (a *Agent) heartbeat(ctx context.Context) {
	lease := time.NewTicker(leaseRenewEvery)
	defer lease.Stop()
	status := time.NewTicker(statusEvery)
	defer status.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			err = a.renewLease(ctx)
		case <-status.C:
			err = a.updateNodeStatus(ctx)
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat failed", "err", fmt.Errorf("node %s: %w", a.opts.NodeName, err))
		}
	}
}
