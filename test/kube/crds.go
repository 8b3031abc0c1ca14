package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"
	"sigs.k8s.io/yaml"
)

// InstallCRDs installs (creates, or updates) every CustomResourceDefinition
// in the .yaml, .yml and .json files of dir and waits until each is
// established and its resources are served. Any other kind of object in
// those files fails the test. A kustomization.yaml is ignored.
func (c *Cluster) InstallCRDs(t testing.TB, dir string) {
	t.Helper()
	crds, others, err := loadCRDs(dir)
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	if len(others) > 0 {
		t.Fatalf("test/kube: InstallCRDs %s: not CustomResourceDefinitions: %s", dir, strings.Join(others, ", "))
	}
	if len(crds) == 0 {
		t.Fatalf("test/kube: InstallCRDs %s: no CustomResourceDefinitions found", dir)
	}
	c.applyCRDs(t, crds)
	waitPastJustCreated(c.waitCRDs(t, crds, true))
}

// manifest is one manifest file's contents.
type manifest struct {
	name string
	data []byte
}

// standardManifests are the sources of the CRDs every cluster gets: the
// Gateway API experimental channel (a superset of the standard one) of the
// sigs.k8s.io/gateway-api version this module requires, trellis's own
// (config/crd), and the Multi-Cluster Services API's ServiceExport and
// ServiceImport. They are
// read once per test binary.
var standardManifests = sync.OnceValues(func() ([]manifest, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("locating the sigs.k8s.io/gateway-api module (go list -m): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, errors.New("module sigs.k8s.io/gateway-api is not in the module cache (go mod download sigs.k8s.io/gateway-api)")
	}
	ms, err := readManifests(filepath.Join(dir, "config", "crd", "experimental"))
	if err != nil {
		return nil, err
	}
	// Trellis's own, from this checkout's config/crd.
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("locating test/kube's source to find config/crd")
	}
	own, err := readManifests(filepath.Join(filepath.Dir(self), "..", "..", "config", "crd"))
	if err != nil {
		return nil, err
	}
	return append(append(ms, own...),
		manifest{"sigs.k8s.io/mcs-api ServiceExport", mcscrd.ServiceExportCRD},
		manifest{"sigs.k8s.io/mcs-api ServiceImport", mcscrd.ServiceImportCRD},
	), nil
})

// standardCRDs decodes standardManifests, once per test binary. The
// experimental directory also holds the safe-upgrades
// ValidatingAdmissionPolicy, which only guards CRD upgrades; it is left
// out.
var standardCRDs = sync.OnceValues(func() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	ms, err := standardManifests()
	if err != nil {
		return nil, err
	}
	crds, _, err := decodeManifests(ms)
	return crds, err
})

// loadCRDs decodes the CRDs in dir's manifest files. others lists the
// documents of other kinds, as "file: Kind".
func loadCRDs(dir string) (crds []*apiextensionsv1.CustomResourceDefinition, others []string, err error) {
	ms, err := readManifests(dir)
	if err != nil {
		return nil, nil, err
	}
	return decodeManifests(ms)
}

// readManifests reads dir's .yaml, .yml and .json files but
// kustomization.yaml, in name order.
func readManifests(dir string) ([]manifest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading CRDs: %w", err)
	}
	var ms []manifest
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if e.IsDir() || name == "kustomization.yaml" || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading CRDs: %w", err)
		}
		ms = append(ms, manifest{path, data})
	}
	return ms, nil
}

func decodeManifests(ms []manifest) (crds []*apiextensionsv1.CustomResourceDefinition, others []string, err error) {
	for _, m := range ms {
		more, other, err := decodeCRDs(m.name, m.data)
		if err != nil {
			return nil, nil, err
		}
		crds = append(crds, more...)
		others = append(others, other...)
	}
	return crds, others, nil
}

// decodeCRDs decodes a YAML (possibly multi-document) or JSON manifest.
// Unknown fields in a CRD are an error.
func decodeCRDs(file string, data []byte) (crds []*apiextensionsv1.CustomResourceDefinition, others []string, err error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return crds, others, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		switch {
		case tm.Kind == "" && len(bytes.TrimSpace(doc)) == 0:
			continue
		case tm.APIVersion != "apiextensions.k8s.io/v1" || tm.Kind != "CustomResourceDefinition":
			others = append(others, fmt.Sprintf("%s: %s %s", file, tm.APIVersion, tm.Kind))
			continue
		}
		crd := new(apiextensionsv1.CustomResourceDefinition)
		if err := yaml.UnmarshalStrict(doc, crd); err != nil {
			return nil, nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		crds = append(crds, crd)
	}
}

// applyCRDs creates or updates crds, concurrently.
func (c *Cluster) applyCRDs(t testing.TB, crds []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make([]error, len(crds))
	var wg sync.WaitGroup
	for i, crd := range crds {
		wg.Go(func() { errs[i] = c.applyCRD(ctx, crd.DeepCopy()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("test/kube: installing CRDs: %v", err)
	}
}

// justCreated is how long after a CRD is established the apiserver delays
// create requests for its resources (by this much, in case another
// apiserver has not seen the CRD yet).
const justCreated = 2 * time.Second

// waitPastJustCreated sleeps until a CRD established at the given time no
// longer counts as just created. (The condition's time is in whole seconds,
// rounded down, as is the apiserver's comparison.)
func waitPastJustCreated(established time.Time) {
	time.Sleep(time.Until(established.Add(justCreated)))
}

// waitCRDs waits until every CRD in crds is established and in discovery
// (and, with list, answers a list request, which builds its handler now
// rather than on first use). It returns when the last of them was
// established.
func (c *Cluster) waitCRDs(t testing.TB, crds []*apiextensionsv1.CustomResourceDefinition, list bool) time.Time {
	t.Helper()
	var established time.Time
	ready := map[string]bool{}
	c.waitFor(t, "CRDs", time.Minute, c.running, func(ctx context.Context) error {
		for _, crd := range crds {
			if ready[crd.Name] {
				continue
			}
			at, err := c.crdServed(ctx, crd.Name, list)
			if err != nil {
				return fmt.Errorf("CRD %s: %w", crd.Name, err)
			}
			ready[crd.Name] = true
			if at.After(established) {
				established = at
			}
		}
		return nil
	})
	return established
}

// applyCRD creates crd, or updates the existing one to it.
func (c *Cluster) applyCRD(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	err := c.client.Create(ctx, crd)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		return nil
	}
	existing := new(apiextensionsv1.CustomResourceDefinition)
	if err := c.client.Get(ctx, client.ObjectKey{Name: crd.Name}, existing); err != nil {
		return fmt.Errorf("updating CRD %s: %w", crd.Name, err)
	}
	crd.ResourceVersion = existing.ResourceVersion
	if err := c.client.Update(ctx, crd); err != nil {
		return fmt.Errorf("updating CRD %s: %w", crd.Name, err)
	}
	return nil
}

// crdServed checks that a CRD is established and each served version is
// in its group version's discovery document (and, with list, that listing
// it succeeds). It returns when the CRD was established.
func (c *Cluster) crdServed(ctx context.Context, name string, list bool) (established time.Time, err error) {
	crd := new(apiextensionsv1.CustomResourceDefinition)
	if err := c.client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
		return time.Time{}, err
	}
	est := condition(crd, apiextensionsv1.Established)
	if est == nil || est.Status != apiextensionsv1.ConditionTrue {
		return time.Time{}, fmt.Errorf("not established: %v", crd.Status.Conditions)
	}
	if names := condition(crd, apiextensionsv1.NamesAccepted); names == nil || names.Status != apiextensionsv1.ConditionTrue {
		return time.Time{}, fmt.Errorf("names not accepted: %v", crd.Status.Conditions)
	}
	plural := crd.Spec.Names.Plural
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		gv := "/apis/" + crd.Spec.Group + "/" + v.Name
		if err := c.inDiscovery(ctx, gv, plural); err != nil {
			return time.Time{}, err
		}
		if list {
			if err := c.get(ctx, Server+gv+"/"+plural+"?limit=1"); err != nil {
				return time.Time{}, err
			}
		}
	}
	return est.LastTransitionTime.Time, nil
}

// inDiscovery checks that the discovery document at path lists resource.
func (c *Cluster) inDiscovery(ctx context.Context, path, resource string) error {
	var list metav1.APIResourceList
	if err := c.getJSON(ctx, Server+path, &list); err != nil {
		return err
	}
	if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == resource }) {
		return fmt.Errorf("discovery %s does not list %s yet", path, resource)
	}
	return nil
}

func (c *Cluster) getJSON(ctx context.Context, url string, v any) error {
	return getBody(ctx, c.http, url, "application/json", func(r io.Reader) error {
		if err := json.NewDecoder(r).Decode(v); err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		return nil
	})
}

// getBody GETs url with hc (asking for the accept media type, if given),
// wants 200, and hands the body to read (if any).
func getBody(ctx context.Context, hc *http.Client, url, accept string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if read == nil {
		return nil
	}
	return read(resp.Body)
}

func condition(crd *apiextensionsv1.CustomResourceDefinition, typ apiextensionsv1.CustomResourceDefinitionConditionType) *apiextensionsv1.CustomResourceDefinitionCondition {
	for i := range crd.Status.Conditions {
		if crd.Status.Conditions[i].Type == typ {
			return &crd.Status.Conditions[i]
		}
	}
	return nil
}
