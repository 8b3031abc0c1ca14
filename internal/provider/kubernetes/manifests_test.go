package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// manifestsDir is the install manifests (`kubectl apply -k config/`), and
// memberManifestsDir those of a member cluster of a multi-cluster control
// plane.
const (
	manifestsDir       = "../../../config"
	memberManifestsDir = "../../../config/multicluster"
)

// TestManifests installs trellis in a real apiserver, with the kustomize
// manifests (`kubectl apply -k config/`) and with the Helm chart (`helm
// install`, its default values) in turn: every object must be valid there.
// It runs the controller as the ServiceAccount they define, with their RBAC
// and leader election as deployed: if a role lacks a permission the
// controller needs, a Gateway or route below never gets its status, and the
// controller's log says what was forbidden.
func TestManifests(t *testing.T) {
	for _, source := range []struct {
		name    string
		install func(t *testing.T, c *kube.Cluster, kc client.Client) []*unstructured.Unstructured
	}{
		{"kustomize", func(t *testing.T, _ *kube.Cluster, kc client.Client) []*unstructured.Unstructured {
			objs := readKustomization(t, manifestsDir)
			applyObjects(t, kc, manifestsDir, objs)
			return objs
		}},
		{"helm", func(t *testing.T, c *kube.Cluster, kc client.Client) []*unstructured.Unstructured {
			// As docs/install.md: the namespace first, for the Secrets.
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}
			if err := kc.Create(context.Background(), ns); err != nil {
				t.Fatal(err)
			}
			return helmInstall(t, c)
		}},
	} {
		t.Run(source.name, func(t *testing.T) {
			testManifests(t, func(c *kube.Cluster, kc client.Client) []*unstructured.Unstructured { return source.install(t, c, kc) })
		})
	}
}

// applyObjects creates objs, read from source, as `kubectl apply` would.
func applyObjects(t *testing.T, kc client.Client, source string, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	// Namespaces first, as kubectl orders them.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolRank(a.GetKind() != "Namespace") - boolRank(b.GetKind() != "Namespace")
	})
	for _, o := range objs {
		err := kc.Create(ctx, o)
		if apierrors.IsAlreadyExists(err) && o.GetKind() == "CustomResourceDefinition" {
			// test/kube installs the same files in every cluster.
			continue
		}
		if err != nil {
			t.Fatalf("applying %s %s/%s from %s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), source, err)
		}
	}
}

// testManifests is TestManifests for the objects install puts in the
// cluster.
func testManifests(t *testing.T, install func(c *kube.Cluster, kc client.Client) []*unstructured.Unstructured) {
	var logs testsync.Buffer
	e := newEnvWith(t, envOptions{
		leaderElectionNamespace: "trellis-system",
		logs:                    &logs,
		identity: func(c *kube.Cluster, kc client.Client) *rest.Config {
			return serviceAccountConfig(t, c, kc, controllerAccount(t, install(c, kc)))
		},
	})

	ca := pki.NewCA(t)
	e.create(t, classes+namespace("infra", "")+namespace("shop", "")+backend("shop", "web", "198.18.60.1")+
		gatewayYAML("infra", "edge", "trellis-edge", `[
  {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}},
  {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: edge-cert}]}, allowedRoutes: {namespaces: {from: All}}}]`)+
		gatewayYAML("infra", "mesh", "trellis", `[{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}]`)+
		routeYAML("HTTPRoute", "shop", "web", `{parentRefs: [{name: edge, namespace: infra}, {name: mesh, namespace: infra}], rules: [{backendRefs: [{name: web, port: 80}]}]}`)+
		authPolicyYAML("shop", "web-readers", "web", `{Effect: Allow, Principal: "*", Action: "trellis:Invoke", Resource: "*", Condition: {StringEquals: {"trellis:RequestMethod": GET}}}`))
	e.tlsSecret(t, ca, "infra", "edge-cert", "shop.example.com")

	ctx := context.Background()
	for _, gw := range []string{"edge", "mesh"} {
		testsync.Eventually(t, 30*time.Second, "Gateway "+gw+" Programmed", func() error {
			var g gatewayv1.Gateway
			if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "infra", Name: gw}, &g); err != nil {
				return err
			}
			return hasCondition(g.Status.Conditions, "Programmed", True, "Programmed", g.Generation)
		})
	}
	testsync.Eventually(t, 30*time.Second, "the route accepted by both Gateways, its refs resolved, its name assigned", func() error {
		var r gatewayv1.HTTPRoute
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &r); err != nil {
			return err
		}
		if len(r.Status.Parents) != 2 {
			return fmt.Errorf("%d parents in status, want 2", len(r.Status.Parents))
		}
		for _, p := range r.Status.Parents {
			if err := hasCondition(p.Conditions, "Accepted", True, "Accepted", r.Generation); err != nil {
				return fmt.Errorf("parent %s: %w", p.ParentRef.Name, err)
			}
			if err := hasCondition(p.Conditions, "ResolvedRefs", True, "ResolvedRefs", r.Generation); err != nil {
				return fmt.Errorf("parent %s: %w", p.ParentRef.Name, err)
			}
		}
		if r.Annotations[kubernetes.AssignedDomainNameAnnotation] == "" {
			return errors.New("no assigned domain name")
		}
		return nil
	})
	var class gatewayv1.GatewayClass
	if err := e.kc.Get(ctx, types.NamespacedName{Name: "trellis-edge"}, &class); err != nil {
		t.Fatal(err)
	}
	if len(class.Finalizers) == 0 {
		t.Error("the controller put no finalizer on its GatewayClass")
	}
	testsync.Eventually(t, 30*time.Second, "the AuthPolicy accepted at both Gateways", func() error {
		var p v1alpha1.AuthPolicy
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web-readers"}, &p); err != nil {
			return err
		}
		if len(p.Status.Ancestors) != 2 {
			return fmt.Errorf("%d ancestors in status, want 2", len(p.Status.Ancestors))
		}
		for _, a := range p.Status.Ancestors {
			if err := hasCondition(a.Conditions, "Accepted", True, "Accepted", p.Generation); err != nil {
				return fmt.Errorf("ancestor %s: %w", a.AncestorRef.Name, err)
			}
		}
		return nil
	})
	// A pod of the shop namespace, running with an address (set as a
	// kubelet would; there is none here), becomes a workload identity.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "frontend-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "frontend", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if err := e.kc.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.60.7", PodIPs: []corev1.PodIP{{IP: "198.18.60.7"}}}
	if err := e.kc.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	testsync.Eventually(t, 30*time.Second, "the pod's identity in the control plane", func() error {
		for _, s := range e.controlPlane(t).WorkloadSets {
			if s.Name == "shop."+cluster && len(s.Workloads) == 1 && s.Workloads[0] == (model.Workload{Address: "198.18.60.7", ServiceAccount: "frontend"}) {
				return nil
			}
		}
		return fmt.Errorf("no WorkloadSet shop.%s naming 198.18.60.7 as frontend in %+v", cluster, e.controlPlane(t).WorkloadSets)
	})
	// Multi-Cluster Services under the same RBAC: exporting web sends the
	// export, writes its conditions and creates its ServiceImport.
	if err := e.kc.Create(ctx, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	testsync.Eventually(t, 30*time.Second, "web's ServiceExport Ready and its ServiceImport created", func() error {
		var se mcsv1beta1.ServiceExport
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &se); err != nil {
			return err
		}
		if err := hasCondition(se.Status.Conditions, "Ready", True, "Exported", se.Generation); err != nil {
			return err
		}
		var si mcsv1beta1.ServiceImport
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &si); err != nil {
			return err
		}
		if len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != cluster {
			return fmt.Errorf("import status clusters %v", si.Status.Clusters)
		}
		return nil
	})
	cp := e.controlPlane(t)
	if len(cp.Certificates) != 1 || len(cp.Services) != 2 {
		t.Errorf("control plane holds %d certificates and %d services, want 1 and 2", len(cp.Certificates), len(cp.Services))
	}
	for _, s := range cp.Services {
		if s.Auth == nil || s.Auth.Source == nil || s.Auth.Source.Name != "web-readers" {
			t.Errorf("service %s reached the control plane with auth %+v, want the web-readers policy", s.Name, s.Auth)
		}
	}
	if out := logs.String(); strings.Contains(out, "forbidden") {
		t.Errorf("the controller was refused something its RBAC should grant:\n%s", out)
	}

	// A controller that stops (a rolling update) hands its Lease back, so
	// that the next replica leads at once rather than after the lease runs
	// out.
	if err := e.stop(); err != nil {
		t.Fatalf("controller: %v", err)
	}
	var lease coordinationv1.Lease
	if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "trellis-system", Name: "trellis-controller.trellis.dev"}, &lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the stopped controller still holds its Lease (holder %q)", *h)
	}
}

// TestManifestArgs runs every trellis container's command line from the
// install manifests and the chart's renders with --help added: a flag the
// binary does not have (a typo, a renamed flag) fails here rather than in a
// crash-looping Pod.
func TestManifestArgs(t *testing.T) {
	for _, c := range []struct {
		source string
		objs   []*unstructured.Unstructured
		want   int
	}{
		{manifestsDir, readKustomization(t, manifestsDir), 3},
		{memberManifestsDir, readKustomization(t, memberManifestsDir), 2},
		{"the chart", renderChart(t), 3},
		{"the chart, member", renderChart(t, memberValues(t)), 2},
		{"the chart, logLevel", renderChart(t, `logLevel: warn`), 3},
		{"the chart, member, logLevel", renderChart(t, memberValues(t), `logLevel: error`), 2},
	} {
		if n := runManifestArgs(t, c.objs); n < c.want {
			t.Errorf("found %d trellis containers in %s, want %d", n, c.source, c.want)
		}
	}
}

// runManifestArgs runs the trellis containers of objs with --help and
// returns how many there are.
func runManifestArgs(t *testing.T, objs []*unstructured.Unstructured) int {
	n := 0
	for _, o := range objs {
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			c, _ := c.(map[string]any)
			image, _ := c["image"].(string)
			if !strings.HasPrefix(image, "trellis") {
				continue
			}
			args, _, err := unstructured.NestedStringSlice(c, "args")
			if err != nil || len(args) == 0 {
				t.Errorf("%s %s container %v: no args (%v)", o.GetKind(), o.GetName(), c["name"], err)
				continue
			}
			n++
			out, err := exec.Command(trellisBin, append(args, "--help")...).CombinedOutput()
			if err != nil {
				t.Errorf("%s %s: trellis %s: %v\n%s", o.GetKind(), o.GetName(), strings.Join(args, " "), err, out)
			}
		}
	}
	return n
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// controllerAccount is the ServiceAccount the manifests run the controller
// as: the one their trellis-controller Deployment names.
func controllerAccount(t *testing.T, objs []*unstructured.Unstructured) types.NamespacedName {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" || o.GetName() != "trellis-controller" {
			continue
		}
		sa, _, err := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
		if err != nil || sa == "" {
			t.Fatalf("the trellis-controller Deployment names no serviceAccountName (%v)", err)
		}
		return types.NamespacedName{Namespace: o.GetNamespace(), Name: sa}
	}
	t.Fatal("no trellis-controller Deployment installed")
	return types.NamespacedName{}
}

// serviceAccountConfig returns a configuration that authenticates as the
// ServiceAccount sa with a token the apiserver issues for it, as a Pod
// running under it would.
func serviceAccountConfig(t *testing.T, c *kube.Cluster, kc client.Client, sa types.NamespacedName) *rest.Config {
	t.Helper()
	var acct corev1.ServiceAccount
	if err := kc.Get(context.Background(), sa, &acct); err != nil {
		t.Fatalf("ServiceAccount %s: %v", sa, err)
	}
	expiry := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}
	if err := kc.SubResource("token").Create(context.Background(), &acct, tr); err != nil {
		t.Fatalf("token for ServiceAccount %s: %v", sa, err)
	}
	return &rest.Config{
		Host:            c.Config.Host,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.Config.TLSClientConfig.CAData},
		Dial:            c.Config.Dial,
		UserAgent:       "trellis-controller-test",
	}
}

// readKustomization returns the objects of the kustomization in dir. The
// manifests use kustomize only to list their files; a kustomization that
// uses anything else fails the test, so that it is never read wrongly.
func readKustomization(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k map[string]any
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var resources []string
	for key, v := range k {
		switch key {
		case "apiVersion", "kind":
		case "resources":
			list, _ := v.([]any)
			for _, r := range list {
				resources = append(resources, fmt.Sprint(r))
			}
		default:
			t.Fatalf("%s/kustomization.yaml uses %q, which this test does not apply; teach it", dir, key)
		}
	}
	var out []*unstructured.Unstructured
	for _, r := range resources {
		path := filepath.Join(dir, r)
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			out = append(out, readKustomization(t, path)...)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeObjects(t, path, data)...)
	}
	return out
}
