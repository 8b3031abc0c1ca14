package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/testsync"
)

// deleteCRDs deletes CRDs and waits until discovery no longer serves them,
// returning what they were.
func deleteCRDs(t *testing.T, c *kube.Cluster, kc client.Client, names ...string) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	ctx := context.Background()
	var gone []*apiextensionsv1.CustomResourceDefinition
	for _, name := range names {
		crd := new(apiextensionsv1.CustomResourceDefinition)
		if err := kc.Get(ctx, types.NamespacedName{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		// The apiserver's CRD finalizer deletes a CRD's objects first; on
		// storage still initializing after a start it fails and backs off
		// for minutes. A list that succeeds shows the storage is ready.
		list := new(unstructured.UnstructuredList)
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: crd.Spec.Group, Version: crd.Spec.Versions[0].Name, Kind: crd.Spec.Names.ListKind})
		for _, v := range crd.Spec.Versions {
			if v.Storage {
				list.SetGroupVersionKind(schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.ListKind})
			}
		}
		testsync.Eventually(t, time.Minute, "listing "+name, func() error { return kc.List(ctx, list) })
		if err := kc.Delete(ctx, crd); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, crd)
	}
	testsync.Eventually(t, time.Minute, "CRDs deleted", func() error {
		missing, err := kubernetes.ServedCRDs(ctx, c.Config)
		var me *kubernetes.MissingCRDsError
		if err != nil && !errors.As(err, &me) {
			return err
		}
		for _, name := range names {
			if !slices.ContainsFunc(missing, func(c kubernetes.CRD) bool { return c.Name == name }) {
				return fmt.Errorf("%s still served", name)
			}
			if err := kc.Get(ctx, types.NamespacedName{Name: name}, new(apiextensionsv1.CustomResourceDefinition)); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s still defined (%v)", name, err)
			}
		}
		return nil
	})
	return gone
}

// A cluster without a CRD the controller requires makes it fail at once,
// naming each missing CRD and what to apply; an optional one missing is
// not an error. InstallCRDs installs trellis's own CRDs, but not the
// Gateway API's. (Before, the controller started and waited forever on the
// missing kind's informer, logging nothing.)
func TestMissingCRDs(t *testing.T) {
	c := kube.Start(t, kube.Options{})
	kc := c.Client(t)
	gone := deleteCRDs(t, c, kc, "authpolicies.trellis.dev", "tlsroutes.gateway.networking.k8s.io", "referencegrants.gateway.networking.k8s.io")
	cp, err := tclient.New("http://127.0.0.1:1", token, tclient.Options{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = kubernetes.Run(ctx, kubernetes.Config{Kube: c.Config, ControlPlane: cp, Cluster: cluster})
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the controller took %v to fail", took)
	}
	var me *kubernetes.MissingCRDsError
	if !errors.As(err, &me) {
		t.Fatalf("kubernetes.Run: %v; want a MissingCRDsError", err)
	}
	for _, want := range []string{"authpolicies.trellis.dev", "config/crd", "referencegrants.gateway.networking.k8s.io", "standard-install.yaml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "tlsroutes") {
		t.Errorf("error %q names the optional TLSRoute CRD", err)
	}

	// Gateway API CRDs are not trellis's to install.
	_, err = kubernetes.InstallCRDs(ctx, c.Config, nil)
	if err == nil || !strings.Contains(err.Error(), "referencegrants.gateway.networking.k8s.io") || strings.Contains(err.Error(), "authpolicies") {
		t.Errorf("InstallCRDs without the ReferenceGrant CRD: %v; want an error naming it alone", err)
	}
	if err := kc.Get(ctx, types.NamespacedName{Name: "authpolicies.trellis.dev"}, new(apiextensionsv1.CustomResourceDefinition)); !apierrors.IsNotFound(err) {
		t.Errorf("the AuthPolicy CRD was installed though the Gateway API's are missing (%v)", err)
	}

	// With the Gateway API back, it installs its own and waits until they
	// are served.
	grants := gone[2]
	grants.ObjectMeta = metav1.ObjectMeta{Name: grants.Name, Annotations: grants.Annotations, Labels: grants.Labels}
	grants.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
	if err := kc.Create(ctx, grants); err != nil {
		t.Fatal(err)
	}
	testsync.Eventually(t, time.Minute, "the ReferenceGrant CRD served", func() error {
		missing, _ := kubernetes.ServedCRDs(ctx, c.Config)
		if slices.ContainsFunc(missing, func(c kubernetes.CRD) bool { return c.Kind == "ReferenceGrant" }) {
			return errors.New("not yet")
		}
		return nil
	})
	// An identity that may not create CRDs is told what to apply.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "no-crds"}}
	if err := kc.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	limited := serviceAccountConfig(t, c, kc, types.NamespacedName{Namespace: "default", Name: "no-crds"})
	_, err = kubernetes.InstallCRDs(ctx, limited, nil)
	if err == nil || !apierrors.IsForbidden(errors.Unwrap(err)) ||
		!strings.Contains(err.Error(), "authpolicies.trellis.dev") || !strings.Contains(err.Error(), "kubectl apply -f config/crd/trellis.dev_authpolicies.yaml") {
		t.Errorf("InstallCRDs without permission: %v; want a Forbidden error naming the CRD and what to apply", err)
	}

	installed, err := kubernetes.InstallCRDs(ctx, c.Config, nil)
	if err != nil || !slices.Equal(installed, []string{"authpolicies.trellis.dev"}) {
		t.Fatalf("InstallCRDs: installed %v, %v; want the AuthPolicy CRD", installed, err)
	}
	missing, err := kubernetes.ServedCRDs(ctx, c.Config)
	if err != nil || len(missing) != 1 || missing[0].Name != "tlsroutes.gateway.networking.k8s.io" {
		t.Errorf("after InstallCRDs, not served: %v (%v); want the TLSRoute CRD only", missing, err)
	}
	if installed, err := kubernetes.InstallCRDs(ctx, c.Config, nil); err != nil || len(installed) != 0 {
		t.Errorf("InstallCRDs again: installed %v, %v; want nothing", installed, err)
	}
}

// `trellis up --kubeconfig` against a cluster with only the Gateway API
// CRDs (no Multi-Cluster Services CRDs either: a new user's cluster)
// installs the AuthPolicy CRD and serves the cluster: its GatewayClasses
// are accepted. The optional TLSRoute CRD missing too, it runs without
// that watch and says so. Without --gateway-addresses an edge Gateway
// is published at the proxy's bind address, where it is served. (Before,
// every GatewayClass stayed Pending, and the Gateway had no address.)
func TestUpInstallsCRDsAndPublishesBindAddress(t *testing.T) {
	c := kube.Start(t, kube.Options{})
	kc := c.Client(t)
	deleteCRDs(t, c, kc, "authpolicies.trellis.dev", "tlsroutes.gateway.networking.k8s.io",
		"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io")

	const bind = "198.18.70.1"
	cmd := exec.Command(trellisBin, "up", "--kubeconfig", c.Kubeconfig, "--bind", bind,
		"--api-listen", bind+":0", "--admin-listen", "", "--data", t.TempDir())
	var out testsync.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("trellis up output:\n%s", out.String())
		}
	})
	exited := c.NS.StartUntilCleanup(t, cmd, os.Interrupt, 15*time.Second)
	testsync.Eventually(t, time.Minute, "trellis up installs the AuthPolicy CRD", func() error {
		select {
		case <-exited:
			t.Fatalf("trellis up exited: %v", cmd.ProcessState)
		default:
		}
		for _, want := range []string{
			"controller: installed CRD authpolicies.trellis.dev",
			`level=WARN msg="CRD not served; the controller runs without it`,
			"crd=tlsroutes.gateway.networking.k8s.io",
		} {
			if !strings.Contains(out.String(), want) {
				return fmt.Errorf("no %q", want)
			}
		}
		return nil
	})

	e := &env{Cluster: c, kc: kc}
	serveName(t, e, "198.18.60.1:8080", "web")
	e.create(t, classes+namespace("infra", "")+
		backend("infra", "web", "198.18.60.1")+
		gatewayYAML("infra", "edge", "trellis-edge", `[{name: http, protocol: HTTP, port: 8080}]`)+
		routeYAML("HTTPRoute", "infra", "web", `{parentRefs: [{name: edge}], rules: [{backendRefs: [{name: web, port: 80}]}]}`))
	ctx := context.Background()
	for _, name := range []string{"trellis", "trellis-edge"} {
		testsync.Eventually(t, 30*time.Second, "GatewayClass "+name+" accepted", func() error {
			var gc gatewayv1.GatewayClass
			if err := kc.Get(ctx, types.NamespacedName{Name: name}, &gc); err != nil {
				return err
			}
			return hasCondition(gc.Status.Conditions, "Accepted", True, "Accepted", gc.Generation)
		})
	}
	testsync.Eventually(t, 30*time.Second, "the edge Gateway programmed at "+bind, func() error {
		var gw gatewayv1.Gateway
		if err := kc.Get(ctx, types.NamespacedName{Namespace: "infra", Name: "edge"}, &gw); err != nil {
			return err
		}
		if err := hasCondition(gw.Status.Conditions, "Programmed", True, "Programmed", gw.Generation); err != nil {
			return err
		}
		want := []gatewayv1.GatewayStatusAddress{{Type: ptr(gatewayv1.IPAddressType), Value: bind}}
		if !slices.EqualFunc(gw.Status.Addresses, want, func(a, b gatewayv1.GatewayStatusAddress) bool {
			return *a.Type == *b.Type && a.Value == b.Value
		}) {
			return fmt.Errorf("status.addresses %v, want %s", gw.Status.Addresses, bind)
		}
		return nil
	})
	// The published address is where the proxy serves the Gateway.
	hc := c.NS.HTTPClient(5 * time.Second)
	testsync.Eventually(t, 30*time.Second, "the route served on "+bind+":8080", serves(hc, "http://"+bind+":8080/", "", "web"))
}

// controller-runtime's components and client-go log through the logger
// RouteLogs sets (TestMain sets it to libLogs): the metrics server (a
// controller-runtime component, which has no logger but the global one)
// and leader election (client-go, klog). Before, controller-runtime
// dropped its components' lines.
func TestLibraryLogsReachTheLogger(t *testing.T) {
	from := len(libLogs.String())
	newEnvWith(t, envOptions{metricsAddress: "127.0.0.1:0", leaderElectionNamespace: "default"})
	testsync.Eventually(t, 30*time.Second, "controller-runtime's and client-go's lines in the process's log", func() error {
		logs := libLogs.String()[from:]
		for _, want := range []string{
			`msg="Serving metrics server" logger=controller-runtime/metrics bindAddress=127.0.0.1:0`,
			`msg="Successfully acquired lease" lock=default/trellis-controller.trellis.dev`,
		} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("no %s in:\n%s", want, logs)
			}
		}
		return nil
	})
}
