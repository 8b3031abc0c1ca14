package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/api"
	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/testsync"
)

// clusterSetIP is the address cluster a's controller gives ClusterSetIP
// imports (cluster b's gives none).
const clusterSetIP = "198.18.0.53"

// mcsCluster is one cluster of a two-cluster environment: a real
// apiserver and its controller, sending as name to the shared control plane.
type mcsCluster struct {
	name string
	*kube.Cluster
	kc client.Client
}

// mcsEnv is two clusters, a and b, each with its controller, and one
// control plane in a's network namespace that both controllers reach.
type mcsEnv struct {
	a, b *mcsCluster
	cp   *tclient.Client // as cluster a, for reading
	// admin is the control plane's administrator, when the environment
	// has one (newMCSEnvWithAdmin).
	admin *tclient.Client
}

func newMCSEnv(t *testing.T) *mcsEnv { return newMCSEnvWith(t, false) }

// newMCSEnvWith is newMCSEnv whose control plane, when admin is true, has
// a CA and an administrator (e.admin) that admits both clusters (with
// every namespace to export from), as `trellis cluster add` does.
func newMCSEnvWith(t *testing.T, admin bool) *mcsEnv {
	t.Helper()
	a := &mcsCluster{name: "a", Cluster: kube.Start(t, kube.Options{})}
	b := &mcsCluster{name: "b", Cluster: kube.Start(t, kube.Options{})}
	a.kc, b.kc = a.Client(t), b.Client(t)

	tokens := map[string]string{"token-a": "a", "token-b": "b"}
	e := &mcsEnv{a: a, b: b}
	adminToken := ""
	if admin {
		adminToken = "admin-token"
	}
	url := serveControlPlaneWith(t, a.Cluster, tokens, adminToken)
	if admin {
		var err error
		if e.admin, err = tclient.New(url, "admin-token", tclient.Options{HTTPClient: a.NS.HTTPClient(0)}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mcsCluster{a, b} {
			if _, err := e.admin.AddCluster(context.Background(), c.name, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []*mcsCluster{a, b} {
		cp, err := tclient.New(url, "token-"+c.name, tclient.Options{HTTPClient: a.NS.HTTPClient(0)})
		if err != nil {
			t.Fatal(err)
		}
		if c == a {
			e.cp = cp
		}
		cfg := kubernetes.Config{
			Kube: c.Config, ControlPlane: cp, Cluster: c.name,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("cluster", c.name),
		}
		if c == a {
			cfg.ClusterSetIP = netip.MustParseAddr(clusterSetIP)
		}
		mgr, _, err := kubernetes.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(ctx) }()
		t.Cleanup(sync.OnceFunc(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller %s: %v", c.name, err)
			}
		}))
	}
	// Wait until both controllers have synced their caches and the
	// control plane's view, so that the tests measure changes, not start-up.
	b.createService(t, "warmup", "hello", service{ports: []corev1.ServicePort{httpPort(80)}})
	a.ensureNamespace(t, "warmup")
	start := b.export(t, "warmup", "hello")
	within(t, start, 20*time.Second, "first export after the controllers start → import in a and b", all(
		a.importIs("warmup", "hello", mcsv1beta1.ClusterSetIP, []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}, "b"),
		b.importIs("warmup", "hello", mcsv1beta1.ClusterSetIP, []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}, "b")))
	return e
}

// service describes a Service to create in a cluster.
type service struct {
	ports    []corev1.ServicePort
	headless bool
	external bool
	// endpoint, when set, is the one ready endpoint, on every port's
	// target port.
	endpoint string
	mutate   func(*corev1.Service)
}

func httpPort(port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: port}
}

// ensureNamespace creates namespace ns in c unless it exists.
func (c *mcsCluster) ensureNamespace(t *testing.T, ns string) {
	t.Helper()
	err := c.kc.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// createService creates Service ns/name in c as s says, and its
// EndpointSlice.
func (c *mcsCluster) createService(t *testing.T, ns, name string, s service) {
	t.Helper()
	ctx := context.Background()
	c.ensureNamespace(t, ns)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: s.ports}}
	switch {
	case s.external:
		svc.Spec.Type, svc.Spec.ExternalName, svc.Spec.Ports = corev1.ServiceTypeExternalName, "example.com", nil
	case s.headless:
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	if s.mutate != nil {
		s.mutate(svc)
	}
	if err := c.kc.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if s.endpoint == "" {
		return
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{s.endpoint}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
	for _, p := range s.ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(p.Port + 8000)})
	}
	if err := c.kc.Create(ctx, es); err != nil {
		t.Fatal(err)
	}
}

// export creates the ServiceExport of ns/name in c and returns when.
func (c *mcsCluster) export(t *testing.T, ns, name string, mutate ...func(*mcsv1beta1.ServiceExport)) time.Time {
	t.Helper()
	c.ensureNamespace(t, ns)
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, m := range mutate {
		m(se)
	}
	start := time.Now()
	if err := c.kc.Create(context.Background(), se); err != nil {
		t.Fatal(err)
	}
	return start
}

// unexport deletes the ServiceExport of ns/name in c and returns when.
func (c *mcsCluster) unexport(t *testing.T, ns, name string) time.Time {
	t.Helper()
	start := time.Now()
	err := c.kc.Delete(context.Background(), &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	if err != nil {
		t.Fatal(err)
	}
	return start
}

func (c *mcsCluster) serviceImport(ns, name string) (*mcsv1beta1.ServiceImport, error) {
	si := new(mcsv1beta1.ServiceImport)
	return si, c.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, si)
}

func (c *mcsCluster) serviceExport(ns, name string) (*mcsv1beta1.ServiceExport, error) {
	se := new(mcsv1beta1.ServiceExport)
	return se, c.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, se)
}

// within polls check every 10 ms until it passes, and fails the test when
// it has not after 20 s. It logs how long it took from start against limit,
// the goal (issue 12: 2 s): the goal is a speed goal, measured by
// bench/mcs-change.sh over these logs, not asserted here, where a machine
// loaded by other tests would make it flaky. It returns the time taken.
func within(t *testing.T, start time.Time, limit time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	for {
		err := check()
		took := time.Since(start)
		if err == nil {
			verdict := "within"
			if took > limit {
				verdict = "OVER"
			}
			t.Logf("change: %s: %v (%s the goal of %v)", what, took.Round(time.Millisecond), verdict, limit)
			return took
		}
		if took > 20*time.Second {
			t.Fatalf("%s: not after %v: %v", what, took.Round(time.Millisecond), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// importIs checks c's import of ns/name has type typ, the ports given
// and the exporting clusters given.
func (c *mcsCluster) importIs(ns, name string, typ mcsv1beta1.ServiceImportType, ports []mcsv1beta1.ServicePort, clusters ...string) func() error {
	return func() error {
		si, err := c.serviceImport(ns, name)
		if err != nil {
			return err
		}
		var got []string
		for _, cs := range si.Status.Clusters {
			got = append(got, cs.Cluster)
		}
		if si.Spec.Type != typ || !slices.Equal(got, clusters) || fmt.Sprint(si.Spec.Ports) != fmt.Sprint(ports) {
			return fmt.Errorf("%s: import type %s, ports %v, clusters %v; want %s, %v, %v", c.name, si.Spec.Type, si.Spec.Ports, got, typ, ports, clusters)
		}
		if si.Labels[kubernetes.ManagedByLabel] != kubernetes.ManagedByValue {
			return fmt.Errorf("%s: import labels %v", c.name, si.Labels)
		}
		return nil
	}
}

// noImport checks c has no import of ns/name.
func (c *mcsCluster) noImport(ns, name string) func() error {
	return func() error {
		si, err := c.serviceImport(ns, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%s: import exists (clusters %v)", c.name, si.Status.Clusters)
	}
}

// exportCondition checks c's export of ns/name has condition typ with the
// status and reason given, and returns its message through msg.
func (c *mcsCluster) exportCondition(ns, name string, typ mcsv1beta1.ServiceExportConditionType, status metav1.ConditionStatus, reason string, msg ...*string) func() error {
	return func() error {
		se, err := c.serviceExport(ns, name)
		if err != nil {
			return err
		}
		if err := hasCondition(se.Status.Conditions, string(typ), status, reason, se.Generation); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		for _, m := range msg {
			*m = meta.FindStatusCondition(se.Status.Conditions, string(typ)).Message
		}
		return nil
	}
}

func all(checks ...func() error) func() error {
	return func() error {
		var errs []error
		for _, c := range checks {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}
}

func mcsPort(name string, proto corev1.Protocol, port int32) mcsv1beta1.ServicePort {
	return mcsv1beta1.ServicePort{Name: name, Protocol: proto, Port: port}
}

// changeLimit is how soon after a change the imports and conditions of
// every cluster must show it (issue 12).
const changeLimit = 2 * time.Second

// TestMCSConformance runs, against two real clusters and one control
// plane, a test for each check of the MCS API conformance suite
// (mcs-api conformance/service_import.go) that the controller answers
// for, named after the check. DNS and connectivity checks are the proxy's
// and the nameserver's.
func TestMCSConformance(t *testing.T) {
	e := newMCSEnv(t)
	a, b := e.a, e.b

	// "Exporting a ClusterIP service should create a ServiceImport of type
	// ClusterSetIP in the service's namespace in each cluster. Unexporting
	// should delete the ServiceImport", and "The ports for a ClusterSetIP
	// ServiceImport should match those of the exported service". The
	// export is also Valid, Ready once the control plane holds it, and
	// without conflicts; the control plane holds its endpoint.
	t.Run("ExportingAClusterIPServiceCreatesAClusterSetIPImportInEachCluster", func(t *testing.T) {
		const ns, name = "clusterip", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80), {Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}, endpoint: "10.1.0.7"})
		a.ensureNamespace(t, ns)
		start := b.export(t, ns, name)
		ports := []mcsv1beta1.ServicePort{mcsPort("dns", corev1.ProtocolUDP, 53), mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, start, changeLimit, "export in b → import in a", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		within(t, start, changeLimit, "export in b → import in b", b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		within(t, start, changeLimit, "export in b → Valid, Ready, no conflict", all(
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionValid, True, "Valid"),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionReady, True, "Exported"),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts")))

		objs, _, err := e.cp.List(context.Background(), model.KindServiceExport)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(objs, func(o model.Object) bool { return o.ObjectMeta().Name == model.ExportName("b", ns, name) })
		if i < 0 {
			t.Fatalf("the control plane holds no export %s", model.ExportName("b", ns, name))
		}
		ex := objs[i].(*model.ServiceExport)
		want := []model.Target{{Address: "10.1.0.7", Port: 8080, Cluster: "b", State: model.TargetActive}}
		if ex.Owner != "b" || ex.Type != model.ExportClusterSetIP || len(ex.Ports) != 2 || ex.Ports[0].Name != "http" ||
			!slices.Equal(ex.Ports[0].Targets, want) || ex.ExportedAt.IsZero() {
			t.Errorf("control plane export: %+v", ex)
		}

		start = b.unexport(t, ns, name)
		within(t, start, changeLimit, "unexport in b → no import in a or b", all(a.noImport(ns, name), b.noImport(ns, name)))
		objs, _, err = e.cp.List(context.Background(), model.KindServiceExport)
		if err != nil || slices.ContainsFunc(objs, func(o model.Object) bool { return o.ObjectMeta().Name == model.ExportName("b", ns, name) }) {
			t.Errorf("the control plane still holds b's export (%v)", err)
		}
	})

	// "A ServiceImport should only exist as long as there's at least one
	// exporting cluster".
	t.Run("AServiceImportShouldOnlyExistAsLongAsThereIsAtLeastOneExportingCluster", func(t *testing.T) {
		const ns, name = "lifetime", "hello"
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		for _, c := range []*mcsCluster{a, b} {
			c.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		}
		start := b.export(t, ns, name)
		within(t, start, changeLimit, "export in b → import in a", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		start = a.export(t, ns, name)
		within(t, start, changeLimit, "export in a too → clusters [a b] in a and b", all(
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
		start = a.unexport(t, ns, name)
		within(t, start, changeLimit, "unexport in a → clusters [b]", all(
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b")))
		start = b.unexport(t, ns, name)
		within(t, start, changeLimit, "unexport in b too → no imports", all(a.noImport(ns, name), b.noImport(ns, name)))
	})

	// "An IP should be allocated for a ClusterSetIP ServiceImport for each
	// IP family": cluster a's controller has a ClusterSetIP, b's none.
	// "No clusterset IP should be allocated for a Headless ServiceImport",
	// and "Exporting a headless service should create a ServiceImport of
	// type Headless in the service's namespace in each cluster".
	t.Run("AnIPShouldBeAllocatedForAClusterSetIPServiceImportForEachIPFamily", func(t *testing.T) {
		const ns = "ips"
		for _, c := range []*mcsCluster{a, b} {
			c.createService(t, ns, "set", service{ports: []corev1.ServicePort{httpPort(80)}})
			c.createService(t, ns, "headless", service{ports: []corev1.ServicePort{httpPort(80)}, headless: true})
		}
		start := a.export(t, ns, "set")
		a.export(t, ns, "headless")
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, start, changeLimit, "imports in a and b", all(
			a.importIs(ns, "set", mcsv1beta1.ClusterSetIP, ports, "a"), b.importIs(ns, "set", mcsv1beta1.ClusterSetIP, ports, "a"),
			a.importIs(ns, "headless", mcsv1beta1.Headless, ports, "a"), b.importIs(ns, "headless", mcsv1beta1.Headless, ports, "a")))
		si, err := a.serviceImport(ns, "set")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(si.Spec.IPs, []string{clusterSetIP}) || !slices.Equal(si.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) {
			t.Errorf("a's ClusterSetIP import: ips %v, families %v; want [%s] [IPv4]", si.Spec.IPs, si.Spec.IPFamilies, clusterSetIP)
		}
		for _, c := range []*mcsCluster{a, b} {
			si, err := c.serviceImport(ns, "headless")
			if err != nil {
				t.Fatal(err)
			}
			if len(si.Spec.IPs) != 0 || len(si.Spec.IPFamilies) != 0 {
				t.Errorf("%s's headless import has ips %v, families %v", c.name, si.Spec.IPs, si.Spec.IPFamilies)
			}
		}
		if si, err := b.serviceImport(ns, "set"); err != nil || len(si.Spec.IPs) != 0 {
			t.Errorf("b (no ClusterSetIP configured): ips %v (%v); want none", si.Spec.IPs, err)
		}
		start = a.unexport(t, ns, "headless")
		within(t, start, changeLimit, "headless unexported → no headless import in a or b", all(a.noImport(ns, "headless"), b.noImport(ns, "headless")))
	})

	// "Exporting an ExternalName service should set ServiceExport Valid
	// condition to False", with no import; and the export of a Service
	// that does not exist.
	t.Run("ExportingAnExternalNameServiceShouldSetServiceExportValidConditionToFalse", func(t *testing.T) {
		const ns = "invalid"
		a.createService(t, ns, "external", service{external: true})
		b.ensureNamespace(t, ns)
		start := a.export(t, ns, "external")
		a.export(t, ns, "missing")
		within(t, start, changeLimit, "Valid=False on both exports", all(
			a.exportCondition(ns, "external", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, "InvalidServiceType"),
			a.exportCondition(ns, "external", mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Failed"),
			a.exportCondition(ns, "missing", mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, "NoService"),
			a.exportCondition(ns, "missing", mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Failed")))
		// A Service created later makes the export valid.
		start = time.Now()
		a.createService(t, ns, "missing", service{ports: []corev1.ServicePort{httpPort(80)}})
		within(t, start, changeLimit, "the Service created → Valid, import in b", all(
			a.exportCondition(ns, "missing", mcsv1beta1.ServiceExportConditionValid, True, "Valid"),
			b.importIs(ns, "missing", mcsv1beta1.ClusterSetIP, []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}, "a")))
		time.Sleep(time.Second) // would an import of the ExternalName Service appear?
		for _, c := range []*mcsCluster{a, b} {
			if err := c.noImport(ns, "external")(); err != nil {
				t.Error(err)
			}
		}
	})

	// "A ClusterIP service exported on two clusters with conflicting
	// ports should apply the conflict resolution policy and report a
	// Conflict condition on each ServiceExport": b's export is older, its
	// port wins.
	t.Run("WithConflictingPortsShouldApplyTheConflictResolutionPolicyAndReportAConflictConditionOnEachServiceExport", func(t *testing.T) {
		const ns, name = "portconflict", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		a.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(81)}})
		b.export(t, ns, name)
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, time.Now(), 20*time.Second, "b's import", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		start := a.export(t, ns, name)
		var msgA, msgB string
		within(t, start, changeLimit, "conflicting export in a → Conflict=True on both, b's port in both imports", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict", &msgA),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict", &msgB),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
		for _, m := range []string{msgA, msgB} {
			if !strings.Contains(m, "spec.ports") || !strings.Contains(m, "oldest export") || !strings.Contains(m, "b's") {
				t.Errorf("conflict message %q does not name the field, the winning cluster and the reason", m)
			}
		}
		// The conflict goes when a's export does.
		start = a.unexport(t, ns, name)
		within(t, start, changeLimit, "a unexported → NoConflicts on b", b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts"))
	})

	// "A ClusterIP service exported on two clusters should expose the
	// union of the constituent service ports and raise a conflict".
	t.Run("ShouldExposeTheUnionOfTheConstituentServicePortsAndRaiseAConflict", func(t *testing.T) {
		const ns, name = "union", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		a.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80), {Name: "stcp", Protocol: corev1.ProtocolSCTP, Port: 142}}})
		start := b.export(t, ns, name)
		a.export(t, ns, name)
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80), mcsPort("stcp", corev1.ProtocolSCTP, 142)}
		within(t, start, changeLimit, "union of ports in both imports, Conflict=True on both exports", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict"),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
	})

	// "A service exported on two clusters with conflicting headlessness
	// should apply the conflict resolution policy and report a Conflict
	// condition on the ServiceExport": b's ClusterIP export is older.
	t.Run("AServiceExportedOnTwoClustersWithConflictingHeadlessnessShouldApplyTheConflictResolutionPolicy", func(t *testing.T) {
		const ns, name = "typeconflict", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		a.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}, headless: true})
		b.export(t, ns, name)
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, time.Now(), 20*time.Second, "b's import", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		start := a.export(t, ns, name)
		var msg string
		within(t, start, changeLimit, "headless export in a → TypeConflict on both, ClusterSetIP imports", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "TypeConflict", &msg),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "TypeConflict"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
		if !strings.Contains(msg, "spec.type") || !strings.Contains(msg, "ClusterSetIP from oldest export in b") {
			t.Errorf("conflict message %q", msg)
		}
		// The younger headless export alone makes the service headless.
		start = b.unexport(t, ns, name)
		within(t, start, changeLimit, "b unexported → Headless imports", all(
			a.importIs(ns, name, mcsv1beta1.Headless, ports, "a"), b.importIs(ns, name, mcsv1beta1.Headless, ports, "a")))
	})

	// "The SessionAffinity for a ClusterSetIP ServiceImport should match
	// the exported service's SessionAffinity", and the InternalTrafficPolicy
	// and TrafficDistribution checks.
	t.Run("TheSessionAffinityInternalTrafficPolicyAndTrafficDistributionShouldMatchTheExportedService", func(t *testing.T) {
		const ns, name = "properties", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}, mutate: func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](300)}}
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
		}})
		a.ensureNamespace(t, ns)
		start := b.export(t, ns, name)
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, start, changeLimit, "import in a", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		var svc corev1.Service
		if err := b.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			t.Fatal(err)
		}
		si, err := a.serviceImport(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if si.Spec.SessionAffinity != svc.Spec.SessionAffinity || fmt.Sprint(*si.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds) != "300" ||
			*si.Spec.InternalTrafficPolicy != *svc.Spec.InternalTrafficPolicy || *si.Spec.TrafficDistribution != *svc.Spec.TrafficDistribution {
			t.Errorf("import spec %+v does not match the Service's %+v", si.Spec, svc.Spec)
		}
	})

	// Not a conformance check: the controller passes the imports it keeps
	// to the translator, so an HTTPRoute naming a ServiceImport (GEP-1748)
	// is BackendNotFound until an export in another cluster makes the
	// import, and then resolves.
	t.Run("AnHTTPRouteToAServiceImportResolvesOnceAnotherClusterExports", func(t *testing.T) {
		const ns, name = "routes", "hello"
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		a.ensureNamespace(t, ns)
		(&env{Cluster: a.Cluster, kc: a.kc}).create(t, classes+gatewayYAML(ns, "mesh", "trellis", httpListener)+
			routeYAML("HTTPRoute", ns, "web", `{parentRefs: [{name: mesh}], rules: [{backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: 80}]}]}`))
		resolved := func(status metav1.ConditionStatus, reason string) func() error {
			return func() error {
				var r gatewayv1.HTTPRoute
				if err := a.kc.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "web"}, &r); err != nil {
					return err
				}
				if len(r.Status.Parents) != 1 {
					return fmt.Errorf("%d parents in status", len(r.Status.Parents))
				}
				return hasCondition(r.Status.Parents[0].Conditions, "ResolvedRefs", status, reason, r.Generation)
			}
		}
		within(t, time.Now(), 20*time.Second, "the route without the import: BackendNotFound", resolved(metav1.ConditionFalse, "BackendNotFound"))
		start := b.export(t, ns, name)
		within(t, start, changeLimit, "export in b → the route in a resolves", resolved(True, "ResolvedRefs"))
	})

	// "Only labels and annotations specified as exported in the
	// ServiceExport should be propagated to the ServiceImport" (Optional),
	// and "with conflicting annotations and labels should apply the
	// conflict resolution policy and report a Conflict condition on each
	// ServiceExport" (Optional). Keys a user added to the import (the
	// per-cluster weights) survive the controller's updates.
	t.Run("OnlyLabelsAndAnnotationsSpecifiedAsExportedShouldBePropagatedAndConflicting", func(t *testing.T) {
		const ns, name = "labels", "hello"
		for _, c := range []*mcsCluster{a, b} {
			c.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}, mutate: func(s *corev1.Service) {
				s.Labels = map[string]string{"service-label": "x"}
				s.Annotations = map[string]string{"service-annotation": "x"}
			}})
		}
		start := b.export(t, ns, name, func(se *mcsv1beta1.ServiceExport) {
			se.Spec.ExportedLabels = map[string]string{"dummy-label": "true"}
			se.Spec.ExportedAnnotations = map[string]string{"dummy-annotation": "true"}
		})
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		within(t, start, changeLimit, "import in a", a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "b"))
		si, err := a.serviceImport(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if si.Labels["dummy-label"] != "true" || si.Annotations["dummy-annotation"] != "true" ||
			si.Labels["service-label"] != "" || si.Annotations["service-annotation"] != "" {
			t.Errorf("import labels %v, annotations %v", si.Labels, si.Annotations)
		}

		// A user's annotation on the import.
		update(t, a.kc, si, func(si *mcsv1beta1.ServiceImport) { si.Annotations["trellis.dev/cluster-weights"] = "a=90,b=10" })

		start = a.export(t, ns, name, func(se *mcsv1beta1.ServiceExport) {
			se.Spec.ExportedLabels = map[string]string{"dummy-label2": "true"}
			se.Spec.ExportedAnnotations = map[string]string{"dummy-annotation2": "true"}
		})
		within(t, start, changeLimit, "conflicting labels → Conflict on both, b's labels in the import", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "LabelsConflict,AnnotationsConflict"),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "LabelsConflict,AnnotationsConflict"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
		si, err = a.serviceImport(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if si.Labels["dummy-label"] != "true" || si.Labels["dummy-label2"] != "" || si.Annotations["dummy-annotation2"] != "" {
			t.Errorf("import labels %v, annotations %v: want b's (oldest)", si.Labels, si.Annotations)
		}

		// b changes its exported labels: the import follows, the user's
		// annotation stays.
		se, err := b.serviceExport(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		update(t, b.kc, se, func(se *mcsv1beta1.ServiceExport) {
			se.Spec.ExportedLabels = map[string]string{"tier": "gold"}
			se.Spec.ExportedAnnotations = nil
		})
		within(t, start, changeLimit, "b's new labels in a's import, the user's annotation kept", func() error {
			si, err := a.serviceImport(ns, name)
			if err != nil {
				return err
			}
			if si.Labels["tier"] != "gold" || si.Labels["dummy-label"] != "" || si.Annotations["dummy-annotation"] != "" ||
				si.Annotations["trellis.dev/cluster-weights"] != "a=90,b=10" {
				return fmt.Errorf("labels %v, annotations %v", si.Labels, si.Annotations)
			}
			return nil
		})
	})
}

// A cluster without the Multi-Cluster Services CRDs runs the controller
// without them: it says so, naming what to apply, and serves the rest.
func TestWithoutMCSCRDs(t *testing.T) {
	var logs testsync.Buffer
	e := newEnvWith(t, envOptions{logs: &logs, identity: func(c *kube.Cluster, kc client.Client) *rest.Config {
		deleteCRDs(t, c, kc, mcsv1beta1.ServiceExportFullName, mcsv1beta1.ServiceImportFullName)
		return c.Config
	}})
	e.create(t, classes)
	testsync.Eventually(t, 30*time.Second, "the warning and a GatewayClass accepted", func() error {
		for _, want := range []string{"CRD not served; the controller runs without it", "crd=serviceexports.multicluster.x-k8s.io",
			"crd=serviceimports.multicluster.x-k8s.io", "mcs-api/" + kubernetes.MCSAPIRelease} {
			if !strings.Contains(logs.String(), want) {
				return fmt.Errorf("no %q in the log", want)
			}
		}
		var gc gatewayv1.GatewayClass
		if err := e.kc.Get(context.Background(), types.NamespacedName{Name: "trellis"}, &gc); err != nil {
			return err
		}
		return hasCondition(gc.Status.Conditions, "Accepted", True, "Accepted", gc.Generation)
	})
}

// A cluster serving the Multi-Cluster Services API at v1alpha1 only (an
// mcs-api install before v0.3) gets its exports and imports at v1alpha1.
func TestMCSv1alpha1Only(t *testing.T) {
	e := newEnvWith(t, envOptions{identity: func(c *kube.Cluster, kc client.Client) *rest.Config {
		ctx := context.Background()
		for _, name := range []string{mcsv1beta1.ServiceExportFullName, mcsv1beta1.ServiceImportFullName} {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := kc.Get(ctx, types.NamespacedName{Name: name}, &crd); err != nil {
				t.Fatal(err)
			}
			for i := range crd.Spec.Versions {
				v := &crd.Spec.Versions[i]
				v.Served, v.Storage = v.Name == "v1alpha1", v.Name == "v1alpha1"
			}
			if err := kc.Update(ctx, &crd); err != nil {
				t.Fatal(err)
			}
		}
		testsync.Eventually(t, time.Minute, "v1beta1 no longer served", func() error {
			missing, err := kubernetes.ServedCRDs(ctx, c.Config)
			if err != nil {
				return err
			}
			if n := len(slices.DeleteFunc(missing, func(c kubernetes.CRD) bool { return c.Group != mcsv1beta1.GroupName })); n != 2 {
				return fmt.Errorf("%d MCS CRDs not served at v1beta1, want 2", n)
			}
			return nil
		})
		return c.Config
	}})
	e.create(t, namespace("shop", "")+backend("shop", "web", "198.18.60.1"))
	ctx := context.Background()
	start := time.Now()
	if err := e.kc.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	within(t, start, changeLimit, "v1alpha1 export → Valid, Ready, v1alpha1 import", func() error {
		var se mcsv1alpha1.ServiceExport
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &se); err != nil {
			return err
		}
		if err := errors.Join(hasCondition(se.Status.Conditions, "Valid", True, "Valid", se.Generation),
			hasCondition(se.Status.Conditions, "Ready", True, "Exported", se.Generation)); err != nil {
			return err
		}
		var si mcsv1alpha1.ServiceImport
		if err := e.kc.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &si); err != nil {
			return err
		}
		if si.Spec.Type != mcsv1alpha1.ClusterSetIP || len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 80 ||
			len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != cluster {
			return fmt.Errorf("import spec %+v, status %+v", si.Spec, si.Status)
		}
		return nil
	})
}

// TestMCSControlPlaneDecides: what a member cluster cannot do with its
// exports, against two real clusters whose control plane has an
// administrator. The oldest export, which wins conflicts, is the one the
// control plane stored first, whatever a ServiceExport's creation time
// claims; and an administrator limiting the namespaces a cluster exports
// from takes its exports elsewhere out of every import, with a condition
// on its ServiceExport saying why.
func TestMCSControlPlaneDecides(t *testing.T) {
	e := newMCSEnvWith(t, true)
	a, b := e.a, e.b
	ctx := context.Background()

	t.Run("ConflictsFollowTheOrderTheControlPlaneStoredTheExports", func(t *testing.T) {
		const ns, name = "seniority", "cart"
		// b's ServiceExport is created first, so it claims to be older,
		// but its Service does not exist yet: nothing is exported.
		b.export(t, ns, name)
		within(t, time.Now(), 20*time.Second, "b's export without a Service", b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, "NoService"))
		time.Sleep(1100 * time.Millisecond) // creation times have seconds
		a.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(81)}})
		start := a.export(t, ns, name)
		aPorts := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 81)}
		within(t, start, changeLimit, "a's export held, its import", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionReady, True, "Exported"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, aPorts, "a")))

		seA, errA := a.serviceExport(ns, name)
		seB, errB := b.serviceExport(ns, name)
		if err := errors.Join(errA, errB); err != nil {
			t.Fatal(err)
		}
		if !seB.CreationTimestamp.Before(&seA.CreationTimestamp) {
			t.Fatalf("b's ServiceExport (%s) does not claim to be older than a's (%s)", seB.CreationTimestamp, seA.CreationTimestamp)
		}

		// b's Service appears: b exports now, after a, with another port.
		start = time.Now()
		b.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}})
		var msgA, msgB string
		within(t, start, changeLimit, "b's conflicting export → a's port (stored first) in both imports, Conflict on both", all(
			a.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict", &msgA),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionConflict, True, "PortConflict", &msgB),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionReady, True, "Exported"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, aPorts, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, aPorts, "a", "b")))
		for _, m := range []string{msgA, msgB} {
			if !strings.Contains(m, "a's where they conflict") {
				t.Errorf("conflict message %q does not name a as the oldest export", m)
			}
		}
		objs, _, err := e.cp.List(ctx, model.KindServiceExport)
		if err != nil {
			t.Fatal(err)
		}
		stamps := map[string]time.Time{}
		for _, o := range objs {
			if ex := o.(*model.ServiceExport); ex.Namespace == ns {
				stamps[ex.Owner] = ex.ExportedAt
			}
		}
		if !stamps["a"].Before(stamps["b"]) {
			t.Errorf("control plane stamps a %s, b %s: want a's first", stamps["a"], stamps["b"])
		}
	})

	t.Run("NarrowingExportNamespacesStopsServingTheClustersExportsOutsideThem", func(t *testing.T) {
		const ns, name = "narrow", "hello"
		ports := []mcsv1beta1.ServicePort{mcsPort("http", corev1.ProtocolTCP, 80)}
		for _, c := range []*mcsCluster{a, b} {
			c.createService(t, ns, name, service{ports: []corev1.ServicePort{httpPort(80)}, endpoint: "10.1.0.9"})
		}
		start := a.export(t, ns, name)
		b.export(t, ns, name)
		within(t, start, changeLimit, "both exports in both imports", all(
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))

		start = time.Now()
		if _, err := e.admin.SetCluster(ctx, "b", api.SetClusterRequest{ExportNamespaces: []string{"elsewhere"}}); err != nil {
			t.Fatal(err)
		}
		var msg string
		within(t, start, changeLimit, "b limited to namespace elsewhere → b's export not served, Valid=False NamespaceNotAllowed", all(
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, kubernetes.ReasonNamespaceNotAllowed, &msg),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Failed"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a"),
			b.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a")))
		if !strings.Contains(msg, "namespace "+ns) || !strings.Contains(msg, "elsewhere") {
			t.Errorf("Valid message %q does not name the namespace and the list", msg)
		}
		// b's controller stops sending it, so the control plane drops it.
		within(t, start, changeLimit, "the control plane no longer holds b's export", func() error {
			objs, _, err := e.cp.List(ctx, model.KindServiceExport)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(objs, func(o model.Object) bool { return o.ObjectMeta().Name == model.ExportName("b", ns, name) }) {
				return errors.New("b's export is still held")
			}
			return nil
		})

		start = time.Now()
		if _, err := e.admin.SetCluster(ctx, "b", api.SetClusterRequest{ExportNamespaces: []string{model.AllNamespaces}}); err != nil {
			t.Fatal(err)
		}
		within(t, start, changeLimit, "b allowed every namespace again → b's export served", all(
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionValid, True, "Valid"),
			b.exportCondition(ns, name, mcsv1beta1.ServiceExportConditionReady, True, "Exported"),
			a.importIs(ns, name, mcsv1beta1.ClusterSetIP, ports, "a", "b")))
	})
}
