package kube

import (
	"context"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

func TestDebugTiming(t *testing.T) {
	c := Start(t, Options{})
	ctx := context.Background()
	cl := c.Client(t)
	s := time.Now()
	var crds apiextensionsv1.CustomResourceDefinitionList
	cl.List(ctx, &crds)
	t.Logf("list crds %v", time.Since(s)); s = time.Now()
	m, merr := cl.RESTMapper().RESTMapping(gatewayv1.SchemeGroupVersion.WithKind("GatewayClass").GroupKind(), "v1")
	t.Logf("mapping %v %v %v", time.Since(s), m, merr); s = time.Now()
	err := cl.Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "smoke"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "trellis.dev/smoke-test"}})
	t.Logf("create gc %v %v", time.Since(s), err); s = time.Now()
	err = cl.Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "smoke2"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "trellis.dev/smoke-test"}})
	t.Logf("create gc2 %v %v", time.Since(s), err); s = time.Now()
	for _, n := range []string{"kube-apiserver"} {
		b, _ := os.ReadFile(c.dir + "/" + n + ".log")
		os.WriteFile("/tmp/apiserver-debug.log", b, 0o644)
	}
}
