// Package sameyaml_test checks that a manifest means the same through the
// file provider as on a real apiserver: the apiserver applies the CRDs'
// OpenAPI defaults and validations (and its own for core kinds), the file
// provider reads the same documents without one.
package sameyaml_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/manifest"
)

// sameCase is one manifest, read both ways.
type sameCase struct {
	name string
	yaml string
	// gap, when set, names the documented gap (docs/reference/
	// translation.md, "Differences from an apiserver") the case shows: a
	// validation of the apiserver's that the file provider does not make.
	// The test then wants the apiserver to refuse the case and the file
	// provider to take it.
	gap string
	// stricter, when set, names the documented difference the case shows
	// where the file provider refuses what an apiserver takes (and
	// changes): the test then wants exactly that.
	stricter string
}

// outcome is what one path made of a case.
type outcome struct {
	// refused lists what the path refused before translating: the
	// apiserver's causes (one per field), or the file provider's decoding
	// errors.
	refused []refusal
	// out is the translation (on the apiserver's path, of the objects it
	// took); nil when the file provider refused to decode the case.
	out *translate.Output
	// problems are out's Problems.
	problems []refusal
	// accepted is the YAML, as the case gives it, of the objects the
	// apiserver took (on its path only).
	accepted string
}

// refusal is one object or field refused, and why.
type refusal struct {
	object, field, message string
}

func (r refusal) String() string { return r.object + ": " + r.field + ": " + r.message }

// TestSameYAML reads every case through the file provider and through a real
// apiserver (dry-run creates: defaults applied and validations run, nothing
// stored, so the cases need no namespaces of their own) and wants the same
// model, Problems and status, or a refusal by both naming the same field.
func TestSameYAML(t *testing.T) {
	c := kube.Start(t, kube.Options{})
	kc := c.Client(t)
	var table strings.Builder
	fmt.Fprintf(&table, "| case | apiserver | file provider | result |\n|---|---|---|---|\n")
	for _, tc := range corpus(t) {
		t.Run(tc.name, func(t *testing.T) {
			viaFile := readFile(tc)
			viaAPI := readAPI(t, kc, tc)
			fixed, shown := withoutDifferences(t, tc)
			if tc.gap != "" {
				if len(viaAPI.refused) == 0 || len(viaFile.refused)+len(viaFile.problems) > 0 {
					t.Errorf("documented gap %q: want the apiserver to refuse and the file provider to take the case; the apiserver refused %v, the file provider %v (update the gap and the docs)", tc.gap, viaAPI.refused, viaFile.refused)
				}
				fmt.Fprintf(&table, "| %s | %s | %s | gap: %s |\n", tc.name, summary(viaAPI), summary(viaFile), tc.gap)
				return
			}
			if tc.stricter != "" {
				if len(viaAPI.refused) > 0 || len(viaFile.refused) == 0 {
					t.Errorf("documented difference %q: want the file provider to refuse the case and the apiserver to take it; the apiserver refused %v, the file provider %v (update the difference and the docs)", tc.stricter, viaAPI.refused, viaFile.refused)
				}
				fmt.Fprintf(&table, "| %s | %s | %s | documented: %s |\n", tc.name, summary(viaAPI), summary(viaFile), tc.stricter)
				return
			}
			if len(shown) == 0 {
				result := compare(t, viaFile, viaAPI, nil)
				fmt.Fprintf(&table, "| %s | %s | %s | %s |\n", tc.name, summary(viaAPI), summary(viaFile), result)
				return
			}
			// The case shows documented differences: the paths must
			// differ by those alone, and agree on the case without them.
			compare(t, viaFile, viaAPI, shown)
			result := compare(t, readFile(fixed), readAPI(t, kc, fixed), nil)
			var names []string
			for _, d := range shown {
				names = append(names, d.name)
			}
			fmt.Fprintf(&table, "| %s | %s | %s | documented: %s; without: %s |\n", tc.name, summary(viaAPI), summary(viaFile), strings.Join(names, ", "), result)
		})
	}
	t.Logf("cases:\n%s", table.String())
}

// summary is how a path's outcome reads in the table.
func summary(o outcome) string {
	var parts []string
	if len(o.refused) > 0 {
		parts = append(parts, "refused "+fields(o.refused))
	}
	if o.out != nil {
		parts = append(parts, fmt.Sprintf("%d services", len(o.out.Services)))
	}
	if len(o.problems) > 0 {
		parts = append(parts, "Problems "+fields(o.problems))
	}
	return strings.Join(parts, "; ")
}

// fields lists the fields rs name, without indexes, once each.
func fields(rs []refusal) string {
	var out []string
	for _, r := range rs {
		f := stripIndexes(r.field)
		if f == "" {
			f = "(decoding)"
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return strings.Join(out, ", ")
}

// compare checks that the two outcomes agree, but for the documented
// differences shown, which must each show, and says how they relate.
func compare(t *testing.T, viaFile, viaAPI outcome, shown []difference) string {
	t.Helper()
	var diffs []string
	seen := map[string]bool{}
	documented := func(r refusal) bool {
		for _, d := range shown {
			if d.refused(r) {
				seen[d.name] = true
				return true
			}
		}
		return false
	}
	for _, d := range shown {
		if !seen[d.name] {
			defer func() {
				if !seen[d.name] {
					t.Errorf("documented difference %q: the apiserver accepted what it changes; update the difference and the docs", d.name)
				}
			}()
		}
	}
	result := "same"
	switch {
	case len(viaAPI.refused) > 0:
		fileRefused := append(slices.Clone(viaFile.refused), viaFile.problems...)
		for _, r := range viaAPI.refused {
			if !documented(r) && !refusedAlike(r, fileRefused) {
				diffs = append(diffs, fmt.Sprintf("the apiserver refused %s; the file provider did not name that field (it refused: %v)", r, fileRefused))
			}
		}
		// What the apiserver took means the same through the file
		// provider.
		taken := readFile(sameCase{name: "accepted", yaml: viaAPI.accepted})
		if taken.out == nil {
			diffs = append(diffs, fmt.Sprintf("the file provider refused the objects the apiserver took: %v", taken.refused))
		} else if a, b := render(t, taken.out), render(t, viaAPI.out); a != b {
			diffs = append(diffs, "the translations of the objects the apiserver took differ:\n"+lineDiff(a, b))
		}
		result = "both refuse; the rest same"
	case viaFile.out == nil:
		diffs = append(diffs, fmt.Sprintf("the apiserver took every object; the file provider refused: %v", viaFile.refused))
	default:
		if a, b := render(t, viaFile.out), render(t, viaAPI.out); a != b {
			diffs = append(diffs, "the translations differ:\n"+lineDiff(a, b))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%s", strings.Join(diffs, "\n"))
		return "**differ**"
	}
	return result
}

// refusedAlike reports whether the file provider's refusals name the object
// and field of r, the apiserver's: one field path is a prefix of the other
// (indexes left out), below spec.
func refusedAlike(r refusal, fileRefused []refusal) bool {
	want := stripIndexes(r.field)
	for _, f := range fileRefused {
		got := stripIndexes(f.field)
		if f.object != r.object && f.object != "decode" {
			continue
		}
		if got == "" {
			// An error of the decoder: the field is in its text.
			if want != "" && strings.Contains(stripIndexes(f.message), want) {
				return true
			}
			continue
		}
		short, long := want, got
		if len(short) > len(long) {
			short, long = long, short
		}
		if strings.Count(short, ".") >= 1 && (long == short || strings.HasPrefix(long, short+".")) {
			return true
		}
	}
	return false
}

var indexes = regexp.MustCompile(`\[[^\]]*\]`)

// stripIndexes removes list indexes and map keys from a field path.
func stripIndexes(field string) string { return indexes.ReplaceAllString(field, "") }

// readFile is the file provider's path: decode, then translate.
func readFile(tc sameCase) outcome {
	in, err := file.Parse(tc.name+".yaml", []byte(tc.yaml))
	if err != nil {
		var o outcome
		for _, e := range flatten(err) {
			o.refused = append(o.refused, refusal{object: "decode", message: e.Error()})
		}
		return o
	}
	return translated(in)
}

// flatten lists the errors joined in err.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var all []error
		for _, e := range j.Unwrap() {
			all = append(all, flatten(e)...)
		}
		return all
	}
	return []error{err}
}

// translated translates in as the file provider's caller does.
func translated(in *translate.Input) outcome {
	in.Cluster = "local"
	o := outcome{out: translate.Translate(in)}
	for _, p := range o.out.Problems {
		o.problems = append(o.problems, refusal{object: p.Object.Kind + " " + p.Object.Namespace + "/" + p.Object.Name, field: p.Field, message: p.Message})
	}
	return o
}

// readAPI is the apiserver's path: every document is created with dry run
// (defaults applied, every validation run, nothing stored) and strict field
// validation, as kubectl does; what comes back is translated. A refused
// create is recorded with its fields, and the rest translated.
func readAPI(t *testing.T, kc client.Client, tc sameCase) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	docs := documents(t, tc.yaml)
	// Every namespace the case names exists (for real, and bare), since a
	// dry-run create into a missing namespace is refused.
	for _, u := range docs {
		namespaced, err := kc.IsObjectNamespaced(u)
		if err != nil {
			// A kind the apiserver does not serve: its create says so.
			continue
		}
		if namespaced && u.GetNamespace() == "" {
			u.SetNamespace(file.DefaultNamespace)
		}
		ns := u.GetNamespace()
		if u.GetKind() == "Namespace" && u.GetAPIVersion() == "v1" {
			ns = u.GetName()
		}
		if ns != "" {
			ensureNamespace(ctx, t, kc, ns)
		}
	}
	var o outcome
	var back, accepted bytes.Buffer
	for _, u := range docs {
		got, err := dryRun(ctx, kc, u)
		if err != nil {
			o.refused = append(o.refused, causes(u, err)...)
			continue
		}
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		accepted.WriteString("---\n")
		accepted.Write(data)
		for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"} {
			unstructured.RemoveNestedField(got.Object, "metadata", f)
		}
		// The case's own creation times order routes and policies; a
		// deletion time is the apiserver's to set, on delete.
		for _, f := range []string{"creationTimestamp", "deletionTimestamp"} {
			if at, ok, _ := unstructured.NestedFieldCopy(u.Object, "metadata", f); ok {
				_ = unstructured.SetNestedField(got.Object, at, "metadata", f)
			}
		}
		// Status is written by the cluster's controllers (a Pod's by its
		// kubelet), never by a create: the case's own stands in for theirs.
		unstructured.RemoveNestedField(got.Object, "status")
		if st, ok, _ := unstructured.NestedFieldCopy(u.Object, "status"); ok {
			_ = unstructured.SetNestedField(got.Object, st, "status")
		}
		data, err = yaml.Marshal(got.Object)
		if err != nil {
			t.Fatal(err)
		}
		back.WriteString("---\n")
		back.Write(data)
	}
	in, err := file.Parse("apiserver.yaml", back.Bytes())
	if err != nil {
		t.Fatalf("the file provider cannot read what the apiserver made of the case: %v\n%s", err, back.String())
	}
	refused := o.refused
	o = translated(in)
	o.refused, o.accepted = refused, accepted.String()
	return o
}

// dryRun creates u with dry run and returns what the apiserver would store.
// A Namespace (which exists already) is updated with dry run instead.
func dryRun(ctx context.Context, kc client.Client, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	got := u.DeepCopy()
	opts := []client.CreateOption{client.DryRunAll, client.FieldValidation("Strict")}
	if u.GetKind() != "Namespace" || u.GetAPIVersion() != "v1" {
		return got, retry(ctx, func() error { return kc.Create(ctx, got, opts...) })
	}
	err := retry(ctx, func() error {
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(u.GroupVersionKind())
		if err := kc.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
			return err
		}
		got = u.DeepCopy()
		got.SetResourceVersion(cur.GetResourceVersion())
		return kc.Update(ctx, got, client.DryRunAll, client.FieldValidation("Strict"))
	})
	return got, err
}

// retry calls f until it returns something other than an error the
// apiserver gives when it is busy (a loaded machine), for up to a minute.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || !(apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
			apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsConflict(err)) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ensureNamespace creates the namespace ns unless it exists.
func ensureNamespace(ctx context.Context, t *testing.T, kc client.Client, ns string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(ns)
	err := retry(ctx, func() error { return kc.Create(ctx, u) })
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
}

// causes lists the fields the apiserver named in refusing u.
func causes(u *unstructured.Unstructured, err error) []refusal {
	what := u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Details != nil && len(status.Status().Details.Causes) > 0 {
		var rs []refusal
		for _, c := range status.Status().Details.Causes {
			if strings.Contains(c.Message, "some validation rules were not checked") {
				continue // it comes with the causes that stopped them
			}
			field := c.Field
			if field == "" || field == "<nil>" {
				field = quotedField(c.Message)
			}
			rs = append(rs, refusal{object: what, field: field, message: c.Message})
		}
		return rs
	}
	return []refusal{{object: what, field: quotedField(err.Error()), message: err.Error()}}
}

var quotedFieldRE = regexp.MustCompile(`"((?:spec|metadata|data|endpoints|ports|addressType)\b[^"]*)"`)

// quotedField is the field path a message quotes ("spec.addresses[0]" must
// validate..., unknown field "spec.rulez"), for a cause that names no field.
func quotedField(message string) string {
	if m := quotedFieldRE.FindStringSubmatch(message); m != nil {
		return m[1]
	}
	return ""
}

// documents decodes a YAML stream into its objects, leaving out empty
// documents.
func documents(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	docs, err := manifest.Decode(stream)
	if err != nil {
		t.Fatalf("decoding the case: %v", err)
	}
	return docs
}

// render is an output as JSON lines, for comparing and showing differences.
// A route status's parentRef echoes the route's: the apiserver's carries the
// CRD's defaults (group, kind), which the file provider, which writes no
// status, leaves out; render fills them in.
func render(t *testing.T, out *translate.Output) string {
	t.Helper()
	for i := range out.Status.Routes {
		for j := range out.Status.Routes[i].Parents {
			ref := &out.Status.Routes[i].Parents[j].ParentRef
			if ref.Group == nil {
				ref.Group = ptr(gatewayv1.Group(gatewayv1.GroupName))
			}
			if ref.Kind == nil {
				ref.Kind = ptr(gatewayv1.Kind("Gateway"))
			}
		}
	}
	data, err := json.MarshalIndent(struct {
		Objects  any
		Problems []translate.Problem
		Status   translate.Status
	}{out.Objects, out.Problems, out.Status}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func ptr[T any](v T) *T { return &v }

// lineDiff shows the lines of a and b that differ, in place (file provider
// first, apiserver second), with a little context.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)) && len(out) < 40; i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d: file %q, apiserver %q", i+1, x, y))
		}
	}
	return strings.Join(out, "\n")
}

// corpus is every case: the translator's golden inputs, the examples, and
// the crafted cases aimed at the CRDs' defaults and validations.
func corpus(t *testing.T) []sameCase {
	t.Helper()
	root := filepath.Join("..", "..")
	var cases []sameCase
	golden, err := filepath.Glob(filepath.Join(root, "internal", "translate", "testdata", "*", "input.yaml"))
	if err != nil || len(golden) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, path := range golden {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, sameCase{name: "golden/" + filepath.Base(filepath.Dir(path)), yaml: string(data)})
	}
	examples, err := filepath.Glob(filepath.Join(root, "examples", "*"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, dir := range examples {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		var all strings.Builder
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			all.WriteString("---\n")
			all.Write(data)
		}
		cases = append(cases, sameCase{name: "examples/" + filepath.Base(dir), yaml: all.String()})
	}
	cases = append(cases, crafted...)
	return append(cases, targetGroupPolicyCases...)
}
