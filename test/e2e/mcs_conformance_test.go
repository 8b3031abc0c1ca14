package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/test/manifest"
	"trellis.dev/trellis/test/testsync"
)

// TestMCSConformance runs the checks of the Multi-Cluster Services API's
// conformance suite (kubernetes-sigs/mcs-api, conformance/) against three
// real clusters joined by Trellis, one subtest per check, named after the
// check. docs/reference/mcs-conformance.md lists them, with what each
// means for Trellis where its model answers differently: the clusterset IP
// is the local proxy's address, and a client reaches an import through its
// proxy, by the clusterset name and a route that names it.
//
// As in the suite, cluster a is "the remote cluster" (it exports hello),
// b the second exporter where a check needs two, and every check runs in
// a namespace of its own, made in all three clusters.
func TestMCSConformance(t *testing.T) {
	m := startMesh(t, meshOptions{})
	e := &mcsEnv{mesh: m}
	e.gateway(t)

	checks := []mcsCheckFunc{
		// conformance/service_import.go
		{"AServiceImportShouldOnlyExistAsLongAsThereIsAtLeastOneExportingCluster", checkImportLifetime},
		{"OnlyLabelsAndAnnotationsSpecifiedAsExportedShouldBePropagatedToTheServiceImport", checkExportedLabels},
		{"ServiceExportedOnTwoClustersWithConflictingAnnotationsAndLabelsShouldReportAConflictOnEachServiceExport", checkLabelConflict},
		{"ExportingAClusterIPServiceShouldCreateAClusterSetIPServiceImportInEachClusterAndUnexportingShouldDeleteIt", checkClusterSetIPImport},
		{"TheSessionAffinityForAClusterSetIPServiceImportShouldMatchTheExportedService", checkSessionAffinity},
		{"TheInternalTrafficPolicyForAClusterSetIPServiceImportShouldMatchTheExportedService", checkInternalTrafficPolicy},
		{"TheTrafficDistributionForAClusterSetIPServiceImportShouldMatchTheExportedService", checkTrafficDistribution},
		{"AnIPShouldBeAllocatedForAClusterSetIPServiceImportForEachIPFamily", checkClusterSetIPs},
		{"ThePortsForAClusterSetIPServiceImportShouldMatchThoseOfTheExportedService", checkPorts},
		{"AClusterIPServiceExportedOnTwoClustersShouldExposeTheUnionOfTheConstituentServicePortsAndRaiseAConflict", checkPortUnion},
		{"AClusterIPServiceExportedOnTwoClustersWithConflictingPortsShouldApplyTheConflictResolutionPolicy", checkPortConflict},
		{"ExportingAHeadlessServiceShouldCreateAHeadlessServiceImportInEachClusterAndUnexportingShouldDeleteIt", checkHeadlessImport},
		{"NoClustersetIPShouldBeAllocatedForAHeadlessServiceImport", checkHeadlessNoIPs},
		{"ExportingAnExternalNameServiceShouldSetServiceExportValidConditionToFalse", checkExternalName},
		{"AServiceExportedOnTwoClustersWithConflictingHeadlessnessShouldApplyTheConflictResolutionPolicy", checkHeadlessnessConflict},
		// conformance/connectivity.go
		{"ConnectivityToAServiceThatIsNotExportedShouldBeInaccessible", checkNotExportedInaccessible},
		{"ConnectivityToAnExportedClusterIPServiceShouldBeAccessibleThroughDNS", checkAccessibleThroughDNS},
		{"ConnectivityToAClusterIPServiceExistingInTwoClustersButExportedFromOneShouldOnlyAccessTheExportingCluster", checkOnlyExportingCluster},
		{"ConnectivityToExportedServicesWithSamePortNameButDifferentPortNumbersShouldOnlyRouteToTheClusterThatExposesThePort", checkSamePortName},
		{"ConnectivityToExportedServicesWithDifferentPortNamesShouldRouteEachPortOnlyToTheClusterThatExposesIt", checkDifferentPortNames},
		// conformance/clusterip_service_dns.go
		{"ADNSLookupOfTheClustersetNameForAClusterIPServiceShouldResolveToTheClustersetIP", checkDNSClusterSetIP},
		{"ADNSSRVQueryOfTheClustersetNameForAClusterIPServiceShouldReturnValidSRVRecords", checkDNSSRV},
		{"DNSLookupsOfTheClusterLocalNameShouldOnlyResolveLocalServices", checkClusterLocal},
		// conformance/endpoint_slice.go
		{"ExportingAServiceShouldCreateAnMCSEndpointSliceInEachClusterWithTheRequiredMCSLabels", checkEndpointSlices},
		// conformance/headless_service_dns.go (the two A-record checks
		// run below, in a pod network)
		{"ADNSSRVQueryOfTheClustersetNameForAHeadlessServiceShouldReturnValidSRVRecords", checkHeadlessSRV},
		// Trellis's own: not in the suite.
		{"TrellisClustersetNameServedWithoutARoute", checkClustersetNameWithoutRoute},
		{"TrellisHeadlessPodNamesReachThatClustersPod", checkPodNamesAcrossClusters},
		{"TrellisHeadlessPodNamesBySNI", checkPodNamesBySNI},
		{"TrellisHeadlessNameResolvesToTheProxyOutsideAPodNetwork", checkHeadlessDNSIsolated},
		{"TrellisHeadlessPodNameResolvesToTheProxyOutsideAPodNetwork", checkHeadlessPodDNSIsolated},
	}
	index := 0
	run := func(t *testing.T, group string, checks []mcsCheckFunc) {
		t.Run(group, func(t *testing.T) {
			for _, c := range checks {
				index++
				n := index
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, e, e.newCheck(t, n))
				})
			}
		})
	}
	run(t, "checks", checks)

	// The suite's headless A-record checks hold where the clusters share a
	// flat pod network, which only the operator declares. The checks above
	// ran with every cluster isolated (the default): b and c of
	// TrellisHeadlessPodNames* use the same pod addresses, as only isolated
	// clusters may.
	for _, cl := range m.clusters {
		m.trellis(t, "cluster", "set", cl.name, "--pod-network", "flat")
	}
	run(t, "podnetwork", []mcsCheckFunc{
		{"ADNSQueryOfTheClustersetNameForAHeadlessServiceShouldReturnTheReadyEndpointAddresses", checkHeadlessDNS},
		{"ADNSQueryOfThePodNameForAHeadlessStatefulSetServiceShouldReturnThePodsAddress", checkHeadlessPodDNS},
	})
	// Then c leaves it.
	run(t, "outside", []mcsCheckFunc{{"TrellisHeadlessNamesOfAClusterOutsideThePodNetwork", checkHeadlessOutsideThePodNetwork}})
}

// mcsCheckFunc is one check, by the name of its subtest.
type mcsCheckFunc struct {
	name string
	run  func(*testing.T, *mcsEnv, *mcsCheck)
}

// mcsEnv is the mesh as the checks use it.
type mcsEnv struct {
	*mesh
}

// mcsGatewayNS holds cluster a's Gateway, whose listeners (42 and 4242;
// 9093 for TLS passthrough) the connectivity checks' routes attach to. Every proxy serves the
// network's routes, so one Gateway serves the clients of all three
// clusters.
const mcsGatewayNS = "mcs-gateway"

func (e *mcsEnv) gateway(t *testing.T) {
	apply(t, e.clusters[0].kc, namespaceYAML(mcsGatewayNS)+manifest.ServiceNetwork("mcs", mcsGatewayNS, `
  - {name: p42, protocol: HTTP, port: 42, allowedRoutes: {namespaces: {from: All}}}
  - {name: p4242, protocol: HTTP, port: 4242, allowedRoutes: {namespaces: {from: All}}}
  - {name: p9093, protocol: TLS, port: 9093, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}`))
}

// mcsCheck is one check's namespace (the same in every cluster) and the
// addresses of its backends.
type mcsCheck struct {
	e  *mcsEnv
	ns string
	// index makes the check's backend addresses: 198.18.<index>.<10+i>
	// in cluster i.
	index int
	// svc is the Service the check exports and requests: hello unless
	// set.
	svc string
}

func (c *mcsCheck) name() string { return cmp.Or(c.svc, helloName) }

const helloName = "hello"

func (e *mcsEnv) newCheck(t *testing.T, index int) *mcsCheck {
	c := &mcsCheck{e: e, ns: fmt.Sprintf("mcs-conformance-%d", index), index: index}
	for _, cl := range e.clusters {
		apply(t, cl.kc, namespaceYAML(c.ns))
	}
	return c
}

// fqdn is the check's clusterset name of its Service.
func (c *mcsCheck) fqdn() string { return c.name() + "." + c.ns + ".svc.clusterset.local" }

// backendAddr is the address of hello's backend in cluster i.
func (c *mcsCheck) backendAddr(i int) string { return fmt.Sprintf("198.18.%d.%d", c.index, 10+i) }

// helloService is the suite's hello Service: ports tcp/42 and udp/42,
// ClientIP session affinity with a 10 s timeout, a label and an
// annotation of its own (which must not reach the import).
func (c *mcsCheck) helloService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: helloName,
			Labels: map[string]string{"dummy-svc": "dummy"}, Annotations: map[string]string{"dummy-svc": "dummy"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": helloName},
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: 42, Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: 42, Protocol: corev1.ProtocolUDP},
			},
			SessionAffinity: corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{
				ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(10))},
			},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
		},
	}
}

// deploy creates svc in cluster i with one ready endpoint per address of
// addrs (by default the check's backend address in i), each serving HTTP
// on port 42 (what every port of svc targets), answering "pod ip <addr>"
// (servePods).
func (c *mcsCheck) deploy(t *testing.T, i int, svc *corev1.Service, addrs ...string) {
	t.Helper()
	cl := c.e.clusters[i]
	if len(addrs) == 0 {
		addrs = []string{c.backendAddr(i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.kc.Create(ctx, svc); err != nil {
		t.Fatalf("creating Service in %s: %v", cl.name, err)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	es := servePods(t, cl, svc, 42, "hello", addrs, func(_ int, a string) string { return "pod ip " + a })
	if err := cl.kc.Create(ctx, es); err != nil {
		t.Fatalf("creating EndpointSlice in %s: %v", cl.name, err)
	}
}

// servePods returns svc's EndpointSlice in cluster cl as the endpointslice
// controller would write it (the test clusters run none): one ready
// endpoint per address of addrs, named host-<n> as a StatefulSet's pods
// are, on port for every port of svc. Each address serves HTTP on port in
// the cluster's namespace until the test ends, answering body(n, address).
func servePods(t *testing.T, cl *meshCluster, svc *corev1.Service, port int32, host string, addrs []string, body func(n int, addr string) string) *discoveryv1.EndpointSlice {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "e2e-test"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, sp := range svc.Spec.Ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(sp.Name), Protocol: ptr.To(sp.Protocol), Port: ptr.To(port)})
	}
	for n, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Hostname: ptr.To(fmt.Sprintf("%s-%d", host, n)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		ln, err := cl.kube.NS.Listen("tcp", fmt.Sprintf("%s:%d", a, port))
		if err != nil {
			t.Fatal(err)
		}
		answer := body(n, a)
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, answer) })}
		go s.Serve(ln)
		t.Cleanup(func() { s.Close() })
	}
	return es
}

// deployExported deploys svc in cluster 0 (as deploy does, with addrs)
// and exports it with no labels or annotations to copy.
func (c *mcsCheck) deployExported(t *testing.T, svc *corev1.Service, addrs ...string) {
	t.Helper()
	c.deploy(t, 0, svc, addrs...)
	c.export(t, 0, nil, nil)
}

// export exports hello in cluster i, with the labels and annotations given
// to copy to the import (nil for none). The ServiceExport carries a label
// and an annotation of its own, which must not reach the import.
func (c *mcsCheck) export(t *testing.T, i int, labels, annotations map[string]string) {
	t.Helper()
	se := &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name(),
			Labels: map[string]string{"dummy-svcexport": "dummy"}, Annotations: map[string]string{"dummy-svcexport": "dummy"}},
		Spec: mcsv1beta1.ServiceExportSpec{ExportedLabels: labels, ExportedAnnotations: annotations},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.e.clusters[i].kc.Create(ctx, se); err != nil {
		t.Fatalf("creating ServiceExport in %s: %v", c.e.clusters[i].name, err)
	}
}

func (c *mcsCheck) unexport(t *testing.T, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name()}}
	if err := c.e.clusters[i].kc.Delete(ctx, se); err != nil {
		t.Fatalf("deleting ServiceExport in %s: %v", c.e.clusters[i].name, err)
	}
}

// getImport reads hello's ServiceImport in cluster i.
func (c *mcsCheck) getImport(i int) (*mcsv1beta1.ServiceImport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var si mcsv1beta1.ServiceImport
	err := c.e.clusters[i].kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: c.name()}, &si)
	return &si, err
}

// mcsWait bounds every wait of a check: the suite allows 20 s; the
// machine these run on is shared and loaded.
const mcsWait = 45 * time.Second

// awaitImport waits until hello's ServiceImport exists in cluster i and
// passes check (nil: any), and returns it.
func (c *mcsCheck) awaitImport(t *testing.T, i int, check func(*mcsv1beta1.ServiceImport) error) *mcsv1beta1.ServiceImport {
	t.Helper()
	var si *mcsv1beta1.ServiceImport
	testsync.Eventually(t, mcsWait, "the ServiceImport in cluster "+c.e.clusters[i].name, func() error {
		var err error
		if si, err = c.getImport(i); err != nil {
			return err
		}
		if check != nil {
			return check(si)
		}
		return nil
	})
	return si
}

// awaitImports waits until hello's ServiceImport exists in every cluster
// and passes check there.
func (c *mcsCheck) awaitImports(t *testing.T, check func(*mcsv1beta1.ServiceImport) error) {
	t.Helper()
	for i := range c.e.clusters {
		c.awaitImport(t, i, check)
	}
}

// awaitNoImport waits until hello has no ServiceImport in cluster i.
func (c *mcsCheck) awaitNoImport(t *testing.T, i int) {
	t.Helper()
	testsync.Eventually(t, mcsWait, "the ServiceImport in cluster "+c.e.clusters[i].name+" to be deleted", func() error {
		_, err := c.getImport(i)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return errors.New("it still exists")
		}
		return err
	})
}

// awaitNoImports waits until hello has no ServiceImport in any cluster.
func (c *mcsCheck) awaitNoImports(t *testing.T) {
	t.Helper()
	for i := range c.e.clusters {
		c.awaitNoImport(t, i)
	}
}

// awaitImportsOfType waits until hello's ServiceImport exists in every
// cluster, and fails the check where it is not of type typ.
func (c *mcsCheck) awaitImportsOfType(t *testing.T, typ mcsv1beta1.ServiceImportType) {
	t.Helper()
	for i := range c.e.clusters {
		if si := c.awaitImport(t, i, nil); si.Spec.Type != typ {
			t.Errorf("the ServiceImport in %s has type %q, want %q", c.e.clusters[i].name, si.Spec.Type, typ)
		}
	}
}

// consistently checks cond every 250 ms for 5 s, as the suite's
// Consistently does, failing at the first time it does not hold.
func consistently(t *testing.T, what string, cond func() error) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// awaitCondition waits until hello's ServiceExport in cluster i has
// condition typ with status.
func (c *mcsCheck) awaitCondition(t *testing.T, i int, typ mcsv1beta1.ServiceExportConditionType, status metav1.ConditionStatus) {
	t.Helper()
	testsync.Eventually(t, mcsWait, fmt.Sprintf("%s=%s on the ServiceExport in cluster %s", typ, status, c.e.clusters[i].name), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var se mcsv1beta1.ServiceExport
		if err := c.e.clusters[i].kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: c.name()}, &se); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(se.Status.Conditions, string(typ))
		if cond == nil || cond.Status != status {
			return fmt.Errorf("conditions %+v", se.Status.Conditions)
		}
		return nil
	})
}

// mcsPorts is ports as an import lists them: sorted by port, protocol and
// name, without target ports.
func mcsPorts(ports ...corev1.ServicePort) []mcsv1beta1.ServicePort {
	out := make([]mcsv1beta1.ServicePort, len(ports))
	for i, p := range ports {
		out[i] = mcsv1beta1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, AppProtocol: p.AppProtocol}
	}
	sortPorts(out)
	return out
}

func sortPorts(ps []mcsv1beta1.ServicePort) {
	slices.SortFunc(ps, func(a, b mcsv1beta1.ServicePort) int {
		if a.Port != b.Port {
			return int(a.Port - b.Port)
		}
		if a.Protocol != b.Protocol {
			return strings.Compare(string(a.Protocol), string(b.Protocol))
		}
		return strings.Compare(a.Name, b.Name)
	})
}

func samePorts(si *mcsv1beta1.ServiceImport, want []mcsv1beta1.ServicePort) error {
	got := slices.Clone(si.Spec.Ports)
	sortPorts(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("ports %v, want %v", got, want)
	}
	return nil
}

func hasAll(got, want map[string]string) error {
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("%q=%q missing from %v", k, v, got)
		}
	}
	return nil
}

func hasNone(got, unwanted map[string]string) error {
	for k, v := range unwanted {
		if g, ok := got[k]; ok && g == v {
			return fmt.Errorf("%q=%q should not be in %v", k, v, got)
		}
	}
	return nil
}

// route makes cluster a's Gateway route hello's clusterset name, on the
// listener of port, to the ServiceImport's port: how a Trellis client
// reaches an import by its clusterset name (the name resolves to the
// client's proxy, which routes by host name).
func (c *mcsCheck) route(t *testing.T, port int) {
	t.Helper()
	apply(t, c.e.clusters[0].kc, fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello-%[1]d, namespace: %[2]s}
spec:
  parentRefs: [{name: mcs, namespace: %[3]s, sectionName: p%[1]d}]
  hostnames: [%[4]s]
  rules:
  - backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: %[1]d}]
`, port, c.ns, mcsGatewayNS, c.fqdn()))
}

// request resolves hello's clusterset name with cluster i's nameserver,
// connects to the answer's port from inside cluster i and returns the
// status and body of a GET.
func (c *mcsCheck) request(i, port int) (int, string, error) {
	cl := c.e.clusters[i]
	addrs, err := cl.resolve(c.fqdn())
	if err != nil {
		return 0, "", err
	}
	if len(addrs) == 0 {
		return 0, "", errors.New("no address")
	}
	hc := cl.kube.NS.HTTPClient(5 * time.Second)
	defer hc.CloseIdleConnections()
	return getBody(hc, fmt.Sprintf("http://%s:%d/", addrs[0], port), c.fqdn())
}

// reachesFromAll is reaches from every cluster.
func (c *mcsCheck) reachesFromAll(t *testing.T, port int, want string, n int) {
	t.Helper()
	for i := range c.e.clusters {
		c.reaches(t, i, port, want, n)
	}
}

// reaches waits until a request from cluster i on port is answered by
// want, then sends n more: every one must be answered by want.
func (c *mcsCheck) reaches(t *testing.T, i, port int, want string, n int) {
	t.Helper()
	testsync.Eventually(t, mcsWait, fmt.Sprintf("a request from %s on port %d to reach %q", c.e.clusters[i].name, port, want), func() error {
		status, body, err := c.request(i, port)
		if err != nil {
			return err
		}
		if status != http.StatusOK || body != "pod ip "+want {
			return fmt.Errorf("%d %q", status, body)
		}
		return nil
	})
	for range n {
		status, body, err := c.request(i, port)
		if err != nil || status != http.StatusOK || body != "pod ip "+want {
			t.Errorf("from %s on port %d: %d %q %v; want only %q", c.e.clusters[i].name, port, status, body, err, want)
		}
	}
}

// --- conformance/service_import.go

func checkImportLifetime(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	c.awaitImport(t, 0, nil)
	c.deploy(t, 1, c.helloService())
	c.export(t, 1, nil, nil)
	// Both exports are in the import before a's is removed.
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		if len(si.Status.Clusters) != 2 {
			return fmt.Errorf("status.clusters %v", si.Status.Clusters)
		}
		return nil
	})
	c.unexport(t, 0)
	consistently(t, "the ServiceImport while b still exports", func() error {
		for i := range e.clusters {
			if _, err := c.getImport(i); err != nil {
				return fmt.Errorf("cluster %s: %w", e.clusters[i].name, err)
			}
		}
		return nil
	})
	c.unexport(t, 1)
	c.awaitNoImports(t)
}

func checkExportedLabels(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	c.deploy(t, 0, svc)
	labels, annotations := map[string]string{"dummy-label": "true"}, map[string]string{"dummy-annotation": "true"}
	c.export(t, 0, labels, annotations)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		return errors.Join(hasAll(si.Labels, labels), hasAll(si.Annotations, annotations),
			hasNone(si.Labels, svc.Labels), hasNone(si.Annotations, svc.Annotations),
			hasNone(si.Labels, map[string]string{"dummy-svcexport": "dummy"}),
			hasNone(si.Annotations, map[string]string{"dummy-svcexport": "dummy"}))
	})
}

func checkLabelConflict(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deploy(t, 0, c.helloService())
	c.deploy(t, 1, c.helloService())
	labels, annotations := map[string]string{"dummy-label": "true"}, map[string]string{"dummy-annotation": "true"}
	labels2, annotations2 := map[string]string{"dummy-label2": "true"}, map[string]string{"dummy-annotation2": "true"}
	c.export(t, 0, labels, annotations)
	c.awaitImport(t, 0, nil) // a's export is the older
	c.export(t, 1, labels2, annotations2)
	c.awaitCondition(t, 0, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue)
	c.awaitCondition(t, 1, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		return errors.Join(hasAll(si.Labels, labels), hasAll(si.Annotations, annotations),
			hasNone(si.Labels, labels2), hasNone(si.Annotations, annotations2))
	})
}

func checkClusterSetIPImport(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	c.awaitCondition(t, 0, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue)
	c.awaitImportsOfType(t, mcsv1beta1.ClusterSetIP)
	c.unexport(t, 0)
	c.awaitNoImports(t)
}

func checkSessionAffinity(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	c.deployExported(t, svc)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		if si.Spec.SessionAffinity != svc.Spec.SessionAffinity || fmt.Sprint(si.Spec.SessionAffinityConfig) != fmt.Sprint(svc.Spec.SessionAffinityConfig) {
			return fmt.Errorf("sessionAffinity %q %v, want %q %v", si.Spec.SessionAffinity, si.Spec.SessionAffinityConfig,
				svc.Spec.SessionAffinity, svc.Spec.SessionAffinityConfig)
		}
		return nil
	})
}

// sameField reports, naming the field, where an import's value got is
// not the exported Service's want.
func sameField[T comparable](field string, got, want *T) error {
	if (got == nil) != (want == nil) || got != nil && *got != *want {
		var zero T
		return fmt.Errorf("%s %v, want %v", field, ptr.Deref(got, zero), ptr.Deref(want, zero))
	}
	return nil
}

func checkInternalTrafficPolicy(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
	c.deployExported(t, svc)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		return sameField("internalTrafficPolicy", si.Spec.InternalTrafficPolicy, svc.Spec.InternalTrafficPolicy)
	})
}

func checkTrafficDistribution(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	svc.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
	c.deployExported(t, svc)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		return sameField("trafficDistribution", si.Spec.TrafficDistribution, svc.Spec.TrafficDistribution)
	})
}

// For Trellis the clusterset IP is the address of the importing
// cluster's proxy, the one every clusterset name resolves to there.
func checkClusterSetIPs(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		if len(si.Spec.IPs) == 0 || len(si.Spec.IPs) != len(si.Spec.IPFamilies) {
			return fmt.Errorf("ips %v, ipFamilies %v", si.Spec.IPs, si.Spec.IPFamilies)
		}
		if !slices.Equal(si.Spec.IPs, []string{meshProxyIP}) || si.Spec.IPFamilies[0] != corev1.IPv4Protocol {
			return fmt.Errorf("ips %v, ipFamilies %v; want [%s] [IPv4]", si.Spec.IPs, si.Spec.IPFamilies, meshProxyIP)
		}
		return nil
	})
}

func checkPorts(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	c.deployExported(t, svc)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error { return samePorts(si, mcsPorts(svc.Spec.Ports...)) })
}

// exportConflicting exports svc from cluster a and then, once a's import
// is in (a's export is the older), svc2 from b, and waits until both
// exports report the conflict.
func (c *mcsCheck) exportConflicting(t *testing.T, svc, svc2 *corev1.Service) {
	t.Helper()
	c.deployExported(t, svc)
	c.awaitImport(t, 0, nil)
	c.deploy(t, 1, svc2)
	c.export(t, 1, nil, nil)
	c.awaitCondition(t, 0, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue)
	c.awaitCondition(t, 1, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue)
}

func checkPortUnion(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	svc2 := c.helloService()
	svc2.Spec.Ports = []corev1.ServicePort{svc.Spec.Ports[0], {Name: "stcp", Port: 142, Protocol: corev1.ProtocolSCTP}}
	c.exportConflicting(t, svc, svc2)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error {
		return samePorts(si, mcsPorts(append(slices.Clone(svc.Spec.Ports), svc2.Spec.Ports[1])...))
	})
}

func checkPortConflict(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	svc2 := c.helloService()
	svc2.Spec.Ports = []corev1.ServicePort{svc.Spec.Ports[0]}
	svc2.Spec.Ports[0].Port++
	c.exportConflicting(t, svc, svc2)
	c.awaitImports(t, func(si *mcsv1beta1.ServiceImport) error { return samePorts(si, mcsPorts(svc.Spec.Ports...)) })
}

func (c *mcsCheck) headless() *corev1.Service {
	svc := c.helloService()
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	return svc
}

func checkHeadlessImport(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.headless())
	c.awaitImportsOfType(t, mcsv1beta1.Headless)
	c.unexport(t, 0)
	c.awaitNoImports(t)
}

func checkHeadlessNoIPs(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.headless())
	c.awaitImport(t, 0, nil)
	consistently(t, "the Headless ServiceImport's ips", func() error {
		for i := range e.clusters {
			si, err := c.getImport(i)
			if err == nil && len(si.Spec.IPs) > 0 {
				return fmt.Errorf("cluster %s: ips %v", e.clusters[i].name, si.Spec.IPs)
			}
		}
		return nil
	})
}

func checkExternalName(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	svc.Spec.Type, svc.Spec.ExternalName, svc.Spec.IPFamilyPolicy = corev1.ServiceTypeExternalName, "example.com", nil
	svc.Spec.SessionAffinity, svc.Spec.SessionAffinityConfig = "", nil
	c.deployExported(t, svc)
	c.awaitCondition(t, 0, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse)
	consistently(t, "no ServiceImport for an ExternalName Service", func() error {
		for i := range e.clusters {
			if _, err := c.getImport(i); !apierrors.IsNotFound(err) {
				return fmt.Errorf("cluster %s: %v", e.clusters[i].name, err)
			}
		}
		return nil
	})
}

func checkHeadlessnessConflict(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.exportConflicting(t, c.helloService(), c.headless())
	c.awaitImportsOfType(t, mcsv1beta1.ClusterSetIP)
}

// --- conformance/connectivity.go

// A Service nobody exports has no clusterset name in any cluster, and a
// route that names its import (which does not exist) does not reach it
// either: the route's backend answers 500.
func checkNotExportedInaccessible(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deploy(t, 0, c.helloService())
	c.route(t, 42)
	// The route is served (its unresolved backend answers 500) before the
	// requests count.
	testsync.Eventually(t, mcsWait, "the route to the missing import to be served", func() error {
		hc := e.clusters[0].kube.NS.HTTPClient(5 * time.Second)
		defer hc.CloseIdleConnections()
		status, body, err := getBody(hc, "http://"+meshProxyIP+":42/", c.fqdn())
		if err == nil && status != http.StatusInternalServerError {
			err = fmt.Errorf("%d %q", status, body)
		}
		return err
	})
	for i, cl := range e.clusters {
		hc := cl.kube.NS.HTTPClient(5 * time.Second)
		for range 20 {
			r, err := cl.lookup(c.fqdn(), dns.TypeA)
			if err != nil || r.Rcode != dns.RcodeNameError {
				t.Errorf("cluster %s resolves %s: %v %v", cl.name, c.fqdn(), r, err)
			}
			status, body, err := getBody(hc, "http://"+meshProxyIP+":42/", c.fqdn())
			if strings.Contains(body, "pod ip") {
				t.Errorf("cluster %s reached the unexported Service: %d %q %v", e.clusters[i].name, status, body, err)
			}
		}
		hc.CloseIdleConnections()
	}
}

func checkAccessibleThroughDNS(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deploy(t, 0, c.helloService())
	c.route(t, 42)
	c.export(t, 0, nil, nil)
	c.reachesFromAll(t, 42, c.backendAddr(0), 1)
}

func checkOnlyExportingCluster(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deploy(t, 0, c.helloService())
	c.deploy(t, 1, c.helloService())
	c.route(t, 42)
	c.export(t, 0, nil, nil)
	c.reachesFromAll(t, 42, c.backendAddr(0), 10)
}

// deployWithPort4242 deploys hello in cluster a, and in b a hello whose
// one port is 4242 (to the backends' 42) named portName.
func (c *mcsCheck) deployWithPort4242(t *testing.T, portName string) {
	t.Helper()
	svc2 := c.helloService()
	svc2.Spec.Ports = []corev1.ServicePort{{Name: portName, Port: 4242, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(42)}}
	c.deploy(t, 0, c.helloService())
	c.deploy(t, 1, svc2)
}

func checkSamePortName(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployWithPort4242(t, "tcp")
	c.route(t, 42)
	c.export(t, 0, nil, nil)
	c.awaitImport(t, 0, nil)
	c.export(t, 1, nil, nil)
	// b's export is in before the requests count.
	c.awaitCondition(t, 1, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue)
	c.reachesFromAll(t, 42, c.backendAddr(0), 10)
}

func checkDifferentPortNames(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployWithPort4242(t, "tcp2")
	c.route(t, 42)
	c.route(t, 4242)
	c.export(t, 0, nil, nil)
	c.export(t, 1, nil, nil)
	c.reachesFromAll(t, 42, c.backendAddr(0), 10)
	c.reachesFromAll(t, 4242, c.backendAddr(1), 10)
}

// --- conformance/clusterip_service_dns.go

func checkDNSClusterSetIP(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	for i, cl := range e.clusters {
		si := c.awaitImport(t, i, func(si *mcsv1beta1.ServiceImport) error {
			if len(si.Spec.IPs) == 0 {
				return errors.New("no ips")
			}
			return nil
		})
		c.awaitResolve(t, cl, si.Spec.IPs)
	}
}

// awaitResolve waits until cluster cl's nameserver resolves the check's
// clusterset name, to the addresses want unless want is nil.
func (c *mcsCheck) awaitResolve(t *testing.T, cl *meshCluster, want []string) {
	t.Helper()
	testsync.Eventually(t, mcsWait, cl.name+" to resolve "+c.fqdn(), func() error {
		addrs, err := cl.resolve(c.fqdn())
		if err == nil && want != nil && !slices.Equal(addrs, want) {
			err = fmt.Errorf("A %v, want %v", addrs, want)
		}
		return err
	})
}

// exportHeadless deploys the check's headless Service in cluster 0 with
// two backends, exports it, and returns it.
func (c *mcsCheck) exportHeadless(t *testing.T) *corev1.Service {
	t.Helper()
	svc := c.headless()
	c.deployExported(t, svc, c.backendAddr(0), fmt.Sprintf("198.18.%d.20", c.index))
	return svc
}

// srvRecords returns the (port, target) of the SRV records cluster i's
// nameserver answers for name.
func srvRecords(cl *meshCluster, name string) ([]string, error) {
	r, err := cl.lookup(name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s", dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, fmt.Sprintf("%d %s", s.Port, strings.TrimSuffix(s.Target, ".")))
		}
	}
	return out, nil
}

// awaitSRV waits until every cluster's nameserver answers the check's
// clusterset name with one SRV record: svc's first port, on that name.
func (c *mcsCheck) awaitSRV(t *testing.T, svc *corev1.Service) {
	t.Helper()
	c.awaitSRVRecords(t, fmt.Sprintf("%d %s", svc.Spec.Ports[0].Port, c.fqdn()))
}

// awaitSRVRecords waits until every cluster's nameserver answers the
// check's clusterset name with the SRV records want ("port target"), in
// any order.
func (c *mcsCheck) awaitSRVRecords(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	for _, cl := range c.e.clusters {
		testsync.Eventually(t, mcsWait, cl.name+"'s SRV records for "+c.fqdn(), func() error {
			got, err := srvRecords(cl, c.fqdn())
			slices.Sort(got)
			if err == nil && !slices.Equal(got, want) {
				err = fmt.Errorf("%v, want %v", got, want)
			}
			return err
		})
	}
}

func checkDNSSRV(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.helloService()
	c.deployExported(t, svc)
	c.awaitSRV(t, svc)
}

// Trellis's nameserver refuses cluster.local: it never answers a local
// name, so the cluster's own DNS answers it with the local Service alone.
func checkClusterLocal(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var svc corev1.Service
	if err := e.clusters[0].kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: helloName}, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("the local Service has cluster IP %q", svc.Spec.ClusterIP)
	}
	// The export is known (its clusterset name resolves) when cluster.local
	// is asked.
	c.awaitImport(t, 0, nil)
	testsync.Eventually(t, mcsWait, "a's nameserver to know the export", func() error {
		_, err := e.clusters[0].resolve(c.fqdn())
		return err
	})
	for _, cl := range e.clusters {
		r, err := cl.lookup(helloName+"."+c.ns+".svc.cluster.local", dns.TypeA)
		if err != nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("cluster %s's Trellis nameserver answered the cluster.local name: %v %v", cl.name, r, err)
		}
	}
}

// --- conformance/endpoint_slice.go

func checkEndpointSlices(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.deployExported(t, c.helloService())
	names := make([][]string, len(e.clusters))
	for i, cl := range e.clusters {
		si := c.awaitImport(t, i, func(si *mcsv1beta1.ServiceImport) error {
			if len(si.Spec.IPFamilies) == 0 {
				return errors.New("no ipFamilies")
			}
			return nil
		})
		for _, family := range si.Spec.IPFamilies {
			addressType := discoveryv1.AddressType(family)
			var found *discoveryv1.EndpointSlice
			testsync.Eventually(t, mcsWait, fmt.Sprintf("an MCS EndpointSlice (%s) in %s", addressType, cl.name), func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				var list discoveryv1.EndpointSliceList
				if err := cl.kc.List(ctx, &list, client.InNamespace(c.ns)); err != nil {
					return err
				}
				for i := range list.Items {
					es := &list.Items[i]
					_, hasName := es.Labels[mcsv1beta1.LabelServiceName]
					_, hasCluster := es.Labels[mcsv1beta1.LabelSourceCluster]
					if hasName && hasCluster && es.AddressType == addressType && len(es.Endpoints) > 0 {
						found = es
						return nil
					}
				}
				return fmt.Errorf("none among %d slices", len(list.Items))
			})
			if found.Labels[mcsv1beta1.LabelServiceName] != helloName {
				t.Errorf("%s: %s=%q", found.Name, mcsv1beta1.LabelServiceName, found.Labels[mcsv1beta1.LabelServiceName])
			}
			if found.Labels[mcsv1beta1.LabelSourceCluster] != "a" {
				t.Errorf("%s: %s=%q, want a", found.Name, mcsv1beta1.LabelSourceCluster, found.Labels[mcsv1beta1.LabelSourceCluster])
			}
			if m, ok := found.Labels[discoveryv1.LabelManagedBy]; !ok || m == "endpointslice-controller.k8s.io" {
				t.Errorf("%s: %s=%q", found.Name, discoveryv1.LabelManagedBy, m)
			}
			if len(found.Endpoints) != 1 || !slices.Equal(found.Endpoints[0].Addresses, []string{c.backendAddr(0)}) {
				t.Errorf("%s: endpoints %v, want a's %s", found.Name, found.Endpoints, c.backendAddr(0))
			}
			names[i] = append(names[i], found.Name)
		}
	}
	// Beyond the suite: a's endpoints change (a second one is ready), and
	// so does every cluster's MCS slice of a.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var src discoveryv1.EndpointSlice
	if err := e.clusters[0].kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: helloName + "-1"}, &src); err != nil {
		t.Fatal(err)
	}
	second := fmt.Sprintf("198.18.%d.20", c.index)
	src.Endpoints = append(src.Endpoints, discoveryv1.Endpoint{Addresses: []string{second}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	if err := e.clusters[0].kc.Update(ctx, &src); err != nil {
		t.Fatal(err)
	}
	for i, cl := range e.clusters {
		testsync.Eventually(t, mcsWait, "the MCS slice in "+cl.name+" to list a's second endpoint", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var es discoveryv1.EndpointSlice
			if err := cl.kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: names[i][0]}, &es); err != nil {
				return err
			}
			var got []string
			for _, ep := range es.Endpoints {
				got = append(got, ep.Addresses...)
			}
			if want := []string{c.backendAddr(0), second}; !slices.Equal(got, want) {
				return fmt.Errorf("endpoints %v, want %v", got, want)
			}
			return nil
		})
	}

	c.unexport(t, 0)
	for i, cl := range e.clusters {
		for _, name := range names[i] {
			testsync.Eventually(t, mcsWait, fmt.Sprintf("EndpointSlice %s in %s to be deleted", name, cl.name), func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				err := cl.kc.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: name}, &discoveryv1.EndpointSlice{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				if err == nil {
					return errors.New("it still exists")
				}
				return err
			})
		}
	}
}

// --- conformance/headless_service_dns.go
//
// Trellis connects clusters through their proxies: pod addresses of one
// cluster mean nothing in another unless the operator declared them in
// one flat pod network (`trellis cluster set NAME --pod-network N`). So a
// headless import's names resolve to the pods' own addresses only within
// such a network (the two A-record checks, run with a, b and c in one),
// and to the local proxy otherwise (Trellis's subtests of the default,
// with every cluster isolated).

// podAddrs are the addresses of the pods hello-0 and hello-1 that
// exportHeadless deploys in a.
func (c *mcsCheck) podAddrs() []string {
	return []string{c.backendAddr(0), fmt.Sprintf("198.18.%d.20", c.index)}
}

// awaitResolveName waits until cluster cl's nameserver answers name's A
// records with want.
func awaitResolveName(t *testing.T, cl *meshCluster, name string, want []string) {
	t.Helper()
	testsync.Eventually(t, mcsWait, cl.name+" to resolve "+name, func() error {
		addrs, err := cl.resolve(name)
		if err == nil && !slices.Equal(addrs, want) {
			err = fmt.Errorf("A %v, want %v", addrs, want)
		}
		return err
	})
}

// The suite's property: every cluster, in one pod network with a,
// answers the ready endpoints' addresses.
func checkHeadlessDNS(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.exportHeadless(t)
	for _, cl := range e.clusters {
		c.awaitResolve(t, cl, c.podAddrs())
	}
}

// The suite's property: in every cluster, in one pod network with a,
// hello-<n>.a.… resolves to that pod's address; a hostname no ready pod
// has, or a cluster that exports none, does not exist.
func checkHeadlessPodDNS(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.exportHeadless(t)
	for _, cl := range e.clusters {
		for n, addr := range c.podAddrs() {
			awaitResolveName(t, cl, fmt.Sprintf("hello-%d.a.%s", n, c.fqdn()), []string{addr})
		}
		c.assertNoPodNames(t, cl)
	}
}

// assertNoPodNames asserts that cl's nameserver has no name for a pod
// hello-2 of a, nor for b's hello-0 (b exports none).
func (c *mcsCheck) assertNoPodNames(t *testing.T, cl *meshCluster) {
	t.Helper()
	for _, name := range []string{"hello-2.a." + c.fqdn(), "hello-0.b." + c.fqdn()} {
		if r, err := cl.lookup(name, dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
			t.Errorf("cluster %s: %s: %v %v, want NXDOMAIN", cl.name, name, r, err)
		}
	}
}

// Trellis's default, every cluster isolated: a headless import's name
// resolves to the local proxy, like a ClusterSetIP one.
func checkHeadlessDNSIsolated(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.exportHeadless(t)
	for _, cl := range e.clusters {
		c.awaitResolve(t, cl, []string{meshProxyIP})
	}
}

// Trellis's default, every cluster isolated: the pod name of an exported
// pod with a hostname resolves in every cluster to that cluster's proxy
// (which sends it to that pod only).
func checkHeadlessPodDNSIsolated(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.exportHeadless(t)
	for _, cl := range e.clusters {
		for n := range c.podAddrs() {
			awaitResolveName(t, cl, fmt.Sprintf("hello-%d.a.%s", n, c.fqdn()), []string{meshProxyIP})
		}
		c.assertNoPodNames(t, cl)
	}
}

// A cluster outside the pod network gets the proxy: with c moved out
// (`cluster set c --pod-network ”`), a and b answer a's pods' addresses
// and c its proxy's, for the Service's name and the pods'. Once c (now
// outside) exports the Service too, its name answers the proxy in a and b
// as well (a name means one thing), while a's pods' names keep their
// addresses there and c's pod's name is the proxy everywhere.
func checkHeadlessOutsideThePodNetwork(t *testing.T, e *mcsEnv, c *mcsCheck) {
	e.trellis(t, "cluster", "set", "c", "--pod-network", "")
	c.exportHeadless(t)
	a, b, cc := e.clusters[0], e.clusters[1], e.clusters[2]
	for _, cl := range []*meshCluster{a, b} {
		c.awaitResolve(t, cl, c.podAddrs())
		awaitResolveName(t, cl, "hello-0.a."+c.fqdn(), c.podAddrs()[:1])
	}
	c.awaitResolve(t, cc, []string{meshProxyIP})
	awaitResolveName(t, cc, "hello-0.a."+c.fqdn(), []string{meshProxyIP})

	c.deploy(t, 2, c.headless(), fmt.Sprintf("198.18.%d.12", c.index))
	c.export(t, 2, nil, nil)
	for _, cl := range e.clusters {
		c.awaitResolve(t, cl, []string{meshProxyIP})
		awaitResolveName(t, cl, "hello-0.c."+c.fqdn(), []string{meshProxyIP})
	}
	for _, cl := range []*meshCluster{a, b} {
		awaitResolveName(t, cl, "hello-0.a."+c.fqdn(), c.podAddrs()[:1])
	}
}

// Every cluster answers one SRV record per ready pod and port, naming the
// pod (both of a's pods have hostnames, so none names the Service).
func checkHeadlessSRV(t *testing.T, e *mcsEnv, c *mcsCheck) {
	svc := c.exportHeadless(t)
	port := svc.Spec.Ports[0].Port
	c.awaitSRVRecords(t, fmt.Sprintf("%d hello-0.a.%s", port, c.fqdn()), fmt.Sprintf("%d hello-1.a.%s", port, c.fqdn()))
}

// --- Trellis's own

// An exported Service's clusterset name is served on its HTTP ports with
// no route naming it: every cluster's client resolves
// cart.shop.svc.clusterset.local with its own nameserver and is answered
// by both exporting clusters' pods (a's and b's, through the peer hop
// from the other clusters). A port with no HTTP hint is not served. A
// route naming the host then takes it over, in every cluster.
func checkClustersetNameWithoutRoute(t *testing.T, e *mcsEnv, c *mcsCheck) {
	c.ns, c.svc = "shop", "cart"
	for _, cl := range e.clusters {
		apply(t, cl.kc, namespaceYAML(c.ns))
	}
	cart := func() *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.svc},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": c.svc}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 4242, Protocol: corev1.ProtocolTCP}, // beside the Gateway's listener p4242
				{Name: "tcp", Port: 9090, Protocol: corev1.ProtocolTCP},
			}},
		}
	}
	c.deploy(t, 0, cart())
	c.deploy(t, 1, cart())
	c.export(t, 0, nil, nil)
	c.export(t, 1, nil, nil)
	for i := range e.clusters {
		// The import says which ports are served without a route.
		c.awaitImport(t, i, func(si *mcsv1beta1.ServiceImport) error {
			cond := meta.FindStatusCondition(si.Status.Conditions, "trellis.dev/ClustersetName")
			if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != "Served" ||
				!strings.Contains(cond.Message, "port 4242 (HTTP1)") || !strings.Contains(cond.Message, "not on 9090/TCP") {
				return fmt.Errorf("condition %+v", cond)
			}
			return nil
		})
	}
	want := map[string]bool{"pod ip " + c.backendAddr(0): true, "pod ip " + c.backendAddr(1): true}
	for i, cl := range e.clusters {
		testsync.Eventually(t, mcsWait, "requests from "+cl.name+" to reach both exporting clusters", func() error {
			seen := map[string]bool{}
			for range 20 {
				status, body, err := c.request(i, 4242)
				if err != nil {
					return err
				}
				if status != http.StatusOK || !want[body] {
					return fmt.Errorf("%d %q", status, body)
				}
				seen[body] = true
			}
			if len(seen) != 2 {
				return fmt.Errorf("20 requests answered only by %v", seen)
			}
			return nil
		})
		for range 5 {
			if status, body, err := c.request(i, 9090); err == nil || strings.Contains(body, "pod ip") {
				t.Errorf("from %s, the port without an HTTP hint answered: %d %q %v", cl.name, status, body, err)
			}
		}
	}

	// A route in a naming the host, to a's Service only-a, wins in every
	// cluster.
	onlyA := fmt.Sprintf("198.18.%d.20", c.index)
	c.deploy(t, 0, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "only-a"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 4242, Protocol: corev1.ProtocolTCP}}}}, onlyA)
	apply(t, e.clusters[0].kc, fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart-explicit, namespace: %s}
spec:
  parentRefs: [{name: mcs, namespace: %s, sectionName: p4242}]
  hostnames: [%s]
  rules:
  - backendRefs: [{name: only-a, port: 4242}]
`, c.ns, mcsGatewayNS, c.fqdn()))
	c.reachesFromAll(t, 4242, onlyA, 10)
}
