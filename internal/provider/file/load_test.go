package file

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles writes name → content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: inventory
spec:
  parentRefs:
    - name: my-hotel
  rules:
    - backendRefs:
        - name: inventory-ver1
          port: 80
`

const service = `apiVersion: v1
kind: Service
metadata:
  name: inventory-ver1
spec:
  ports:
    - port: 80
`

func TestLoadQuickstart(t *testing.T) {
	in, err := Load("../../../examples/quickstart")
	if err != nil {
		t.Fatal(err)
	}
	counts := []struct {
		kind      string
		got, want int
	}{
		{"GatewayClass", len(in.GatewayClasses), 1},
		{"Gateway", len(in.Gateways), 1},
		{"HTTPRoute", len(in.HTTPRoutes), 3},
		{"Service", len(in.Services), 4},
		{"EndpointSlice", len(in.EndpointSlices), 4},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%d %s objects, want %d", c.got, c.kind, c.want)
		}
	}
	for _, r := range in.HTTPRoutes {
		if r.Namespace != DefaultNamespace {
			t.Errorf("HTTPRoute %s has namespace %q, want %q", r.Name, r.Namespace, DefaultNamespace)
		}
	}
	if in.GatewayClasses[0].Namespace != "" {
		t.Errorf("GatewayClass got namespace %q; it is cluster-scoped", in.GatewayClasses[0].Namespace)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		// want are substrings of the error, each naming file, document and field.
		want []string
	}{{
		name:  "unknown field",
		files: map[string]string{"inventory.yaml": service + "---\n" + strings.Replace(route, "port: 80", "port: 80\n          weigth: 50", 1)},
		want:  []string{`inventory.yaml:9: document 2 (HTTPRoute default/inventory): unknown field "spec.rules[0].backendRefs[0].weigth"`},
	}, {
		name:  "field names are case-sensitive",
		files: map[string]string{"inventory.yaml": strings.Replace(route, "port: 80", "Port: 80", 1)},
		want:  []string{`inventory.yaml:1: document 1 (HTTPRoute default/inventory): unknown field "spec.rules[0].backendRefs[0].Port"`},
	}, {
		name:  "every unknown field is named",
		files: map[string]string{"svc.yaml": strings.Replace(service, "spec:", "labels: {}\nspec:\n  selectr: {}", 1)},
		want:  []string{`svc.yaml:1: document 1 (Service default/inventory-ver1): unknown field "labels"`, `unknown field "spec.selectr"`},
	}, {
		name:  "unsupported kind",
		files: map[string]string{"tcp.yaml": "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  name: g\n"},
		want:  []string{`tcp.yaml:1: document 1 (TCPRoute g): kind TCPRoute (gateway.networking.k8s.io/v1) is not supported`},
	}, {
		name:  "unknown field in a Secret",
		files: map[string]string{"s.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: kubernetes.io/tls\nstringdata:\n  tls.crt: x\n"},
		want:  []string{`s.yaml:1: document 1 (Secret default/s): unknown field "stringdata"`},
	}, {
		name:  "wrong apiVersion",
		files: map[string]string{"route.yaml": strings.Replace(route, "/v1", "/v1beta1", 1)},
		want:  []string{`route.yaml:1: document 1 (HTTPRoute inventory): HTTPRoute must have apiVersion gateway.networking.k8s.io/v1, not gateway.networking.k8s.io/v1beta1`},
	}, {
		name:  "missing kind",
		files: map[string]string{"x.yaml": "# nothing here\n---\nmetadata:\n  name: x\n"},
		want:  []string{`x.yaml:3: document 1 (x): apiVersion and kind are required`},
	}, {
		name:  "not a mapping",
		files: map[string]string{"x.yaml": "- a\n- b\n"},
		want:  []string{`x.yaml:1: document 1: a document must be a mapping with apiVersion and kind, not a list`},
	}, {
		name:  "YAML syntax error, line counted in the file",
		files: map[string]string{"bad.yml": service + "---\n\nkind: Service\n  oops: [\n"},
		want:  []string{`bad.yml:10: document 2: yaml: line 11:`},
	}, {
		name:  "wrong type",
		files: map[string]string{"svc.yaml": strings.Replace(service, "port: 80", "port: eighty", 1)},
		want:  []string{`svc.yaml:1: document 1 (Service default/inventory-ver1): spec.ports.port: cannot use a string as int32`},
	}, {
		name:  "duplicate key",
		files: map[string]string{"svc.yaml": service + "spec: {}\n"},
		want:  []string{`svc.yaml:1: document 1: yaml: unmarshal errors:`, `"spec" already set`},
	}, {
		name: "duplicate object",
		files: map[string]string{
			"a.yaml": service,
			"b.yaml": "# the same Service again\n" + strings.Replace(service, "name: inventory-ver1", "name: inventory-ver1\n  namespace: default", 1),
		},
		want: []string{`b.yaml:2: document 1 (Service default/inventory-ver1): Service default/inventory-ver1 is already defined at `, `a.yaml:1`},
	}, {
		name:  "invalid name",
		files: map[string]string{"svc.yaml": strings.Replace(service, "inventory-ver1", "Inventory_1", 1)},
		want:  []string{`svc.yaml:1: document 1 (Service default/Inventory_1): metadata.name: "Inventory_1" is invalid`},
	}, {
		name:  "cluster-scoped with a namespace",
		files: map[string]string{"gc.yaml": "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: t\n  namespace: x\nspec:\n  controllerName: trellis.dev/service-network\n"},
		want:  []string{`gc.yaml:1: document 1 (GatewayClass x/t): metadata.namespace: GatewayClass is cluster-scoped and takes no namespace`},
	}, {
		name: "errors from every file are collected",
		files: map[string]string{
			"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
			"b.yaml": route + "---\n" + strings.Replace(service, "ports:", "portz:", 1),
		},
		want: []string{`a.yaml:1: document 1 (ConfigMap c): kind ConfigMap (v1) is not supported`, `b.yaml:13: document 2 (Service default/inventory-ver1): unknown field "spec.portz"`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadSkips(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"route.yaml":      "---\n# leading separator and empty documents are fine\n---\n" + route + "---\n",
		"svc.yml":         service,
		".hidden.yaml":    "not: [valid",
		"notes.txt":       "not: [valid",
		"route.yaml.orig": "not: [valid",
	})
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("svc.yml", filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "svc.yml"), []byte(strings.Replace(service, "inventory-ver1", "other", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "is already defined at") {
		t.Fatalf("a symlinked file should be read (and here duplicate svc.yml); got %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	in, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.HTTPRoutes) != 1 || len(in.Services) != 1 {
		t.Errorf("got %d routes and %d services, want 1 and 1", len(in.HTTPRoutes), len(in.Services))
	}
}

func TestLoadMissingDir(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
}

// TestParseAsTheAPIServer checks what the file provider does to objects as an
// apiserver would: a Namespace gets the label of its name (overwriting any
// other value), and a Service may be named with a digit first.
func TestParseAsTheAPIServer(t *testing.T) {
	in, err := Parse("a.yaml", []byte(`apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a, kubernetes.io/metadata.name: other}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bare}
---
apiVersion: v1
kind: Service
metadata: {name: 1svc}
spec: {ports: [{port: 80}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"shop": {"team": "a", "kubernetes.io/metadata.name": "shop"},
		"bare": {"kubernetes.io/metadata.name": "bare"},
	}
	for _, ns := range in.Namespaces {
		if got := ns.Labels; !maps.Equal(got, want[ns.Name]) {
			t.Errorf("namespace %s: labels %v, want %v", ns.Name, got, want[ns.Name])
		}
	}
	if len(in.Namespaces) != 2 || len(in.Services) != 1 || in.Services[0].Name != "1svc" {
		t.Errorf("got namespaces %v, services %v", in.Namespaces, in.Services)
	}
}
