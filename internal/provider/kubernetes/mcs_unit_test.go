package kubernetes

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// The model export of a ServiceExport: validity from the Service, ports,
// type and targets from the Service and its slices (a port's target port
// by name, terminating-but-serving endpoints draining, not-ready ones left
// out).
func TestExports(t *testing.T) {
	r := &Reconciler{cluster: "east", view: &exportView{}}
	created := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	svc := func(name string, f func(*corev1.Service)) corev1.Service {
		s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, AppProtocol: ptrTo("http")}, {Name: "metrics", Port: 9090}},
		}}
		if f != nil {
			f(&s)
		}
		return s
	}
	in := &translate.Input{
		Services: []corev1.Service{
			svc("cart", nil),
			svc("ext", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }),
			svc("db", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }),
		},
		EndpointSlices: []discoveryv1.EndpointSlice{{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "cart-1", Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("metrics"), Port: ptrTo[int32](9100)}, {Name: ptrTo("http"), Port: ptrTo[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.0.0.2"}},
				{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(false), Serving: ptrTo(true), Terminating: ptrTo(true)}},
				{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(false)}},
			},
		}},
	}
	se := func(name string) mcsv1beta1.ServiceExport {
		return mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, CreationTimestamp: created}}
	}
	res := r.exports(in, []mcsv1beta1.ServiceExport{se("cart"), se("ext"), se("db"), se("gone")})
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	for i, want := range []struct {
		valid  bool
		reason string
	}{{true, "Valid"}, {false, "InvalidServiceType"}, {true, "Valid"}, {false, "NoService"}} {
		if res[i].valid != want.valid || res[i].reason != want.reason || (res[i].export != nil) != want.valid {
			t.Errorf("%s: valid %v %s (export %v); want %v %s", res[i].se.Name, res[i].valid, res[i].reason, res[i].export != nil, want.valid, want.reason)
		}
	}
	cart := res[0].export
	// The ServiceExport's creation time is not sent: the control plane
	// stamps when it first stored the export.
	if cart.Name != "shop.cart.east" || cart.Owner != "east" || cart.Type != model.ExportClusterSetIP || !cart.ExportedAt.IsZero() {
		t.Errorf("cart export %+v", cart)
	}
	wantHTTP := []model.Target{
		{Address: "10.0.0.1", Port: 8080, Cluster: "east", State: model.TargetDraining},
		{Address: "10.0.0.2", Port: 8080, Cluster: "east", State: model.TargetActive},
	}
	if p := cart.Ports[0]; p.Name != "http" || p.AppProtocol != "http" || p.Protocol != "TCP" || !slices.Equal(p.Targets, wantHTTP) {
		t.Errorf("http port %+v", p)
	}
	if p := cart.Ports[1]; p.Protocol != "TCP" || len(p.Targets) != 2 || p.Targets[0].Port != 9100 {
		t.Errorf("metrics port %+v", p)
	}
	if res[2].export.Type != model.ExportHeadless {
		t.Errorf("db type %s, want Headless", res[2].export.Type)
	}
}

// The controller manages only the labels and annotations it copied from
// exports: a key an export drops is removed, anybody else's stays, and an
// export cannot take over the controller's own keys.
func TestImportSpecKeepsOtherKeys(t *testing.T) {
	r := &Reconciler{}
	im := &mcs.Import{Type: model.ExportClusterSetIP, Ports: []model.ExportPort{{Name: "http", Protocol: "TCP", Port: 80}},
		Labels:      map[string]string{"tier": "gold", ManagedByLabel: "someone-else"},
		Annotations: map[string]string{"team": "shop"},
	}
	si := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"user": "x"},
		Annotations: map[string]string{"trellis.dev/cluster-weights": "east=90,west=10"},
	}}
	if !r.importSpec(si, im) {
		t.Fatal("no change on a new import")
	}
	wantLabels := map[string]string{"user": "x", "tier": "gold", ManagedByLabel: ManagedByValue}
	wantAnn := map[string]string{"trellis.dev/cluster-weights": "east=90,west=10", "team": "shop",
		ExportedLabelsAnnotation: "tier", ExportedAnnotationsAnnotation: "team"}
	if !maps.Equal(si.Labels, wantLabels) || !maps.Equal(si.Annotations, wantAnn) {
		t.Errorf("labels %v, annotations %v\nwant %v, %v", si.Labels, si.Annotations, wantLabels, wantAnn)
	}
	if r.importSpec(si, im) {
		t.Error("a second identical update reports a change")
	}

	im.Labels, im.Annotations = map[string]string{"zone": "b"}, nil
	if !r.importSpec(si, im) {
		t.Fatal("no change when the exported keys changed")
	}
	wantLabels = map[string]string{"user": "x", "zone": "b", ManagedByLabel: ManagedByValue}
	wantAnn = map[string]string{"trellis.dev/cluster-weights": "east=90,west=10", ExportedLabelsAnnotation: "zone"}
	if !maps.Equal(si.Labels, wantLabels) || !maps.Equal(si.Annotations, wantAnn) {
		t.Errorf("labels %v, annotations %v\nwant %v, %v", si.Labels, si.Annotations, wantLabels, wantAnn)
	}
	if si.Spec.Type != mcsv1beta1.ClusterSetIP || len(si.Spec.IPs) != 0 || len(si.Spec.Ports) != 1 {
		t.Errorf("spec %+v", si.Spec)
	}
}

// The MCS EndpointSlices of an import: per exporting cluster and family,
// the cluster's targets on the import's ports (not on a port the merge
// dropped), labelled with the import and the cluster; endpoints whose
// ports differ in separate slices; draining targets not ready but serving.
func TestImportSlices(t *testing.T) {
	at := metav1.Now().UTC()
	target := func(cluster, addr string, port int32, state model.TargetState) model.Target {
		return model.Target{Cluster: cluster, Address: addr, Port: port, State: state}
	}
	east := &model.ServiceExport{
		Meta: model.Meta{Name: model.ExportName("east", "shop", "cart"), Owner: "east"}, Namespace: "shop", Service: "cart",
		Type: model.ExportClusterSetIP, ExportedAt: at,
		Ports: []model.ExportPort{
			{Name: "http", Protocol: "TCP", Port: 80, Targets: []model.Target{
				target("east", "198.18.0.1", 8080, model.TargetActive), target("east", "198.18.0.2", 8080, model.TargetDraining),
				target("east", "fd00::1", 8080, model.TargetActive), target("east", "198.18.0.3", 9090, model.TargetActive),
			}},
		},
	}
	west := &model.ServiceExport{
		Meta: model.Meta{Name: model.ExportName("west", "shop", "cart"), Owner: "west"}, Namespace: "shop", Service: "cart",
		Type: model.ExportClusterSetIP, ExportedAt: at.Add(time.Second),
		Ports: []model.ExportPort{
			// Conflicts with east's http (older): dropped from the import.
			{Name: "http", Protocol: "TCP", Port: 81, Targets: []model.Target{target("west", "198.18.0.9", 8080, model.TargetActive)}},
			{Name: "admin", Protocol: "TCP", Port: 9000, Targets: []model.Target{target("west", "198.18.0.9", 9001, model.TargetActive)}},
		},
	}
	groups := mcs.Group([]*model.ServiceExport{east, west})
	merged := map[[2]string]*mcs.Import{}
	for k, g := range groups {
		merged[k] = mcs.Merge(g)
	}
	if got := importSlices(groups, merged, map[string]bool{"shop": false}); len(got) != 0 {
		t.Errorf("slices in a namespace that does not exist: %v", got)
	}
	got := importSlices(groups, merged, map[string]bool{"shop": true})
	var lines []string
	for _, es := range got {
		if es.Namespace != "shop" || es.Labels[mcsv1beta1.LabelServiceName] != "cart" || es.Labels[discoveryv1.LabelManagedBy] != MCSSliceManager ||
			es.Labels[discoveryv1.LabelServiceName] != "" || !strings.HasPrefix(es.Name, "cart-") {
			t.Errorf("slice %s/%s labels %v", es.Namespace, es.Name, es.Labels)
		}
		var ports, eps []string
		for _, p := range es.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s:%d", *p.Name, *p.Protocol, *p.Port))
		}
		for _, ep := range es.Endpoints {
			eps = append(eps, fmt.Sprintf("%s ready=%v serving=%v", ep.Addresses[0], *ep.Conditions.Ready, *ep.Conditions.Serving))
		}
		lines = append(lines, fmt.Sprintf("%s %s %v %v", es.Labels[mcsv1beta1.LabelSourceCluster], es.AddressType, ports, eps))
	}
	slices.Sort(lines)
	want := []string{
		"east IPv4 [http/TCP:8080] [198.18.0.1 ready=true serving=true 198.18.0.2 ready=false serving=true]",
		"east IPv4 [http/TCP:9090] [198.18.0.3 ready=true serving=true]",
		"east IPv6 [http/TCP:8080] [fd00::1 ready=true serving=true]",
		"west IPv4 [admin/TCP:9001] [198.18.0.9 ready=true serving=true]",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("slices:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// The names are stable and distinct.
	again := importSlices(groups, merged, map[string]bool{"shop": true})
	if !maps.Equal(keysOf(got), keysOf(again)) || len(got) != 4 {
		t.Errorf("names %v then %v", keysOf(got), keysOf(again))
	}
}

func keysOf[V any](m map[[2]string]V) map[[2]string]bool {
	out := map[[2]string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// The ServiceImport says whether, and on which ports, its clusterset name
// is served without a route.
func TestClustersetCondition(t *testing.T) {
	ports := func(ps ...model.ExportPort) *mcs.Import {
		return &mcs.Import{Namespace: "shop", Name: "cart", Ports: ps}
	}
	for _, tc := range []struct {
		name   string
		im     *mcs.Import
		status metav1.ConditionStatus
		reason string
		msg    []string
	}{
		{"http and tcp", ports(model.ExportPort{Name: "http", Protocol: "TCP", Port: 8080}, model.ExportPort{Name: "tcp", Protocol: "TCP", Port: 9090}),
			metav1.ConditionTrue, ReasonClustersetNameServed, []string{"cart.shop.svc.clusterset.local is served", "port 8080 (HTTP1)", "not on 9090/TCP"}},
		{"grpc by appProtocol", ports(model.ExportPort{Name: "api", Protocol: "TCP", AppProtocol: "grpc", Port: 9000}),
			metav1.ConditionTrue, ReasonClustersetNameServed, []string{"port 9000 (GRPC)"}},
		{"no hint", ports(model.ExportPort{Name: "tcp", Protocol: "TCP", Port: 42}, model.ExportPort{Name: "udp", Protocol: "UDP", Port: 42}),
			metav1.ConditionFalse, ReasonNoHTTPPorts, []string{"not served without a route", "a route naming the host"}},
		{"bad weights", &mcs.Import{Namespace: "shop", Name: "cart", Annotations: map[string]string{mcs.ClusterWeightsAnnotation: "east=0"},
			Ports: []model.ExportPort{{Name: "http", Protocol: "TCP", Port: 80}}},
			metav1.ConditionFalse, ReasonInvalidClusterWeights, []string{"every weight is 0"}},
	} {
		c := clustersetCondition(tc.im)
		if c.Type != ConditionClustersetName || c.Status != tc.status || c.Reason != tc.reason {
			t.Errorf("%s: %s %s %s, want %s %s", tc.name, c.Type, c.Status, c.Reason, tc.status, tc.reason)
		}
		for _, m := range tc.msg {
			if !strings.Contains(c.Message, m) {
				t.Errorf("%s: message %q lacks %q", tc.name, c.Message, m)
			}
		}
	}
}

// Once the control plane holds an export, the controller sends it back with
// the control plane's stamp (so that what it sends equals what is held);
// an export from a namespace its admission does not list is not sent, and
// is Valid=False, NamespaceNotAllowed.
func TestExportsFollowTheControlPlane(t *testing.T) {
	stamp := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	r := &Reconciler{cluster: "east", view: &exportView{}}
	r.view.set(&model.Snapshot{Objects: model.Objects{
		Clusters: []model.Cluster{{Meta: model.Meta{Name: "east", Owner: model.ControlPlaneOwner}, ExportNamespaces: []string{"shop"}}},
		Exports: []model.ServiceExport{{Meta: model.Meta{Name: "shop.cart.east", Owner: "east", Revision: 3},
			Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP, ExportedAt: stamp}},
	}})
	in := &translate.Input{Services: []corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "cart"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
	}}
	res := r.exports(in, []mcsv1beta1.ServiceExport{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "cart"}},
	})
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	if e := res[0].export; e == nil || !e.ExportedAt.Equal(stamp) {
		t.Errorf("shop/cart export %+v, want the control plane's stamp %s", e, stamp)
	}
	if res[1].valid || res[1].export != nil || res[1].reason != ReasonNamespaceNotAllowed ||
		!strings.Contains(res[1].message, "namespace web") || !strings.Contains(res[1].message, "east") {
		t.Errorf("web/cart: valid %v, reason %s, message %q, export %v", res[1].valid, res[1].reason, res[1].message, res[1].export)
	}
}
