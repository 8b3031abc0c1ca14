package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/config/crd"
)

// GatewayAPIRelease is the Gateway API release trellis is built against;
// its standard-install.yaml installs every Gateway API CRD the controller
// watches.
const GatewayAPIRelease = "v1.6.3"

// gatewayAPIInstall is what to apply for missing Gateway API CRDs.
const gatewayAPIInstall = "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/" +
	GatewayAPIRelease + "/standard-install.yaml"

// CRD is a custom resource kind the controller watches.
type CRD struct {
	// Name is the CustomResourceDefinition's name, e.g.
	// "authpolicies.trellis.dev".
	Name string
	// Group, Version, Resource and Kind are what the controller reads.
	Group, Version, Resource, Kind string
	// Required CRDs must be served for the controller to start; without
	// an optional one it runs without that watch.
	Required bool
	// Own marks trellis's own CRDs (config/crd), which `trellis up`
	// installs; the others are upstream's.
	Own bool
}

// Install says what to apply to install c.
func (c CRD) Install() string {
	switch {
	case c.Own:
		return "kubectl apply -f config/crd/" + c.Group + "_" + c.Resource + ".yaml (or kubectl apply -k config/crd)"
	case c.Group == mcsv1beta1.GroupName:
		return mcsInstall
	}
	return gatewayAPIInstall
}

// Watched are the custom resource kinds the controller watches. The core
// kinds (Services, EndpointSlices, Namespaces, Secrets, Pods) are always
// served. GRPCRoute and TLSRoute are in the Gateway API's standard channel
// only since v1.2 and v1.5: a cluster with older CRDs runs without them.
// The Multi-Cluster Services kinds are optional: without them the
// controller runs without exports and imports; served at v1alpha1 only
// (mcs-api before v0.3), it uses that version (see New).
var Watched = []CRD{
	gatewayCRD("gatewayclasses", "GatewayClass", true),
	gatewayCRD("gateways", "Gateway", true),
	gatewayCRD("httproutes", "HTTPRoute", true),
	gatewayCRD("referencegrants", "ReferenceGrant", true),
	gatewayCRD("grpcroutes", "GRPCRoute", false),
	gatewayCRD("tlsroutes", "TLSRoute", false),
	{
		Name:  "authpolicies." + v1alpha1.GroupVersion.Group,
		Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version,
		Resource: "authpolicies", Kind: "AuthPolicy", Required: true, Own: true,
	},
	{
		Name:  "targetgrouppolicies." + v1alpha1.GroupVersion.Group,
		Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version,
		Resource: "targetgrouppolicies", Kind: "TargetGroupPolicy", Required: true, Own: true,
	},
	mcsCRD(mcsv1beta1.ServiceExportPluralName, mcsv1beta1.ServiceExportKindName),
	mcsCRD(mcsv1beta1.ServiceImportPluralName, mcsv1beta1.ServiceImportKindName),
}

// MCSAPIRelease is the Multi-Cluster Services API release trellis is built
// against; its CRDs are what a cluster without them should apply.
const MCSAPIRelease = "v0.5.2"

// mcsInstall is what to apply for missing Multi-Cluster Services CRDs.
const mcsInstall = "kubectl apply -f https://raw.githubusercontent.com/kubernetes-sigs/mcs-api/" + MCSAPIRelease +
	"/config/crd/multicluster.x-k8s.io_serviceexports.yaml -f https://raw.githubusercontent.com/kubernetes-sigs/mcs-api/" +
	MCSAPIRelease + "/config/crd/multicluster.x-k8s.io_serviceimports.yaml"

func mcsCRD(resource, kind string) CRD {
	return CRD{
		Name:  resource + "." + mcsv1beta1.GroupName,
		Group: mcsv1beta1.GroupName, Version: mcsv1beta1.GroupVersion.Version,
		Resource: resource, Kind: kind,
	}
}

func gatewayCRD(resource, kind string, required bool) CRD {
	return CRD{
		Name:  resource + "." + gatewayv1.GroupName,
		Group: gatewayv1.GroupName, Version: gatewayv1.GroupVersion.Version,
		Resource: resource, Kind: kind, Required: required,
	}
}

// MissingCRDsError lists the required CRDs a cluster does not serve.
type MissingCRDsError struct {
	Missing []CRD
}

func (e *MissingCRDsError) Error() string {
	var b strings.Builder
	b.WriteString("the cluster does not serve the CustomResourceDefinitions the controller watches:")
	var installs []string
	for _, c := range e.Missing {
		fmt.Fprintf(&b, " %s (%s/%s %s);", c.Name, c.Group, c.Version, c.Kind)
		if !slices.Contains(installs, c.Install()) {
			installs = append(installs, c.Install())
		}
	}
	b.WriteString(" install them with: ")
	b.WriteString(strings.Join(installs, "; and "))
	return b.String()
}

// ServedCRDs asks the apiserver's discovery which of Watched it serves. It
// returns those it does not; err is a *MissingCRDsError when a required one
// is among them, or the discovery failure.
func ServedCRDs(ctx context.Context, kube *rest.Config) (missing []CRD, err error) {
	dc, err := discovery.NewDiscoveryClientForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	served := map[string]map[string]bool{} // group/version → resources
	for _, c := range Watched {
		gv := c.Group + "/" + c.Version
		if _, done := served[gv]; done {
			continue
		}
		served[gv] = map[string]bool{}
		list, err := discoveryFor(ctx, dc, gv)
		if apierrors.IsNotFound(err) {
			continue // no resource of the group version is served
		}
		if err != nil {
			return nil, fmt.Errorf("discovery of %s: %w", gv, err)
		}
		for _, r := range list {
			served[gv][r] = true
		}
	}
	var required []CRD
	for _, c := range Watched {
		if served[c.Group+"/"+c.Version][c.Resource] {
			continue
		}
		missing = append(missing, c)
		if c.Required {
			required = append(required, c)
		}
	}
	if len(required) > 0 {
		return missing, &MissingCRDsError{Missing: required}
	}
	return missing, nil
}

// servesMCSv1alpha1 reports whether the cluster serves both
// Multi-Cluster Services kinds at v1alpha1 (every mcs-api release does;
// those before v0.3 serve nothing else).
func servesMCSv1alpha1(ctx context.Context, kube *rest.Config) bool {
	dc, err := discovery.NewDiscoveryClientForConfig(kube)
	if err != nil {
		return false
	}
	served, err := discoveryFor(ctx, dc, mcsv1beta1.GroupName+"/v1alpha1")
	return err == nil && slices.Contains(served, mcsv1beta1.ServiceExportPluralName) && slices.Contains(served, mcsv1beta1.ServiceImportPluralName)
}

// discoveryFor returns the resources served in group version gv, ending
// early when ctx does.
func discoveryFor(ctx context.Context, dc discovery.DiscoveryInterface, gv string) ([]string, error) {
	type result struct {
		names []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		list, err := dc.ServerResourcesForGroupVersion(gv)
		var names []string
		if list != nil {
			for _, r := range list.APIResources {
				names = append(names, r.Name)
			}
		}
		done <- result{names, err}
	}()
	select {
	case r := <-done:
		return r.names, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// InstallCRDs installs those of trellis's own CRDs (package config/crd)
// that the cluster does not serve and waits until they are. It fails at
// once, naming them, when Gateway API CRDs the controller requires are
// missing (those are upstream's to install), and, saying what to apply,
// when it may not create CRDs. It returns the names of the CRDs installed.
func InstallCRDs(ctx context.Context, kube *rest.Config, log *slog.Logger) (installed []string, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	missing, err := ServedCRDs(ctx, kube)
	var me *MissingCRDsError
	if err != nil && !errors.As(err, &me) {
		return nil, err
	}
	if me != nil {
		if upstream := slices.DeleteFunc(slices.Clone(me.Missing), func(c CRD) bool { return c.Own }); len(upstream) > 0 {
			return nil, &MissingCRDsError{Missing: upstream}
		}
	}
	var own []CRD
	for _, c := range missing {
		if c.Own {
			own = append(own, c)
		}
	}
	if len(own) == 0 {
		return nil, nil
	}
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	kc, err := client.New(kube, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("installing CRDs: %w", err)
	}
	for _, c := range own {
		def, err := ownCRD(c.Name)
		if err != nil {
			return installed, err
		}
		err = kc.Create(ctx, def)
		switch {
		case apierrors.IsAlreadyExists(err):
			// Defined but not (yet) served: wait for it below.
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return installed, fmt.Errorf("CRD %s is missing and this identity may not create it (%w); install it with: %s", c.Name, err, c.Install())
		case err != nil:
			return installed, fmt.Errorf("installing CRD %s: %w", c.Name, err)
		default:
			installed = append(installed, c.Name)
			log.Info("installed CRD", "crd", c.Name)
		}
	}
	// Wait until discovery serves them: the controller's caches start on
	// what discovery says.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		missing, err := ServedCRDs(ctx, kube)
		if err == nil || errors.As(err, &me) {
			if !slices.ContainsFunc(missing, func(c CRD) bool { return c.Own }) {
				return installed, nil
			}
		}
		select {
		case <-ctx.Done():
			return installed, fmt.Errorf("installed CRDs not served after a minute: %w", errors.Join(err, ctx.Err()))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ownCRD returns the embedded definition of one of trellis's CRDs.
func ownCRD(name string) (*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(crd.Files, "*.yaml")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		data, err := fs.ReadFile(crd.Files, f)
		if err != nil {
			return nil, err
		}
		def := new(apiextensionsv1.CustomResourceDefinition)
		if err := yaml.UnmarshalStrict(data, def); err != nil {
			return nil, fmt.Errorf("config/crd/%s: %w", f, err)
		}
		if def.Name == name {
			return def, nil
		}
	}
	return nil, fmt.Errorf("CRD %s is not among config/crd's", name)
}
