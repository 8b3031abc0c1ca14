package translate_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/manifest"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// TestGolden translates testdata/<case>/input.yaml and compares the result
// with testdata/<case>/output.golden.yaml. An optional
// testdata/<case>/options.yaml sets what a provider adds to the objects
// (see options).
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no golden cases found")
	}
	for _, input := range inputs {
		dir := filepath.Dir(input)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in := parseFile(t, input)
			in.Cluster = "local"
			if err := readOptions(filepath.Join(dir, "options.yaml"), in); err != nil {
				t.Fatal(err)
			}
			before, err := yaml.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			out := translate.Translate(in)
			if after, _ := yaml.Marshal(in); !bytes.Equal(before, after) {
				t.Error("Translate changed its input")
			}
			checkValid(t, out)
			checkOrderIndependent(t, in, out)
			compareGolden(t, filepath.Join(dir, "output.golden.yaml"), out)
		})
	}
}

// parseFile reads the objects of one YAML file, as the file provider does.
func parseFile(t *testing.T, path string) *translate.Input {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in, err := file.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestQuickstartExample checks that the example the quick start documents
// translates exactly as its golden copy in testdata does.
func TestQuickstartExample(t *testing.T) {
	in, err := file.Load("../../examples/quickstart")
	if err != nil {
		t.Fatal(err)
	}
	in.Cluster = "local"
	out := translate.Translate(in)
	if len(out.Problems) > 0 {
		t.Errorf("the quick start has problems: %v", out.Problems)
	}
	got, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/quickstart/output.golden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("examples/quickstart and testdata/quickstart/input.yaml have drifted apart; got:\n%s", got)
	}
}

// options are the Input fields a provider sets beside the objects.
type options struct {
	GatewayAddresses  map[string][]string `json:"gatewayAddresses"`
	GatewayAPIVersion string              `json:"gatewayAPIVersion"`
}

// readOptions sets in's provider fields from the file at path, if any.
func readOptions(path string, in *translate.Input) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var o options
	if err := yaml.UnmarshalStrict(data, &o); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	in.GatewayAddresses = o.GatewayAddresses
	in.GatewayAPIVersion = o.GatewayAPIVersion
	return nil
}

func compareGolden(t *testing.T, path string, out *translate.Output) {
	t.Helper()
	got, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -update and review the diff); got:\n%s", path, got)
	}
}

// translateClean translates in as cluster "local", checks the output
// (checkValid) and fails the test if it has problems.
func translateClean(t *testing.T, in *translate.Input) *translate.Output {
	t.Helper()
	in.Cluster = "local"
	out := translate.Translate(in)
	checkValid(t, out)
	if len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	return out
}

// checkValid checks the promises Output makes: every object valid, lists
// sorted by name, every problem naming its object.
func checkValid(t *testing.T, out *translate.Output) {
	t.Helper()
	for _, o := range out.Each() {
		if err := o.Validate(); err != nil {
			t.Errorf("%s %s is invalid: %v", o.ObjectKind(), o.ObjectMeta().Name, err)
		}
	}
	sorted := func(names []string) bool { return slices.IsSorted(names) }
	var nets, svcs, tgs []string
	for _, n := range out.Networks {
		nets = append(nets, n.Name)
	}
	for _, s := range out.Services {
		svcs = append(svcs, s.Name)
	}
	for _, tg := range out.TargetGroups {
		tgs = append(tgs, tg.Name)
	}
	if !sorted(nets) || !sorted(svcs) || !sorted(tgs) {
		t.Errorf("output not sorted by name: %v %v %v", nets, svcs, tgs)
	}
	for _, p := range out.Problems {
		if p.Object.Kind == "" || p.Object.Name == "" || p.Reason == "" || p.Message == "" {
			t.Errorf("incomplete problem: %+v", p)
		}
	}
	// Every backend names a produced target group, or none, and every
	// listener produced certificates.
	have := map[string]bool{}
	for _, tg := range out.TargetGroups {
		have[tg.Name] = true
	}
	certs := map[string]bool{}
	for _, c := range out.Certificates {
		certs[c.Name] = true
	}
	for _, s := range out.Services {
		for _, l := range s.Listeners {
			for _, c := range l.Certificates {
				if !certs[c] {
					t.Errorf("service %s uses missing certificate %q", s.Name, c)
				}
			}
		}
	}
	for _, s := range out.Services {
		for _, r := range s.Rules {
			if r.Action.Forward == nil {
				continue
			}
			for _, b := range r.Action.Forward.Backends {
				if b.TargetGroup != "" && !have[b.TargetGroup] {
					t.Errorf("service %s uses missing target group %q", s.Name, b.TargetGroup)
				}
			}
		}
	}
}

// checkOrderIndependent translates in with every list reversed and expects
// the same output.
func checkOrderIndependent(t *testing.T, in *translate.Input, want *translate.Output) {
	t.Helper()
	rev := *in
	// Every slice field of Input is a list of objects, so a list added to
	// Input is reversed here too.
	v := reflect.ValueOf(&rev).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Slice {
			r := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			for j := range f.Len() {
				r.Index(f.Len() - 1 - j).Set(f.Index(j))
			}
			f.Set(r)
		}
	}
	a, _ := yaml.Marshal(want)
	b, _ := yaml.Marshal(translate.Translate(&rev))
	if !bytes.Equal(a, b) {
		t.Errorf("output depends on input order; reversed input gives:\n%s", b)
	}
}

// FuzzTranslate feeds arbitrary YAML through the file decoder and the
// translator: neither may panic, and whatever is produced must be valid.
func FuzzTranslate(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*/input.yaml")
	for _, input := range inputs {
		data, err := os.ReadFile(input)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := file.Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		in.Cluster = "local"
		checkValid(t, translate.Translate(in))
	})
}

// More than 10 weighted backends in one rule (the Lattice limit), mixing
// Services and ServiceImports: every one is kept, with its weight and in
// order, and nothing is reported.
func TestTwelveBackendsInOneRule(t *testing.T) {
	var b strings.Builder
	b.WriteString(manifest.ServiceNetwork("mesh", "", "[{name: http, protocol: HTTP, port: 80}]") +
		manifest.Spec(manifest.GatewayAPI, "HTTPRoute", "name: many", "  parentRefs: [{name: mesh}]\n  rules:\n    - backendRefs:\n"))
	for i := range 12 {
		if i%2 == 0 {
			fmt.Fprintf(&b, "        - {name: svc-%d, port: 80, weight: %d}\n", i, i+1)
		} else {
			fmt.Fprintf(&b, "        - {group: multicluster.x-k8s.io, kind: ServiceImport, name: imp-%d, port: 80, weight: %d}\n", i, i+1)
		}
	}
	for i := range 12 {
		if i%2 == 0 {
			fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d}\nspec: {ports: [{port: 80}]}\n", i)
		} else {
			fmt.Fprintf(&b, "---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\nmetadata: {name: imp-%d}\nspec: {type: ClusterSetIP, ports: [{port: 80}]}\n", i)
		}
	}
	in, err := file.Parse("many.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	out := translateClean(t, in)
	if len(out.Services) != 1 {
		t.Fatalf("%d services, want 1", len(out.Services))
	}
	backends := out.Services[0].Rules[0].Action.Forward.Backends
	if len(backends) != 12 {
		t.Fatalf("%d backends, want 12: %+v", len(backends), backends)
	}
	for i, be := range backends {
		if be.Weight != int32(i+1) {
			t.Errorf("backends[%d].weight = %d, want %d", i, be.Weight, i+1)
		}
		switch {
		case i%2 == 0 && (be.TargetGroup != fmt.Sprintf("svc-%d-default-80", i) || be.Import != nil):
			t.Errorf("backends[%d] = %+v, want target group svc-%d-default-80", i, be, i)
		case i%2 == 1 && (be.TargetGroup != "" || be.Import == nil || be.Import.Name != fmt.Sprintf("imp-%d", i) || be.Import.Port != 80):
			t.Errorf("backends[%d] = %+v, want import default/imp-%d port 80", i, be, i)
		}
	}
}
