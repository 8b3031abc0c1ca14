package kube

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A cluster's data saved as its data cache is where a later cluster of the
// same cache name starts, with the objects created before the save; a
// cache dropped, or another name, starts from the template.
func TestDataCache(t *testing.T) {
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kept"}, Data: map[string]string{"k": "v"}}

	first := Start(t, Options{DataCache: name})
	t.Cleanup(func() { first.DropDataCache(t) })
	if first.DataCached() {
		t.Fatal("a new cache name started from a cache")
	}
	Create(ctx, t, first.Client(t), cm.DeepCopy())
	first.SaveDataCache(t)
	// The cluster runs on after the save, with what it had.
	var got corev1.ConfigMap
	if err := first.Client(t).Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil || got.Data["k"] != "v" {
		t.Fatalf("after the save: %v, %v", got.Data, err)
	}

	second := Start(t, Options{DataCache: name})
	if !second.DataCached() {
		t.Fatal("the saved cache was not used")
	}
	got = corev1.ConfigMap{}
	if err := second.Client(t).Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil || got.Data["k"] != "v" {
		t.Fatalf("started from the cache: %v, %v", got.Data, err)
	}

	if other := Start(t, Options{DataCache: name + "-other"}); other.DataCached() {
		t.Error("another cache name started from this cache")
	}
	second.DropDataCache(t)
	if third := Start(t, Options{DataCache: name}); third.DataCached() {
		t.Error("a dropped cache was used")
	}
}
