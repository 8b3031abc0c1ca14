package kube

import (
	"sync"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gatewayv1alpha3 "sigs.k8s.io/gateway-api/apis/v1alpha3"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayxv1alpha1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/api/v1alpha1"
)

// Scheme returns the types a Cluster's clients know: every built-in
// Kubernetes group (core, discovery, apps, rbac, ...), apiextensions v1,
// Gateway API v1, v1beta1, v1alpha2, v1alpha3 and its experimental
// gateway.networking.x-k8s.io v1alpha1, Multi-Cluster Services v1alpha1 and
// v1beta1, and trellis.dev v1alpha1. It is built once and shared; do not add to it.
var Scheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		apiextensionsv1.AddToScheme,
		gatewayv1.Install,
		gatewayv1beta1.Install,
		gatewayv1alpha2.Install,
		gatewayv1alpha3.Install,
		gatewayxv1alpha1.Install,
		mcsv1alpha1.Install,
		mcsv1beta1.Install,
		v1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err) // the generated registrations cannot conflict
		}
	}
	return s
})
