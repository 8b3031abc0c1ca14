package file

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/test/testsync"
)

// checkFast fails t unless fastJSON either declines doc or makes of it
// exactly what YAMLToJSONStrict makes, with raw the same document as j.
// It reports whether fastJSON took doc.
func checkFast(t testing.TB, doc []byte) bool {
	t.Helper()
	j, raw, ok := fastJSON(doc)
	if !ok {
		return false
	}
	want, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		t.Fatalf("fastJSON took %q, which YAMLToJSONStrict refuses: %v", doc, err)
	}
	if !bytes.Equal(j, want) {
		t.Fatalf("fastJSON(%q) =\n%s\nYAMLToJSONStrict:\n%s", doc, j, want)
	}
	if m, err := json.Marshal(raw); err != nil || !bytes.Equal(m, j) {
		t.Fatalf("fastJSON(%q): raw encodes as %s (%v), j is %s", doc, m, err, j)
	}
	// What the document decodes to, or the error naming what is wrong
	// with it (the strict decode reads the decoded maps too).
	where := location{file: "f.yaml", line: 3}
	fe, fdesc, ferr := decodeWith(document{data: doc, line: 3}, where, true)
	ge, gdesc, gerr := decodeWith(document{data: doc, line: 3}, where, false)
	if fdesc != gdesc || fmt.Sprint(ferr) != fmt.Sprint(gerr) || fe.key != ge.key || fe.where != ge.where ||
		fe.kind.kind != ge.kind.kind || !reflect.DeepEqual(fe.obj, ge.obj) {
		t.Fatalf("decoding %q: %+v, %q, %v with fastJSON; %+v, %q, %v without", doc, fe.obj, fdesc, ferr, ge.obj, gdesc, gerr)
	}
	return true
}

// fastTaken are documents of the forms configuration files have, which
// fastJSON must take.
var fastTaken = []string{
	route, service,
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {}\nspec:\n  ports: []\n",
	// kubectl's style: sequences at their key's indent, unquoted addresses.
	"kind: EndpointSlice\nendpoints:\n- addresses:\n  - 10.0.0.1\n  conditions:\n    ready: true\n  zone: null-zone\nports:\n- port: 8080\n  name: http\n",
	// comments, quotes, flow lists, empty values, extra spaces.
	"# a route\nkind: HTTPRoute   # the kind\nmetadata:\n  name: 'r-1'\n  annotations:\n    a.b/c: \"x # not a comment: <&>\"\nspec:\n  hostnames: [a.example.com, \"b.example.com\" , 'c']\n  rules:\n  -   matches:\n      - path:\n          value: /api\n      backendRefs:\n  - weight: 0\n    port: 123456789012345678\n",
	"a:\n  - - x\n    - z\n  - -\n      b: 1\n",
	"a: false\nb: 127.0.0.1\nc: /\nd: \"\"\ne: ''\n",
	strings.Repeat("k", 512) + ": v\n",
	// decoded with errors: unknown fields, a wrong type, a header key in
	// another case, an unsupported kind, a bad name.
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  nmae: b\nspec:\n  ports:\n  - port: \"80\"\n    prot: 1\n",
	"apiVersion: v1\nKind: Service\nmetadata:\n  Name: a\n",
	"apiVersion: v2\nkind: Service\nmetadata:\n  name: a\n",
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: A_b\n  namespace: x.y\n",
	"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: e\naddressType: IPv4\nendpoints:\n- addresses: [1.2.3.4]\n  conditions: {}\n  zone: 5\n",
}

// fastDeclined are documents fastJSON must leave to the general
// conversion: taking them as their look suggests would change their
// meaning, or they are errors.
var fastDeclined = []string{
	"a: yes\n", "a: on\n", "a: No\n", "a: ~\n", "a: True\n", "y: 1\n", "on: 1\n", "a: null\n",
	"a: 010\n", "a: 1_000\n", "a: 1.5\n", "a: 0x1f\n", "a: -1\n", "a: .inf\n", "a: 2001-12-14\n", "a: 1e3\n", "a: 10s\n",
	"80: a\n", "\"a\": b\n", "a: &x b\nc: *x\n", "a: !!str 1\n", "a: |\n  b\n", "a: >\n  b\n",
	"a: b\n  c\n", "- a\n  b\n", "a: \"b\\n\"\n", "a: 'it''s'\n", "a: \"b\nc\"\n", "a:\tb\n", "a: b\r\n",
	"a: 1\na: 2\n", "a: é\n", "a: b: c\n", "a: b#c\n", "a: [b, [c]]\n", "a: {b: c}\n", "a: [b,]\n",
	"- a\n", "a\n", "a: 1\n b: 2\n", "a:\n  b: 1\n c: 2\n", "a:\n- b\n c\n", "<<: {}\n", "a: \"b\" c\n",
	"a: 1\n- b\n", "...\n", "%YAML 1.1\na: b\n",
	"a:" + strings.Repeat(" - ", 100) + "b\n",
	strings.Repeat("k", 1025) + ": v\n", strings.Repeat("k", 513) + ": v\n",
}

func TestFastYAMLMatchesGeneral(t *testing.T) {
	for _, doc := range fastTaken {
		if !checkFast(t, []byte(doc)) {
			t.Errorf("fastJSON declined %q", doc)
		}
	}
	for _, doc := range fastDeclined {
		if checkFast(t, []byte(doc)) {
			t.Errorf("fastJSON took %q", doc)
		}
	}
}

// TestLoadFastMatchesGeneral loads bench/scale's generated directory and
// the examples with fastJSON and without it: the objects must be the same,
// and fastJSON must have taken every generated document (else the cold
// start it is for would not be sped up).
func TestLoadFastMatchesGeneral(t *testing.T) {
	dir := t.TempDir()
	gen := exec.Command("go", "run", "../../../bench/scale", "gen", "-dir", dir, "-services", "300")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generating: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	docs := 0
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range splitDocuments(data) {
			docs++
			if !checkFast(t, d.data) {
				t.Fatalf("%s: fastJSON declined the document at line %d", name, d.line)
			}
		}
	}
	if docs < 900 {
		t.Fatalf("%d documents generated, want 901", docs)
	}
	examples, _ := filepath.Glob("../../../examples/*")
	for _, d := range append([]string{dir}, examples...) {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		fast, fastErr := Load(d)
		fastYAML = false
		general, generalErr := Load(d)
		fastYAML = true
		if fmt.Sprint(fastErr) != fmt.Sprint(generalErr) {
			t.Fatalf("%s: Load: %v with fastJSON, %v without", d, fastErr, generalErr)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("%s: Load differs with fastJSON", d)
		}
	}
}

// FuzzFastYAML checks that whatever fastJSON takes, it converts exactly as
// YAMLToJSONStrict does.
func FuzzFastYAML(f *testing.F) {
	for _, s := range append(append([]string{}, fastTaken...), fastDeclined...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkFast(t, doc)
	})
}

// BenchmarkLoadScale decodes bench/scale's directory of 10,000 routes (and
// their Services and EndpointSlices: 30,001 documents, 14.6 MB) as a cold
// start does, with fastJSON and with the general conversion alone, files
// side by side. It reports the process's CPU time per load (cpu-ms/op),
// which the machine's load inflates less than the wall time.
func BenchmarkLoadScale(b *testing.B) {
	dir := b.TempDir()
	gen := exec.Command("go", "run", "../../../bench/scale", "gen", "-dir", dir, "-services", "10000")
	if out, err := gen.CombinedOutput(); err != nil {
		b.Fatalf("generating: %v\n%s", err, out)
	}
	for _, fast := range []bool{true, false} {
		b.Run(fmt.Sprintf("fast=%v", fast), func(b *testing.B) {
			fastYAML = fast
			defer func() { fastYAML = true }()
			b.ReportAllocs()
			start := testsync.CPUTime()
			for b.Loop() {
				p := &Provider{Dir: dir}
				files, err := p.readFiles(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for _, d := range p.decodeChanged(files) {
					if len(d.errs) > 0 {
						b.Fatal(d.errs)
					}
				}
			}
			b.ReportMetric(float64(testsync.CPUTime()-start)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}
