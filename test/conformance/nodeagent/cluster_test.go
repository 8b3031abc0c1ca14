package nodeagent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	httputil "sigs.k8s.io/gateway-api/conformance/utils/http"
	kubeutil "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"

	"trellis.dev/trellis/test/conformance/nodeagent"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/testsync"
)

// podCIDR is where the test's Pods get addresses; kube.NodeIP is inside it
// and is skipped.
var podCIDR = netip.MustParsePrefix("198.18.0.0/17")

// TestAgentInCluster runs the agent against a real control plane and
// checks what the conformance harness relies on: a Ready node, Pods bound
// and Ready with 198.18 addresses, EndpointSlices published by the
// controller manager, echo servers reachable inside the namespace, pods/log,
// late Secrets, and deletion that finishes.
func TestAgentInCluster(t *testing.T) {
	c := kube.Start(t, kube.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agent, err := nodeagent.Start(ctx, nodeagent.Options{
		Config:  c.Config,
		NodeIP:  netip.MustParseAddr(kube.NodeIP),
		PodCIDR: podCIDR,
		Network: nodeagent.InNamespace(c.NS),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	cl := c.Client(t)
	cs := kubernetes.NewForConfigOrDie(c.Config)

	t.Run("node", func(t *testing.T) {
		var node corev1.Node
		kube.Get(ctx, t, cl, "", agent.NodeName(), &node)
		ready := slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		})
		if !ready || len(node.Status.Addresses) != 1 || node.Status.Addresses[0].Address != kube.NodeIP {
			t.Errorf("node status %+v", node.Status)
		}
		var lease coordinationv1.Lease
		kube.Get(ctx, t, cl, corev1.NamespaceNodeLease, agent.NodeName(), &lease)
		if lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > time.Minute {
			t.Errorf("lease not renewed: %+v", lease.Spec)
		}
	})

	const ns = "agent-test"
	kube.Create(ctx, t, cl, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	kube.Create(ctx, t, cl, echoDeployment(ns, "echo", 2, nil))
	kube.Create(ctx, t, cl, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(3000)}},
		},
	})
	pods := waitAvailable(ctx, t, cl, ns, "echo", 2)

	t.Run("pods", func(t *testing.T) {
		for _, p := range pods {
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !podCIDR.Contains(ip) || ip.String() == kube.NodeIP {
				t.Errorf("pod %s has IP %q, want one of %s other than the node's", p.Name, p.Status.PodIP, podCIDR)
			}
			if p.Spec.NodeName != agent.NodeName() || p.Status.HostIP != kube.NodeIP {
				t.Errorf("pod %s: node %q host IP %q", p.Name, p.Spec.NodeName, p.Status.HostIP)
			}
		}
	})

	t.Run("endpointslices", func(t *testing.T) {
		testsync.Eventually(t, 30*time.Second, "", func() error {
			var list discoveryv1.EndpointSliceList
			if err := cl.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: "echo"}); err != nil {
				return err
			}
			var got []string
			for _, s := range list.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						got = append(got, e.Addresses...)
					}
				}
			}
			for _, p := range pods {
				if !slices.Contains(got, p.Status.PodIP) {
					return fmt.Errorf("ready endpoints %v lack pod %s (%s)", got, p.Name, p.Status.PodIP)
				}
			}
			return nil
		})
	})

	t.Run("echo through the namespace", func(t *testing.T) {
		rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: config.DefaultTimeoutConfig(), CustomDialContext: c.NS.DialContext}
		for _, p := range pods {
			httputil.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, config.DefaultTimeoutConfig(),
				net.JoinHostPort(p.Status.PodIP, "3000"), httputil.ExpectedResponse{
					Request:   httputil.Request{Host: "echo.example", Path: "/agent-test"},
					Backend:   p.Name,
					Namespace: ns,
				})
		}
	})

	t.Run("pods/log", func(t *testing.T) {
		since := metav1.NewTime(time.Now().Add(-time.Minute))
		req := cs.CoreV1().Pods(ns).GetLogs(pods[0].Name, &corev1.PodLogOptions{Container: "echo", SinceTime: &since})
		stream, err := req.Stream(ctx)
		if err != nil {
			t.Fatalf("pods/log: %v", err)
		}
		defer stream.Close()
		logs, _ := io.ReadAll(stream)
		if !httputil.GetMirrorLogRegexp("/agent-test").Match(logs) {
			t.Errorf("pods/log lacks the echo line:\n%s", logs)
		}
	})

	t.Run("secret created after the pod", func(t *testing.T) {
		kube.Create(ctx, t, cl, echoDeployment(ns, "tls", 1, func(spec *corev1.PodSpec) {
			spec.Volumes = []corev1.Volume{{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: "late", Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "crt"}, {Key: "tls.key", Path: "key"}}}}}}
			c := &spec.Containers[0]
			c.VolumeMounts = []corev1.VolumeMount{{Name: "certs", MountPath: "/etc/secret-volume"}}
			c.Env = append(c.Env,
				corev1.EnvVar{Name: "TLS_SERVER_CERT", Value: "/etc/secret-volume/crt"},
				corev1.EnvVar{Name: "TLS_SERVER_PRIVKEY", Value: "/etc/secret-volume/key"})
		}))
		testsync.Eventually(t, 30*time.Second, "", func() error {
			var list corev1.PodList
			if err := cl.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": "tls"}); err != nil {
				return err
			}
			for _, p := range list.Items {
				for _, s := range p.Status.ContainerStatuses {
					if w := s.State.Waiting; w != nil && strings.Contains(w.Message, `secret "late" not found`) {
						return nil
					}
				}
			}
			return fmt.Errorf("no pod reports the missing secret yet")
		})
		kube.Create(ctx, t, cl, kubeutil.MustCreateSelfSignedCertSecret(t, ns, "late", []string{"abc.example.com"}))
		start := time.Now()
		waitAvailable(ctx, t, cl, ns, "tls", 1)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("pod took %v to start after its Secret appeared; want a few seconds at most", d)
		}
	})

	t.Run("deletion", func(t *testing.T) {
		start := time.Now()
		if err := cl.Delete(ctx, &pods[0]); err != nil {
			t.Fatal(err)
		}
		testsync.Eventually(t, 30*time.Second, "", func() error {
			var p corev1.Pod
			err := cl.Get(ctx, client.ObjectKeyFromObject(&pods[0]), &p)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("pod %s still there (deletion %v)", p.Name, p.DeletionTimestamp)
		})
		t.Logf("pod deleted in %v", time.Since(start))
		waitAvailable(ctx, t, cl, ns, "echo", 2)

		if err := cl.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		testsync.Eventually(t, time.Minute, "", func() error {
			var n corev1.Namespace
			if err := cl.Get(ctx, client.ObjectKey{Name: ns}, &n); apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("namespace %s still %s", ns, n.Status.Phase)
		})
		t.Logf("namespace deleted %v after the pod deletion started", time.Since(start))
	})
}

// echoDeployment is a Deployment of echo-basic like the suite's.
func echoDeployment(ns, name string, replicas int32, mutate func(*corev1.PodSpec)) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	spec := corev1.PodSpec{Containers: []corev1.Container{{
		Name:  name,
		Image: "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
	}}}
	if mutate != nil {
		mutate(&spec)
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
}

// waitAvailable waits for a Deployment's replicas to be available and
// returns its ready Pods.
func waitAvailable(ctx context.Context, t *testing.T, cl client.Client, ns, name string, replicas int32) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	testsync.Eventually(t, time.Minute, "", func() error {
		var d appsv1.Deployment
		if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return err
		}
		if d.Status.AvailableReplicas != replicas || d.Status.UpdatedReplicas != replicas || d.Status.Replicas != replicas {
			return fmt.Errorf("deployment %s: %d/%d available", name, d.Status.AvailableReplicas, replicas)
		}
		var list corev1.PodList
		if err := cl.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": name}); err != nil {
			return err
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
				pods = append(pods, p)
			}
		}
		if len(pods) != int(replicas) {
			return fmt.Errorf("deployment %s: %d pods with an IP, want %d", name, len(pods), replicas)
		}
		return nil
	})
	return pods
}
