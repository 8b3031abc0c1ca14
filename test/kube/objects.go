package kube

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Create creates obj in the cluster cl talks to, failing t when it cannot.
func Create(ctx context.Context, t testing.TB, cl client.Client, obj client.Object) {
	t.Helper()
	if err := cl.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// Get reads the object ns/name into obj, failing t when it cannot.
func Get(ctx context.Context, t testing.TB, cl client.Client, ns, name string, obj client.Object) {
	t.Helper()
	if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatalf("getting %T %s/%s: %v", obj, ns, name, err)
	}
}
