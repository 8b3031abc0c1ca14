package kubernetes

import (
	"os/exec"
	"strings"
	"testing"
)

// The release whose manifest a missing-CRD error names is the Gateway API
// module trellis is built with.
func TestGatewayAPIReleaseIsTheModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	if v := strings.TrimSpace(string(out)); v != GatewayAPIRelease {
		t.Errorf("GatewayAPIRelease is %s; go.mod requires sigs.k8s.io/gateway-api %s", GatewayAPIRelease, v)
	}
}

// The release whose CRDs a warning about missing MCS CRDs names is the
// mcs-api module trellis is built with.
func TestMCSAPIReleaseIsTheModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/mcs-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/mcs-api: %v", err)
	}
	if v := strings.TrimSpace(string(out)); v != MCSAPIRelease {
		t.Errorf("MCSAPIRelease is %s; go.mod requires sigs.k8s.io/mcs-api %s", MCSAPIRelease, v)
	}
}

// Every CRD of trellis's own that the controller watches is embedded, for
// `trellis up` to install.
func TestOwnCRDsEmbedded(t *testing.T) {
	for _, c := range Watched {
		if !c.Own {
			continue
		}
		def, err := ownCRD(c.Name)
		if err != nil {
			t.Fatal(err)
		}
		if def.Spec.Group != c.Group || def.Spec.Names.Plural != c.Resource || def.Spec.Names.Kind != c.Kind {
			t.Errorf("embedded %s defines %s/%s %s", c.Name, def.Spec.Group, def.Spec.Names.Plural, def.Spec.Names.Kind)
		}
	}
}
