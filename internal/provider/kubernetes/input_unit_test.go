package kubernetes

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestKeptInputReadsWhatChanged lists the objects once, then reads only
// those named changed: an update replaces the object in its place, a new
// one is added at the end, one gone is removed (the last taking its
// place) with the index following, and many changes list everything again.
func TestKeptInputReadsWhatChanged(t *testing.T) {
	ctx := context.Background()
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	svc := func(name, rv string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"v": rv}}}
	}
	var objs []client.Object
	for i := range 40 {
		objs = append(objs, svc(fmt.Sprintf("s-%02d", i), "1"))
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	var (
		k    keptInput
		seen []string
		gone []string
	)
	k.init(map[string]bool{"GRPCRoute": true, "TLSRoute": true})
	k.seen = func(kind string, o client.Object) { seen = append(seen, kind+"/"+o.GetName()) }
	k.gone = func(kind string, key types.NamespacedName) { gone = append(gone, kind+"/"+key.Name) }
	if relisted, err := k.update(ctx, c, nil); err != nil || !relisted || len(k.services) != 40 {
		t.Fatalf("first update: relisted %v, %d services, %v; want a list of 40", relisted, len(k.services), err)
	}
	order := func() []string {
		var names []string
		for _, s := range k.services {
			names = append(names, s.Name)
		}
		return names
	}
	before := order()

	// s-05 changed, s-40 new, s-10 gone; s-20 named but unchanged.
	update := svc("s-05", "2")
	if err := c.Get(ctx, client.ObjectKeyFromObject(update), &corev1.Service{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, update); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, svc("s-40", "1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, svc("s-10", "1")); err != nil {
		t.Fatal(err)
	}
	seen, gone = nil, nil
	changed := map[objectKey]bool{{"Service", "ns", "s-05"}: true, {"Service", "ns", "s-40"}: true, {"Service", "ns", "s-10"}: true, {"Service", "ns", "s-20"}: true}
	if relisted, err := k.update(ctx, c, changed); err != nil || relisted {
		t.Fatalf("update of 4 of 40: relisted %v, %v; want them read", relisted, err)
	}
	if len(seen) != 3 || len(gone) != 1 || gone[0] != "Service/s-10" {
		t.Errorf("read %v, gone %v; want 3 read and s-10 gone", seen, gone)
	}
	want := append([]string(nil), before...)
	want[10] = "s-39" // the last takes the place of the one gone
	want = append(want[:39], "s-40")
	if got := order(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("order after the update:\n got %v\nwant %v", got, want)
	}
	if k.services[5].Labels["v"] != "2" {
		t.Errorf("s-05 not replaced: labels %v", k.services[5].Labels)
	}
	for i, s := range k.services {
		if j := k.kinds["Service"].index[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}]; j != i {
			t.Errorf("index of %s is %d; it is at %d", s.Name, j, i)
		}
	}
	if n := len(k.kinds["Service"].index); n != len(k.services) {
		t.Errorf("index of %d for %d services", n, len(k.services))
	}

	// More than an eighth changed: everything listed again.
	changed = map[objectKey]bool{}
	for i := range 6 {
		changed[objectKey{"Service", "ns", fmt.Sprintf("s-%02d", i)}] = true
	}
	if relisted, err := k.update(ctx, c, changed); err != nil || !relisted || len(k.services) != 40 {
		t.Errorf("update of 6 of 40: relisted %v, %d services, %v; want a list of 40", relisted, len(k.services), err)
	}
}
