package conformance_test

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"sigs.k8s.io/gateway-api/conformance"
	kubeutil "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
)

// baseManifests is the path of the suite's base manifests in its FS.
const baseManifests = "base/manifests.yaml"

// excludingGateways serves the suite's manifests with the named base
// Gateways ("namespace/name") marked as excluded from the suite's readiness
// checks. It exists for diagnosis only: when an implementation cannot yet
// accept one base Gateway, Setup never finishes, and this shows how every
// other test fares meanwhile. A run using it writes no report.
func excludingGateways(exclude []string) (fs.FS, error) {
	data, err := fs.ReadFile(conformance.Manifests, baseManifests)
	if err != nil {
		return nil, err
	}
	docs := strings.Split(string(data), "\n---\n")
	found := map[string]bool{}
	for i, doc := range docs {
		if !strings.Contains(doc, "\nkind: Gateway\n") && !strings.HasPrefix(doc, "kind: Gateway\n") {
			continue
		}
		for _, ref := range exclude {
			ns, name, _ := strings.Cut(ref, "/")
			if strings.Contains(doc, "\n  name: "+name+"\n") && strings.Contains(doc, "\n  namespace: "+ns+"\n") {
				docs[i] = strings.Replace(doc, "\nmetadata:\n",
					fmt.Sprintf("\nmetadata:\n  annotations:\n    %s: \"true\"\n", kubeutil.GatewayExcludedFromReadinessChecks), 1)
				found[ref] = true
			}
		}
	}
	for _, ref := range exclude {
		if !found[ref] {
			return nil, fmt.Errorf("no Gateway %s in the suite's base manifests", ref)
		}
	}
	overlay := fstest.MapFS{baseManifests: {Data: []byte(strings.Join(docs, "\n---\n"))}}
	return overlayFS{overlay, conformance.Manifests}, nil
}

// overlayFS serves files from over first, then from under.
type overlayFS struct{ over, under fs.FS }

func (o overlayFS) Open(name string) (fs.File, error) {
	if f, err := o.over.Open(name); err == nil {
		return f, nil
	}
	return o.under.Open(name)
}

func TestExcludingGateways(t *testing.T) {
	fsys, err := excludingGateways([]string{"gateway-conformance-infra/same-namespace-with-https-listener"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := fs.ReadFile(fsys, baseManifests)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), kubeutil.GatewayExcludedFromReadinessChecks); n != 1 {
		t.Errorf("annotation added %d times, want once", n)
	}
	if _, err := fs.ReadFile(fsys, "tests/httproute-simple-same-namespace.yaml"); err != nil {
		t.Errorf("other manifests not served: %v", err)
	}
	if _, err := excludingGateways([]string{"gateway-conformance-infra/nope"}); err == nil {
		t.Error("unknown Gateway accepted")
	}
}
