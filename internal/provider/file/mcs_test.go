package file

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/manifest"
)

// serviceImportBody sets every field a ServiceImport has; it follows an
// apiVersion line.
const serviceImportBody = `kind: ServiceImport
metadata:
  name: cart
  namespace: shop
  annotations:
    trellis.dev/cluster-weights: east=90,west=10
  labels:
    app: cart
spec:
  type: ClusterSetIP
  ips: ["10.96.0.10", "fd00::10"]
  ipFamilies: [IPv4, IPv6]
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 60
  internalTrafficPolicy: Local
  trafficDistribution: PreferClose
  ports:
    - name: http
      protocol: TCP
      appProtocol: kubernetes.io/h2c
      port: 80
    - name: grpc
      protocol: TCP
      port: 9090
status:
  endpointSliceObjects: Present
  clusters:
    - cluster: east
    - cluster: west
  conditions:
    - type: Ready
      status: "True"
      reason: Ready
      message: imported
      lastTransitionTime: "2026-01-02T03:04:05Z"
      observedGeneration: 3
`

// A ServiceImport reads the same whether written as v1beta1 or v1alpha1:
// every field survives the conversion.
func TestServiceImportVersionsReadAlike(t *testing.T) {
	beta, err := Parse("beta.yaml", []byte("apiVersion: multicluster.x-k8s.io/v1beta1\n"+serviceImportBody))
	if err != nil {
		t.Fatal(err)
	}
	alpha, err := Parse("alpha.yaml", []byte("apiVersion: multicluster.x-k8s.io/v1alpha1\n"+serviceImportBody))
	if err != nil {
		t.Fatal(err)
	}
	if len(beta.ServiceImports) != 1 || len(alpha.ServiceImports) != 1 {
		t.Fatalf("read %d and %d ServiceImports, want 1 each", len(beta.ServiceImports), len(alpha.ServiceImports))
	}
	// The documents differ (their apiVersion lines), so their versions do.
	if beta.ServiceImports[0].ResourceVersion == alpha.ServiceImports[0].ResourceVersion {
		t.Errorf("both documents read as resourceVersion %q", beta.ServiceImports[0].ResourceVersion)
	}
	beta.ServiceImports[0].ResourceVersion, alpha.ServiceImports[0].ResourceVersion = "", ""
	b, _ := json.Marshal(beta.ServiceImports[0])
	a, _ := json.Marshal(alpha.ServiceImports[0])
	if string(a) != string(b) {
		t.Errorf("v1alpha1 reads as\n%s\nv1beta1 as\n%s", a, b)
	}
	if got := alpha.ServiceImports[0].APIVersion; got != "multicluster.x-k8s.io/v1beta1" {
		t.Errorf("converted apiVersion = %q", got)
	}
	if p := alpha.ServiceImports[0].Spec.Ports[0]; p.AppProtocol == nil || *p.AppProtocol != "kubernetes.io/h2c" || p.Port != 80 {
		t.Errorf("converted port = %+v", p)
	}
	// The document sets every field of the type, so a field the MCS API
	// adds later fails here until the conversion copies it.
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, f := range fieldPaths("", reflect.TypeFor[mcsv1alpha1.ServiceImport]()) {
		if !hasPath(doc, f) {
			t.Errorf("field %s is not set by the test document (or not converted)", f)
		}
	}
}

// The conversion shares no memory with its input.
func TestServiceImportConversionCopies(t *testing.T) {
	ap, tp, td := "grpc", corev1.ServiceInternalTrafficPolicyLocal, "PreferClose"
	in := &mcsv1alpha1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Annotations: map[string]string{"a": "1"}},
		Spec: mcsv1alpha1.ServiceImportSpec{
			IPs: []string{"10.96.0.10"}, Ports: []mcsv1alpha1.ServicePort{{Port: 80, AppProtocol: &ap}},
			InternalTrafficPolicy: &tp, TrafficDistribution: &td,
		},
		Status: mcsv1alpha1.ServiceImportStatus{Clusters: []mcsv1alpha1.ClusterStatus{{Cluster: "east"}}},
	}
	out := serviceImportV1beta1(in)
	in.Annotations["a"] = "2"
	in.Spec.IPs[0] = "10.96.0.11"
	ap, tp, td = "http", corev1.ServiceInternalTrafficPolicyCluster, "x"
	in.Status.Clusters[0].Cluster = "west"
	if out.Annotations["a"] != "1" || out.Spec.IPs[0] != "10.96.0.10" || *out.Spec.Ports[0].AppProtocol != "grpc" ||
		*out.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal || *out.Spec.TrafficDistribution != "PreferClose" || out.Status.Clusters[0].Cluster != "east" {
		t.Errorf("the conversion shares memory with its input: %+v", out)
	}
}

func TestServiceImportErrors(t *testing.T) {
	tests := []struct {
		name, data string
		want       string
	}{
		{"same import in both versions",
			"apiVersion: multicluster.x-k8s.io/v1beta1\n" + serviceImportBody + "---\napiVersion: multicluster.x-k8s.io/v1alpha1\n" + serviceImportBody,
			"document 2 (ServiceImport shop/cart): ServiceImport shop/cart is already defined at x.yaml:1"},
		{"unknown version",
			"apiVersion: multicluster.x-k8s.io/v2\n" + serviceImportBody,
			"ServiceImport must have apiVersion multicluster.x-k8s.io/v1alpha1 or multicluster.x-k8s.io/v1beta1, not multicluster.x-k8s.io/v2"},
		{"unknown field",
			"apiVersion: multicluster.x-k8s.io/v1alpha1\n" + strings.Replace(serviceImportBody, "  type: ClusterSetIP", "  typ: ClusterSetIP", 1),
			`unknown field "spec.typ"`},
		{"wrong type",
			"apiVersion: multicluster.x-k8s.io/v1beta1\n" + strings.Replace(serviceImportBody, "port: 9090", "port: ninety", 1),
			"spec.ports.port: cannot use a string as int32"},
		{"ServiceExport is not read from files",
			"apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata:\n  name: cart\n",
			"kind ServiceExport (multicluster.x-k8s.io/v1beta1) is not supported"},
	}
	for _, tt := range tests {
		_, err := Parse("x.yaml", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// fieldPaths lists the JSON paths of the leaf fields of typ (below
// metadata, whose fields are Kubernetes' own), list elements written "[]".
func fieldPaths(prefix string, typ reflect.Type) []string {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		if typ.Kind() == reflect.Slice {
			prefix += "[]"
		}
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[metav1.Time]() {
		return []string{prefix}
	}
	var out []string
	for name, ft := range jsonFields(typ) {
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		if name == "metadata" || name == "kind" || name == "apiVersion" {
			continue
		}
		out = append(out, fieldPaths(p, ft)...)
	}
	slices.Sort(out)
	return out
}

// hasPath reports whether the decoded JSON v has a non-empty value at
// path, in some element of each list on the way.
func hasPath(v any, path string) bool {
	if path == "" {
		return v != nil
	}
	head, rest, _ := strings.Cut(path, ".")
	list := strings.HasSuffix(head, "[]")
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	next, ok := m[strings.TrimSuffix(head, "[]")]
	if !ok {
		return false
	}
	if !list {
		return hasPath(next, rest)
	}
	items, _ := next.([]any)
	return slices.ContainsFunc(items, func(e any) bool { return hasPath(e, rest) })
}

// importNetwork is the service network mesh in namespace shop with a route
// to the ServiceImport cart.
var importNetwork = manifest.ServiceNetwork("mesh", "shop", "[{name: http, protocol: HTTP, port: 80}]") +
	manifest.Spec(manifest.GatewayAPI, "HTTPRoute", "name: cart, namespace: shop",
		"  parentRefs: [{name: mesh}]\n  rules: [{backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: cart, port: 80}]}]\n")

// A route to a ServiceImport read from files translates as it would from
// an API server: to a backend naming the import (standalone has no exports,
// so it resolves to no targets), and a malformed cluster-weights annotation
// stops the configuration with problems naming both files.
func TestServiceImportFromFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"network.yaml": importNetwork,
		"import.yaml":  "apiVersion: multicluster.x-k8s.io/v1alpha1\n" + serviceImportBody,
	})
	c, err := loadConfig(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := translateConfig(new(translate.Incremental), c, "local")
	if err != nil {
		t.Fatal(err)
	}
	b := out.Services[0].Rules[0].Action.Forward.Backends[0]
	if b.Import == nil || b.Import.Namespace != "shop" || b.Import.Name != "cart" || b.Import.Port != 80 ||
		b.Import.ProtocolVersion != "HTTP2" || b.Import.ClusterWeights["east"] != 90 || b.Import.ClusterWeights["west"] != 10 {
		t.Errorf("backend = %+v, import %+v", b, b.Import)
	}

	writeFiles(t, dir, map[string]string{
		"import.yaml": "apiVersion: multicluster.x-k8s.io/v1beta1\n" + strings.Replace(serviceImportBody, "east=90,west=10", "east:90", 1),
	})
	if c, err = loadConfig(t, dir); err != nil {
		t.Fatal(err)
	}
	_, err = translateConfig(new(translate.Incremental), c, "local")
	pe, ok := err.(*ProblemsError)
	if !ok {
		t.Fatalf("error %v, want a *ProblemsError", err)
	}
	var files []string
	for _, p := range pe.Problems {
		files = append(files, p.Object.Kind+" "+filepath.Base(p.Object.File)+" "+p.Reason)
	}
	slices.Sort(files)
	want := []string{"HTTPRoute network.yaml UnsupportedValue", "ServiceImport import.yaml UnsupportedValue"}
	if !slices.Equal(files, want) {
		t.Errorf("problems %v, want %v:\n%v", files, want, err)
	}
	if !strings.Contains(err.Error(), `metadata.annotations[trellis.dev/cluster-weights]: entry 1 "east:90" is not cluster=weight`) {
		t.Errorf("error does not name the annotation:\n%v", err)
	}
}

// loadConfig reads dir as Load does, keeping where each object came from.
func loadConfig(t *testing.T, dir string) (*config, error) {
	t.Helper()
	files, err := readDir(dir, DefaultMaxFileSize)
	if err != nil {
		return nil, err
	}
	c := newConfig()
	for _, f := range files {
		entries, errs := parseFile(f.path, f.data)
		c.errs = append(c.errs, errs...)
		c.add(entries)
	}
	return c, errors.Join(c.errs...)
}
