package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"trellis.dev/trellis/test/conformance/backend"
)

// podRun is a Pod whose containers are running.
type podRun struct {
	uid        types.UID
	ip         netip.Addr
	containers []*backend.Instance
	started    metav1.Time
}

func (r *podRun) stop() {
	for _, c := range r.containers {
		c.Stop()
	}
}

// sync brings one Pod to where it should be: bound, running and reported,
// or stopped and gone.
func (a *Agent) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		a.forget(key, "")
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case pod.Spec.NodeName == "":
		return a.bind(ctx, pod)
	case pod.Spec.NodeName != a.opts.NodeName:
		return nil
	case pod.DeletionTimestamp != nil:
		return a.finishDeletion(ctx, key, pod)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		a.stopPod(key, "")
		return nil
	}

	a.mu.Lock()
	run := a.running[key]
	a.mu.Unlock()
	if run != nil && run.uid != pod.UID {
		// A new Pod of the same name: the old one is gone.
		a.forget(key, run.uid)
		run = nil
	}
	if run == nil {
		if run, err = a.startPod(ctx, key, pod); err != nil {
			return err
		}
	}
	if ready(pod, run) {
		return nil
	}
	return a.reportRunning(ctx, pod, run)
}

// bind assigns a pending Pod to this node, as the scheduler would. Pods
// for another scheduler are left alone.
func (a *Agent) bind(ctx context.Context, pod *corev1.Pod) error {
	if s := pod.Spec.SchedulerName; s != "" && s != corev1.DefaultSchedulerName {
		return nil
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: a.opts.NodeName},
	}, metav1.CreateOptions{})
	switch {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return nil // bound by someone else already, or gone
	case err != nil:
		return fmt.Errorf("binding: %w", err)
	}
	a.log.Debug("bound", "pod", pod.Namespace+"/"+pod.Name)
	return nil
}

// finishDeletion does what the kubelet does for a Pod being deleted: stop
// its containers at once, then remove the object (grace period 0, only if
// it is still the same Pod).
func (a *Agent) finishDeletion(ctx context.Context, key string, pod *corev1.Pod) error {
	a.forget(key, pod.UID)
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting: %w", err)
	}
	a.log.Debug("deleted", "pod", key)
	return nil
}

// stopPod stops a Pod's containers (uid "" matches any) but keeps its
// address and logs, for a Pod that still exists.
func (a *Agent) stopPod(key string, uid types.UID) {
	a.mu.Lock()
	run := a.running[key]
	if run != nil && (uid == "" || run.uid == uid) {
		delete(a.running, key)
	} else {
		run = nil
	}
	a.mu.Unlock()
	if run != nil {
		run.stop()
	}
}

// forget stops a Pod that is gone or going and frees everything it held:
// containers, address and logs.
func (a *Agent) forget(key string, uid types.UID) {
	a.mu.Lock()
	run := a.running[key]
	if run != nil && uid != "" && run.uid != uid {
		run = nil
	}
	if run != nil {
		delete(a.running, key)
	}
	delete(a.logs, key)
	a.mu.Unlock()
	if run != nil {
		run.stop()
		a.ipam.release(run.uid)
		a.log.Debug("stopped", "pod", key, "ip", run.ip)
	}
	if uid != "" {
		a.ipam.release(uid)
	}
}

// startPod gives the Pod an address and starts its containers. When one
// cannot start (a Secret it mounts does not exist yet, say), the ones
// already started are stopped, the reason is reported in the Pod's status,
// and the error makes the caller retry.
func (a *Agent) startPod(ctx context.Context, key string, pod *corev1.Pod) (*podRun, error) {
	ip := a.opts.NodeIP
	if !pod.Spec.HostNetwork {
		var err error
		if ip, err = a.ipam.allocate(pod.UID, pod.Status.PodIP); err != nil {
			return nil, err
		}
	}
	run := &podRun{uid: pod.UID, ip: ip, started: metav1.Now()}
	res := newResolver(a.client, pod, ip, a.opts.NodeIP)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		inst, err := a.startContainer(ctx, key, res, c, ip)
		if err != nil {
			run.stop()
			err = fmt.Errorf("container %s: %w", c.Name, err)
			if serr := a.reportWaiting(ctx, pod, ip, c.Name, err); serr != nil {
				err = errors.Join(err, serr)
			}
			return nil, err
		}
		run.containers = append(run.containers, inst)
	}
	a.mu.Lock()
	a.running[key] = run
	a.mu.Unlock()
	a.log.Debug("started", "pod", key, "ip", ip)
	return run, nil
}

// startContainer resolves and runs one container, writing to its log.
func (a *Agent) startContainer(ctx context.Context, key string, res *resolver, c *corev1.Container, ip netip.Addr) (*backend.Instance, error) {
	env, err := res.env(ctx, c)
	if err != nil {
		return nil, err
	}
	files, err := res.files(ctx, c)
	if err != nil {
		return nil, err
	}
	var ports []backend.Port
	for _, p := range c.Ports {
		ports = append(ports, backend.Port{Port: p.ContainerPort, Protocol: string(p.Protocol)})
	}
	return backend.Run(backend.Container{
		Image:   c.Image,
		Args:    c.Args,
		Env:     env,
		Files:   files,
		Ports:   ports,
		IP:      ip,
		Stdout:  a.containerLog(key, c.Name),
		Network: a.opts.Network,
	})
}

// containerLog returns the container's log, creating it on first use. It
// outlives restarts of the container and goes away with the Pod.
func (a *Agent) containerLog(key, container string) *Log {
	a.mu.Lock()
	defer a.mu.Unlock()
	byContainer := a.logs[key]
	if byContainer == nil {
		byContainer = map[string]*Log{}
		a.logs[key] = byContainer
	}
	l := byContainer[container]
	if l == nil {
		l = newLog()
		byContainer[container] = l
	}
	return l
}

// ready reports whether the Pod's status already says what run says.
func ready(pod *corev1.Pod, run *podRun) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != run.ip.String() {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// reportRunning writes the status of a Pod whose containers all run.
func (a *Agent) reportRunning(ctx context.Context, pod *corev1.Pod, run *podRun) error {
	return a.updateStatus(ctx, pod, func(st *corev1.PodStatus, spec *corev1.PodSpec) {
		st.Phase = corev1.PodRunning
		st.Reason, st.Message = "", ""
		a.setIPs(st, run.ip)
		if st.StartTime == nil {
			st.StartTime = &run.started
		}
		for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
			setCondition(st, t, corev1.ConditionTrue, "", "")
		}
		st.ContainerStatuses = nil
		for _, c := range spec.Containers {
			st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
				Name:        c.Name,
				Image:       c.Image,
				ImageID:     c.Image,
				ContainerID: "trellis://" + string(pod.UID) + "/" + c.Name,
				Ready:       true,
				Started:     ptr.To(true),
				State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: run.started}},
			})
		}
		st.InitContainerStatuses = initCompleted(pod, spec, run.started)
	})
}

// reportWaiting writes the status of a Pod whose container failed cause.
func (a *Agent) reportWaiting(ctx context.Context, pod *corev1.Pod, ip netip.Addr, failed string, cause error) error {
	return a.updateStatus(ctx, pod, func(st *corev1.PodStatus, spec *corev1.PodSpec) {
		st.Phase = corev1.PodPending
		a.setIPs(st, ip)
		msg := "containers with unready status: [" + failed + "]"
		setCondition(st, corev1.PodReadyToStartContainers, corev1.ConditionTrue, "", "")
		setCondition(st, corev1.PodInitialized, corev1.ConditionTrue, "", "")
		setCondition(st, corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", msg)
		setCondition(st, corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", msg)
		setCondition(st, corev1.PodScheduled, corev1.ConditionTrue, "", "")
		st.ContainerStatuses = nil
		for _, c := range spec.Containers {
			cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Started: ptr.To(false),
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
			if c.Name == failed {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: cause.Error()}
			}
			st.ContainerStatuses = append(st.ContainerStatuses, cs)
		}
		st.InitContainerStatuses = initCompleted(pod, spec, metav1.Now())
	})
}

// initCompleted reports init containers as having run to completion; they
// are not emulated.
func initCompleted(pod *corev1.Pod, spec *corev1.PodSpec, at metav1.Time) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, c := range spec.InitContainers {
		out = append(out, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true,
			ContainerID: "trellis://" + string(pod.UID) + "/" + c.Name,
			State:       corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed", StartedAt: at, FinishedAt: at}},
		})
	}
	return out
}

func (a *Agent) setIPs(st *corev1.PodStatus, ip netip.Addr) {
	st.HostIP = a.opts.NodeIP.String()
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	st.PodIP = ip.String()
	st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
}

// setCondition sets a Pod condition, keeping its transition time when the
// status does not change.
func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != s {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = s, reason, msg
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: now})
}

// updateStatus applies change to the latest version of the Pod's status,
// retrying on conflicts. A Pod that has gone, or been replaced by another
// of the same name, is left alone.
func (a *Agent) updateStatus(ctx context.Context, pod *corev1.Pod, change func(*corev1.PodStatus, *corev1.PodSpec)) error {
	pods := a.client.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID || cur.DeletionTimestamp != nil {
			return nil
		}
		change(&cur.Status, &cur.Spec)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating status of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
