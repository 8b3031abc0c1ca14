package kubernetes

import (
	"os/exec"
	"strings"
	"testing"
)

// The releases whose CRDs a missing-CRD error (Gateway API) or warning
// (MCS) names are those of the modules trellis is built with.
func TestReleasesAreTheModules(t *testing.T) {
	for _, tc := range []struct{ module, name, release string }{
		{"sigs.k8s.io/gateway-api", "GatewayAPIRelease", GatewayAPIRelease},
		{"sigs.k8s.io/mcs-api", "MCSAPIRelease", MCSAPIRelease},
	} {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", tc.module).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", tc.module, err)
		}
		if v := strings.TrimSpace(string(out)); v != tc.release {
			t.Errorf("%s is %s; go.mod requires %s %s", tc.name, tc.release, tc.module, v)
		}
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
