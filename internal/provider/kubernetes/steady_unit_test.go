package kubernetes

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestSteadyVersions checks the version the translator sees of a route: it
// stays while only the route's status (its resourceVersion) changes, and
// changes with its spec (generation), labels, annotations or identity
// (UID); ownVersion gives the route's own version back, for writes.
func TestSteadyVersions(t *testing.T) {
	r := &Reconciler{}
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "r", UID: "a", ResourceVersion: "1", Generation: 1}
	steps := []struct {
		name   string
		change func(m *metav1.ObjectMeta)
		want   string // the version the translator sees
	}{
		{"first seen", func(*metav1.ObjectMeta) {}, "1"},
		{"status written", func(m *metav1.ObjectMeta) { m.ResourceVersion = "2" }, "1"},
		{"status written again", func(m *metav1.ObjectMeta) { m.ResourceVersion = "3" }, "1"},
		{"spec changed", func(m *metav1.ObjectMeta) { m.ResourceVersion, m.Generation = "4", 2 }, "4"},
		{"status written after", func(m *metav1.ObjectMeta) { m.ResourceVersion = "5" }, "4"},
		{"annotation set", func(m *metav1.ObjectMeta) {
			m.ResourceVersion, m.Annotations = "6", map[string]string{"trellis.dev/locality": "local-first"}
		}, "6"},
		{"label set", func(m *metav1.ObjectMeta) { m.ResourceVersion, m.Labels = "7", map[string]string{"a": "b"} }, "7"},
		{"deleted and made again, same generation", func(m *metav1.ObjectMeta) { m.ResourceVersion, m.UID = "8", types.UID("b") }, "8"},
	}
	for _, s := range steps {
		s.change(&meta)
		route := &gatewayv1.HTTPRoute{ObjectMeta: meta}
		r.steady("HTTPRoute", route)
		if got := route.ResourceVersion; got != s.want {
			t.Errorf("%s: the translator sees version %q; want %q", s.name, got, s.want)
		}
		if got := r.ownVersion("HTTPRoute", route).GetResourceVersion(); got != meta.ResourceVersion {
			t.Errorf("%s: own version %q; want the route's own %q", s.name, got, meta.ResourceVersion)
		}
	}
	r.gone("HTTPRoute", types.NamespacedName{Namespace: "ns", Name: "r"})
	if len(r.versions) != 0 {
		t.Errorf("%d versions kept of routes gone", len(r.versions))
	}
}
