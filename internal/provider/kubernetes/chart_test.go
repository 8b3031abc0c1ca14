package kubernetes_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/test/kube"
)

// chartDir is the Helm chart, which with its default values installs what
// manifestsDir does (and with member.enabled what memberManifestsDir does).
const chartDir = "../../../config/helm/trellis"

// The release the chart tests render: the name and namespace docs/install.md
// installs as.
const (
	releaseName      = "trellis"
	releaseNamespace = "trellis-system"
)

// helmLabels are the labels the chart adds to the metadata of every object
// it templates, and the only difference from the kustomize manifests
// besides those chartOmits lists.
var helmLabels = map[string]string{
	"helm.sh/chart":                "trellis-0.1.0",
	"app.kubernetes.io/managed-by": "Helm",
	"app.kubernetes.io/instance":   releaseName,
	"app.kubernetes.io/version":    "dev",
	"app.kubernetes.io/part-of":    "trellis",
}

// chartOmits says which objects of the kustomize manifests the chart does
// not render, and why.
func chartOmits(o *unstructured.Unstructured, member bool) string {
	switch {
	case o.GetKind() == "Namespace":
		// A release installs into a namespace that exists (docs/install.md
		// creates it for the Secrets first) or that --create-namespace
		// makes; a chart that rendered it could not be installed there.
		return "the release's namespace"
	case member && o.GetKind() == "ServiceAccount" && o.GetName() == "trellis-server":
		// config/multicluster takes it with config/rbac, but a member
		// cluster runs no server.
		return "the server's ServiceAccount in a member cluster"
	}
	return ""
}

// helmCmd returns a command running the helm binary that hack/build-helm.sh
// builds, found through TRELLIS_HELM_BIN, with its configuration, cache and
// data in a directory of the test's own. It fails the test, never skips,
// without it.
func helmCmd(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	const hint = "build it with hack/build-helm.sh and export TRELLIS_HELM_BIN=$(hack/build-helm.sh | tail -n1)"
	dir := os.Getenv("TRELLIS_HELM_BIN")
	if dir == "" {
		t.Fatal("TRELLIS_HELM_BIN is not set; " + hint)
	}
	bin := filepath.Join(dir, "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("TRELLIS_HELM_BIN=%s: %v; %s", dir, err, hint)
	}
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	return cmd
}

// helmTemplate renders the chart as the release trellis in trellis-system,
// its CRDs included, with the values files given (as YAML text); it returns
// helm's output and error.
func helmTemplate(t testing.TB, values ...string) ([]byte, error) {
	t.Helper()
	return helmTemplateArgs(t, nil, values...)
}

// helmTemplateArgs is helmTemplate with more flags.
func helmTemplateArgs(t testing.TB, flags []string, values ...string) ([]byte, error) {
	t.Helper()
	args := append([]string{"template", releaseName, chartDir, "--namespace", releaseNamespace, "--include-crds"}, flags...)
	for i, v := range values {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("values-%d.yaml", i))
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	var stdout, stderr bytes.Buffer
	cmd := helmCmd(t, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// renderChart returns the objects the chart renders with the values given.
func renderChart(t testing.TB, values ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmTemplate(t, values...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, "helm template", out)
}

// decodeObjects decodes a YAML stream of Kubernetes objects, skipping empty
// documents.
func decodeObjects(t testing.TB, source string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var o unstructured.Unstructured
		if err := dec.Decode(&o.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		if len(o.Object) > 0 {
			out = append(out, &o)
		}
	}
	return out
}

// memberValues are the values of a member cluster: the three the chart
// requires then, given the example values of config/multicluster's ConfigMap
// trellis-member, which the manifests ask to be edited before applying.
func memberValues(t testing.TB) string {
	t.Helper()
	for _, o := range readKustomization(t, memberManifestsDir) {
		if o.GetKind() != "ConfigMap" || o.GetName() != "trellis-member" {
			continue
		}
		data, _, _ := unstructured.NestedStringMap(o.Object, "data")
		v, err := yaml.Marshal(map[string]any{"member": map[string]any{
			"enabled": true, "cluster": data["cluster"], "server": data["server"], "peerAdvertise": data["peer-advertise"],
		}})
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	t.Fatalf("no ConfigMap trellis-member in %s", memberManifestsDir)
	return ""
}

// objectKey names an object as kubectl does: kind, namespace and name.
func objectKey(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// TestChartRendersManifests renders the chart with its default values and
// with member.enabled (and the values that mode requires), and compares
// the objects, parsed, with the kustomize manifests of config/ and
// config/multicluster: the same objects, field for field, but for the
// labels of helmLabels on the chart's and the objects chartOmits names.
func TestChartRendersManifests(t *testing.T) {
	for _, c := range []struct {
		name   string
		dir    string
		member bool
	}{
		{"default", manifestsDir, false},
		{"member", memberManifestsDir, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var values []string
			if c.member {
				values = append(values, memberValues(t))
			}
			want := map[string]*unstructured.Unstructured{}
			for _, o := range readKustomization(t, c.dir) {
				if why := chartOmits(o, c.member); why != "" {
					t.Logf("not rendered by the chart: %s (%s)", objectKey(o), why)
					continue
				}
				want[objectKey(o)] = o
			}
			got := map[string]*unstructured.Unstructured{}
			for _, o := range renderChart(t, values...) {
				k := objectKey(o)
				if _, dup := got[k]; dup {
					t.Errorf("the chart renders %s twice", k)
				}
				got[k] = o
				if o.GetKind() == "CustomResourceDefinition" {
					continue // crds/ is not templated
				}
				labels := o.GetLabels()
				for l, v := range helmLabels {
					if labels[l] != v {
						t.Errorf("%s: label %s is %q, want %q", k, l, labels[l], v)
					}
					delete(labels, l)
				}
				if len(labels) == 0 {
					unstructured.RemoveNestedField(o.Object, "metadata", "labels")
				} else {
					o.SetLabels(labels)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(want)) {
				g, ok := got[k]
				if !ok {
					t.Errorf("the chart does not render %s", k)
					continue
				}
				if !reflect.DeepEqual(g.Object, want[k].Object) {
					gy, _ := yaml.Marshal(g.Object)
					wy, _ := yaml.Marshal(want[k].Object)
					t.Errorf("%s differs from %s's:\nchart:\n%s\nmanifests:\n%s", k, c.dir, gy, wy)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(got)) {
				if _, ok := want[k]; !ok {
					t.Errorf("the chart renders %s, which %s does not have", k, c.dir)
				}
			}
		})
	}
}

// TestChartLint runs `helm lint --strict` (warnings fail) on the chart, with
// its defaults and as a member cluster.
func TestChartLint(t *testing.T) {
	for name, values := range map[string]string{"default": "", "member": memberValues(t)} {
		args := []string{"lint", "--strict", chartDir, "--namespace", releaseNamespace}
		if values != "" {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--values", f)
		}
		if out, err := helmCmd(t, args...).CombinedOutput(); err != nil {
			t.Errorf("%s: helm %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
}

// findObject returns the object of the kind and name among objs, failing the
// test without one.
func findObject(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// field returns the value at path in o, failing the test when there is none.
func field(t testing.TB, o *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s: no %s (%v)", objectKey(o), strings.Join(path, "."), err)
	}
	return v
}

// podField returns the value at path in the pod template's spec of the
// workload kind/name (its one container's, when path starts with
// "container").
func podField(t testing.TB, objs []*unstructured.Unstructured, kind, name string, path ...string) any {
	t.Helper()
	o := findObject(t, objs, kind, name)
	if path[0] == "container" {
		cs := field(t, o, "spec", "template", "spec", "containers").([]any)
		if len(cs) != 1 {
			t.Fatalf("%s: %d containers", objectKey(o), len(cs))
		}
		v, ok, err := unstructured.NestedFieldNoCopy(cs[0].(map[string]any), path[1:]...)
		if err != nil || !ok {
			t.Fatalf("%s: container has no %s (%v)", objectKey(o), strings.Join(path[1:], "."), err)
		}
		return v
	}
	return field(t, o, append([]string{"spec", "template", "spec"}, path...)...)
}

// same fails the test when got and want (YAML) differ once parsed.
func same(t testing.TB, what string, got any, want string) {
	t.Helper()
	var w any
	if err := yaml.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	// Through YAML, so that numbers compare by value whatever their Go type.
	gy, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var g any
	if err := yaml.Unmarshal(gy, &g); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s is\n%s\nwant\n%s", what, gy, want)
	}
}

// TestChartValues renders the chart with every value changed from its
// default and checks each lands where it should.
func TestChartValues(t *testing.T) {
	objs := renderChart(t, `
image: {repository: registry.example.com/team/trellis, tag: v1.2.3, pullPolicy: IfNotPresent, pullSecrets: [regcred]}
logLevel: debug
secrets: {cluster: east-cluster, tokens: east-tokens, serverTLS: east-tls}
server:
  storage: {size: 5Gi, className: fast}
  resources: {requests: {cpu: 100m, memory: 128Mi}}
  nodeSelector: {pool: system}
  extraArgs: [--heartbeat=5s]
controller:
  replicas: 3
  tolerations: [{key: dedicated, operator: Equal, value: trellis, effect: NoSchedule}]
  serviceAccount: {annotations: {team: networking}}
  extraArgs: [--gateway-addresses=198.18.100.0/24]
proxy:
  replicas: 4
  resources: {limits: {memory: 512Mi}}
  affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: trellis-proxy}}}}]}}
  podSecurityContext: {runAsNonRoot: true, runAsUser: 1000}
  # Maps merge with the defaults: null removes a key.
  securityContext: {capabilities: {add: null}}
  podDisruptionBudget: {enabled: true, maxUnavailable: 25%}
`)
	for _, w := range []struct{ kind, name string }{{"StatefulSet", "trellis-server"}, {"Deployment", "trellis-controller"}, {"Deployment", "trellis-proxy"}} {
		same(t, w.name+" image", podField(t, objs, w.kind, w.name, "container", "image"), "registry.example.com/team/trellis:v1.2.3")
		same(t, w.name+" imagePullPolicy", podField(t, objs, w.kind, w.name, "container", "imagePullPolicy"), "IfNotPresent")
		same(t, w.name+" imagePullSecrets", podField(t, objs, w.kind, w.name, "imagePullSecrets"), "[{name: regcred}]")
		args := podField(t, objs, w.kind, w.name, "container", "args").([]any)
		if !slices.Contains(args, any("--log-level=debug")) {
			t.Errorf("%s args %v: no --log-level=debug", w.name, args)
		}
	}
	same(t, "server args", podField(t, objs, "StatefulSet", "trellis-server", "container", "args"),
		"[server, --listen=0.0.0.0:7070, --data=/data, --tokens-file=/etc/trellis/tokens/tokens, --tls-cert-file=/etc/trellis/tls/tls.crt, --tls-key-file=/etc/trellis/tls/tls.key, --log-level=debug, --heartbeat=5s]")
	same(t, "server volumes", podField(t, objs, "StatefulSet", "trellis-server", "volumes"),
		"[{name: tokens, secret: {secretName: east-tokens, items: [{key: tokens, path: tokens}]}}, {name: tls, secret: {secretName: east-tls}}]")
	same(t, "server volume claim", field(t, findObject(t, objs, "StatefulSet", "trellis-server"), "spec", "volumeClaimTemplates"),
		"[{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], storageClassName: fast, resources: {requests: {storage: 5Gi}}}}]")
	same(t, "server resources", podField(t, objs, "StatefulSet", "trellis-server", "container", "resources"), "{requests: {cpu: 100m, memory: 128Mi}}")
	same(t, "server nodeSelector", podField(t, objs, "StatefulSet", "trellis-server", "nodeSelector"), "{pool: system}")

	same(t, "controller replicas", field(t, findObject(t, objs, "Deployment", "trellis-controller"), "spec", "replicas"), "3")
	same(t, "controller tolerations", podField(t, objs, "Deployment", "trellis-controller", "tolerations"), "[{key: dedicated, operator: Equal, value: trellis, effect: NoSchedule}]")
	same(t, "controller ServiceAccount annotations", field(t, findObject(t, objs, "ServiceAccount", "trellis-controller"), "metadata", "annotations"), "{team: networking}")
	same(t, "controller env", podField(t, objs, "Deployment", "trellis-controller", "container", "env"),
		"[{name: TRELLIS_CLUSTER, valueFrom: {secretKeyRef: {name: east-cluster, key: cluster}}}, {name: TRELLIS_TOKEN, valueFrom: {secretKeyRef: {name: east-cluster, key: token}}}]")
	same(t, "controller volumes", podField(t, objs, "Deployment", "trellis-controller", "volumes"),
		"[{name: ca, secret: {secretName: east-tls, items: [{key: ca.crt, path: ca.crt}]}}]")
	if args := podField(t, objs, "Deployment", "trellis-controller", "container", "args").([]any); args[len(args)-1] != "--gateway-addresses=198.18.100.0/24" {
		t.Errorf("controller args %v do not end with its extraArgs", args)
	}

	same(t, "proxy replicas", field(t, findObject(t, objs, "Deployment", "trellis-proxy"), "spec", "replicas"), "4")
	same(t, "proxy resources", podField(t, objs, "Deployment", "trellis-proxy", "container", "resources"), "{limits: {memory: 512Mi}}")
	same(t, "proxy affinity", podField(t, objs, "Deployment", "trellis-proxy", "affinity"),
		"{podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: trellis-proxy}}}}]}}")
	same(t, "proxy pod securityContext", podField(t, objs, "Deployment", "trellis-proxy", "securityContext"), "{runAsNonRoot: true, runAsUser: 1000}")
	same(t, "proxy securityContext", podField(t, objs, "Deployment", "trellis-proxy", "container", "securityContext"),
		"{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}")
	pdb := findObject(t, objs, "PodDisruptionBudget", "trellis-proxy")
	same(t, "proxy PodDisruptionBudget", field(t, pdb, "spec"), "{maxUnavailable: 25%, selector: {matchLabels: {app.kubernetes.io/name: trellis-proxy}}}")
	if pdb.GetNamespace() != releaseNamespace || pdb.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
		t.Errorf("PodDisruptionBudget metadata %v", field(t, pdb, "metadata"))
	}

	// minAvailable instead; and in a member cluster, the proxies' pods get
	// fsGroup 65532 beside a podSecurityContext without one (the identity's
	// mode is 0440), and keep one that is set.
	objs = renderChart(t, memberValues(t), `proxy: {podDisruptionBudget: {enabled: true, minAvailable: 1}}`)
	same(t, "proxy PodDisruptionBudget with minAvailable", field(t, findObject(t, objs, "PodDisruptionBudget", "trellis-proxy"), "spec"),
		"{minAvailable: 1, selector: {matchLabels: {app.kubernetes.io/name: trellis-proxy}}}")
	objs = renderChart(t, memberValues(t), `
member: {joinTokenSecret: east-join, caSecret: east-ca, identitySecret: east-identity}
proxy: {podSecurityContext: {runAsNonRoot: true, runAsUser: 1000}}
`)
	same(t, "member proxy pod securityContext", podField(t, objs, "Deployment", "trellis-proxy", "securityContext"), "{runAsNonRoot: true, runAsUser: 1000, fsGroup: 65532}")
	same(t, "member ConfigMap", field(t, findObject(t, objs, "ConfigMap", "trellis-member"), "data"),
		"{cluster: east, server: 'https://cp.example.internal:7070', peer-advertise: '192.0.2.10:15443'}")
	same(t, "member controller volumes", podField(t, objs, "Deployment", "trellis-controller", "volumes"),
		"[{name: ca, secret: {secretName: east-ca, items: [{key: ca.crt, path: ca.crt}]}}, {name: join, secret: {secretName: east-join, optional: true, items: [{key: token, path: token}]}}]")
	if args := podField(t, objs, "Deployment", "trellis-controller", "container", "args").([]any); !slices.Contains(args, any("--identity-secret="+releaseNamespace+"/east-identity")) {
		t.Errorf("member controller args %v: no --identity-secret naming east-identity", args)
	}
	same(t, "member proxy identity volume", podField(t, objs, "Deployment", "trellis-proxy", "volumes").([]any)[1],
		"{name: identity, secret: {secretName: east-identity, defaultMode: 0440, items: [{key: identity.pem, path: identity.pem}, {key: cluster-ca.pem, path: cluster-ca.pem}]}}")
	same(t, "member identity Role's named Secret", field(t, findObject(t, objs, "Role", "trellis-controller-identity"), "rules").([]any)[1],
		"{apiGroups: [''], resources: [secrets], resourceNames: [east-identity], verbs: [get, update]}")
	for _, o := range objs {
		if o.GetName() == "trellis-server" {
			t.Errorf("a member cluster renders %s", objectKey(o))
		}
	}
}

// TestChartNamespace installs the release elsewhere than trellis-system:
// every object and every reference to the namespace follows.
func TestChartNamespace(t *testing.T) {
	for _, member := range []bool{false, true} {
		var values []string
		if member {
			values = append(values, memberValues(t))
		}
		out, err := helmTemplateArgs(t, []string{"--namespace", "mesh"}, values...)
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeObjects(t, "helm template", out)
		for _, o := range objs {
			clusterScoped := o.GetKind() == "CustomResourceDefinition" || strings.HasPrefix(o.GetKind(), "Cluster")
			if ns := o.GetNamespace(); ns != "mesh" && !clusterScoped {
				t.Errorf("member %v: %s in namespace %q, want mesh", member, objectKey(o), ns)
			}
			if strings.Contains(string(mustJSON(t, o.Object)), releaseNamespace) {
				t.Errorf("member %v: %s still names %s", member, objectKey(o), releaseNamespace)
			}
		}
		args := podField(t, objs, "Deployment", "trellis-controller", "container", "args").([]any)
		if !slices.Contains(args, any("--leader-election-namespace=mesh")) {
			t.Errorf("member %v: controller args %v: no --leader-election-namespace=mesh", member, args)
		}
		if member && !slices.Contains(args, any("--identity-secret=mesh/trellis-identity")) {
			t.Errorf("controller args %v: no --identity-secret=mesh/trellis-identity", args)
		}
		if !member && !slices.Contains(args, any("--server=https://trellis-server.mesh.svc:7070")) {
			t.Errorf("controller args %v: no --server=https://trellis-server.mesh.svc:7070", args)
		}
		same(t, "the ClusterRoleBinding's subjects", field(t, findObject(t, objs, "ClusterRoleBinding", "trellis-controller"), "subjects"),
			"[{kind: ServiceAccount, name: trellis-controller, namespace: mesh}]")
	}
}

// TestChartValuesInjection gives the chart, its schema skipped (helm
// --skip-schema-validation), values that carry YAML of their own: a field,
// a second document. Each stays one string where it lands and adds nothing:
// the same objects as with the defaults, and no hostNetwork anywhere.
func TestChartValuesInjection(t *testing.T) {
	const evil = "x\n  hostNetwork: true\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: injected}"
	for _, member := range []bool{false, true} {
		values := map[string]any{
			"image":    map[string]any{"repository": evil, "tag": evil, "pullPolicy": evil, "pullSecrets": []string{evil}},
			"logLevel": evil,
			"secrets":  map[string]any{"cluster": evil, "tokens": evil, "serverTLS": evil},
			"server":   map[string]any{"storage": map[string]any{"size": evil, "className": evil}, "extraArgs": []string{evil}},
			"proxy": map[string]any{"extraArgs": []string{evil}, "serviceAccount": map[string]any{"annotations": map[string]string{evil: evil}},
				"podDisruptionBudget": map[string]any{"enabled": true, "maxUnavailable": evil}},
		}
		defaults := ""
		if member {
			values["member"] = map[string]any{"enabled": true, "cluster": evil, "server": evil, "peerAdvertise": evil,
				"joinTokenSecret": evil, "caSecret": evil, "identitySecret": evil}
			defaults = memberValues(t)
		}
		v, err := yaml.Marshal(values)
		if err != nil {
			t.Fatal(err)
		}
		out, err := helmTemplateArgs(t, []string{"--skip-schema-validation"}, string(v))
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeObjects(t, "helm template", out)
		want := map[string]bool{"PodDisruptionBudget " + releaseNamespace + "/trellis-proxy": true}
		for _, o := range renderChart(t, defaults) {
			want[objectKey(o)] = true
		}
		got := map[string]bool{}
		for _, o := range objs {
			got[objectKey(o)] = true
			if strings.Contains(string(mustJSON(t, o.Object)), `"hostNetwork"`) {
				t.Errorf("member %v: %s has a hostNetwork field", member, objectKey(o))
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("member %v: rendered %v, want %v", member, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		args := podField(t, objs, "Deployment", "trellis-proxy", "container", "args").([]any)
		if args[len(args)-2] != "--log-level="+evil || args[len(args)-1] != evil {
			t.Errorf("member %v: proxy args %q do not end with the log level and the extra argument, each one string", member, args)
		}
		same(t, "the proxy's image pull secrets", podField(t, objs, "Deployment", "trellis-proxy", "imagePullSecrets"), string(mustJSON(t, []any{map[string]any{"name": evil}})))
		same(t, "the proxy's image", podField(t, objs, "Deployment", "trellis-proxy", "container", "image"), string(mustJSON(t, evil+":"+evil)))
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestChartSchema gives the chart bad values: values.schema.json refuses
// each, naming the field.
func TestChartSchema(t *testing.T) {
	for _, c := range []struct{ values, field string }{
		{`controller: {replicas: -1}`, "/controller/replicas"},
		{`proxy: {replicas: two}`, "/proxy/replicas"},
		{`image: {repository: ""}`, "/image/repository"},
		{`image: {tag: "v1\nhostNetwork: true"}`, "/image/tag"},
		{`image: {pullPolicy: Sometimes}`, "/image/pullPolicy"},
		{`image: {pullSecrets: ["Not A Name"]}`, "/image/pullSecrets/0"},
		{`replica: 2`, "at '': additional properties 'replica'"},
		{`controller: {replica: 2}`, "at '/controller': additional properties 'replica'"},
		// One server: each replica would keep a store of its own.
		{`server: {replicas: 3}`, "at '/server': additional properties 'replicas'"},
		{`logLevel: verbose`, "/logLevel"},
		{`secrets: {cluster: ""}`, "/secrets/cluster"},
		{`secrets: {serverTLS: "../x"}`, "/secrets/serverTLS"},
		{`proxy: {extraArgs: [bind=0.0.0.0]}`, "/proxy/extraArgs/0"},
		{`proxy: {podDisruptionBudget: {enabled: true, maxUnavailable: -1}}`, "/proxy/podDisruptionBudget/maxUnavailable"},
		{`server: {storage: {size: lots}}`, "/server/storage/size"},
		{`member: {enabled: true}`, "/member/cluster"},
		{`member: {enabled: true, cluster: East, server: "https://cp:7070", peerAdvertise: "192.0.2.10:15443"}`, "/member/cluster"},
		{`member: {enabled: true, cluster: east, server: "http://cp:7070", peerAdvertise: "192.0.2.10:15443"}`, "/member/server"},
		{`member: {enabled: true, cluster: east, server: "https://cp:7070", peerAdvertise: "192.0.2.10"}`, "/member/peerAdvertise"},
	} {
		_, err := helmTemplate(t, c.values)
		if err == nil {
			t.Errorf("%s: rendered", c.values)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "values don't meet the specifications of the schema") || !strings.Contains(msg, c.field) {
			t.Errorf("%s: the error does not name %s as the schema's:\n%v", c.values, c.field, err)
		}
	}
}

// helmInstall runs `helm install` of the chart, as the release trellis in
// trellis-system, against the cluster c (inside its network namespace), and
// returns the objects it installed: what `helm template` renders with the
// same values.
func helmInstall(t testing.TB, c *kube.Cluster, values ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"install", releaseName, chartDir, "--namespace", releaseNamespace, "--kubeconfig", c.Kubeconfig}
	for i, v := range values {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("values-%d.yaml", i))
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	cmd := helmCmd(t, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := c.NS.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("helm %s: still running after 2 minutes\n%s", strings.Join(args, " "), out.Bytes())
	}
	t.Logf("helm %s:\n%s", strings.Join(args, " "), out.Bytes())
	return renderChart(t, values...)
}
