package kubernetes

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// A Headless export carries its ready endpoints' hostnames (both families
// of a dual-stack pod under one name); a bad hostname, a not-ready
// endpoint and a second pod claiming a taken name are left out, and the
// Valid condition's message says which.
func TestExportHostnames(t *testing.T) {
	r := &Reconciler{cluster: "east", view: &exportView{}}
	slice := func(name string, family discoveryv1.AddressType, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
			AddressType: family,
			Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: ptrTo[int32](8080)}},
			Endpoints:   eps,
		}
	}
	ep := func(host, addr string, ready bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(ready)}}
		if host != "" {
			e.Hostname = ptrTo(host)
		}
		return e
	}
	headless := func(name string, clusterIP string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP, Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		}}
	}
	in := &translate.Input{
		Services: []corev1.Service{headless("db", corev1.ClusterIPNone)},
		EndpointSlices: []discoveryv1.EndpointSlice{
			slice("db-v4", discoveryv1.AddressTypeIPv4,
				ep("web-0", "10.0.0.1", true), ep("web-1", "10.0.0.2", false), ep("Web_2", "10.0.0.3", true),
				ep("", "10.0.0.4", true), ep("web-0", "10.0.0.5", true)),
			slice("db-v6", discoveryv1.AddressTypeIPv6, ep("web-0", "fd00::1", true)),
		},
	}
	se := mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}}
	res := r.exports(in, []mcsv1beta1.ServiceExport{se})
	if res[0].export == nil {
		t.Fatalf("not exported: %s %s", res[0].message, res[0].failed)
	}
	want := []model.ExportHostname{{Hostname: "web-0", Addresses: []string{"10.0.0.1", "fd00::1"}}}
	if got := res[0].export.Hostnames; !reflect.DeepEqual(got, want) {
		t.Errorf("hostnames %+v, want %+v", got, want)
	}
	for _, note := range []string{`endpoints[2].hostname "Web_2" is not an RFC 1123 label`, `endpoints[4].hostname "web-0" is already the name of 10.0.0.1`} {
		if !strings.Contains(res[0].message, note) {
			t.Errorf("message %q does not say %q", res[0].message, note)
		}
	}

	// A ClusterSetIP export names no pods, hostnames or not.
	in.Services[0] = headless("db", "10.96.0.10")
	if res := r.exports(in, []mcsv1beta1.ServiceExport{se}); res[0].export == nil || res[0].export.Hostnames != nil {
		t.Errorf("ClusterSetIP export: %+v", res[0].export)
	}
}

// An export of 100,000 hostnames is cut at model.MaxExportHostnames and
// still exported (the model accepts it); the message counts the rest.
func TestExportHostnamesBounded(t *testing.T) {
	eps := make([]discoveryv1.Endpoint, 100_000)
	for i := range eps {
		eps[i] = discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)}, Hostname: ptrTo(fmt.Sprintf("web-%d", i))}
	}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "db-1"}, AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps}
	hostnames, skipped := exportHostnames([]*discoveryv1.EndpointSlice{es})
	if len(hostnames) != model.MaxExportHostnames || len(skipped) != len(eps)-model.MaxExportHostnames {
		t.Fatalf("%d hostnames, %d skipped", len(hostnames), len(skipped))
	}
	if note := skippedNote(skipped); !strings.Contains(note, fmt.Sprintf("(and %d more)", len(skipped)-3)) || len(note) > 1000 {
		t.Errorf("note %q", note)
	}
	e := &model.ServiceExport{Meta: model.Meta{Name: model.ExportName("east", "shop", "db"), Owner: "east"}, Namespace: "shop", Service: "db",
		Type: model.ExportHeadless, Hostnames: hostnames}
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
}
