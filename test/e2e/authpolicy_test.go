package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// An AuthPolicy dropped into the quick start's directory turns auth on for
// the inventory route while `trellis up` runs: requests the policy does not
// allow get Lattice's 403, those it allows still reach the service, the
// route's neighbours stay open, and removing the file opens it again.
func TestQuickstartAuthPolicy(t *testing.T) {
	_, c, dir, _ := upQuickstart(t)
	policy := filepath.Join(dir, "inventory-auth.yaml")
	if err := os.WriteFile(policy, inventoryPolicy(hotelTeamOnly), 0o644); err != nil {
		t.Fatal(err)
	}
	do := func(host string, header http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL, nil)
		req.Host = host
		req.Header = header
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testsync.WaitFor(t, 10*time.Second, "the policy to refuse a request without x-team", func() bool {
		code, _ := do(inventoryHost, nil)
		return code == http.StatusForbidden
	})
	code, body := do(inventoryHost, nil)
	if code != http.StatusForbidden || !strings.Contains(body, "AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke") ||
		!strings.Contains(body, "because no service-based policy allows") {
		t.Errorf("GET without x-team: %d %q", code, body)
	}
	if code, body := do(inventoryHost, http.Header{"X-Team": {"hotel"}}); code != http.StatusOK || !strings.Contains(body, `"backend":"inventory-`) {
		t.Errorf("GET with x-team: hotel: %d %q, want the inventory service", code, body)
	}
	if code, _ := do("parking-default.my-hotel.trellis.internal", nil); code != http.StatusOK {
		t.Errorf("the parking service, which has no policy: %d, want 200", code)
	}

	// A Pod file names the local callers' address as a workload: a policy
	// can then allow that principal alone, and the backend is told who
	// called.
	if err := os.WriteFile(filepath.Join(dir, "caller.yaml"), []byte(`
apiVersion: v1
kind: Pod
metadata: {name: concierge}
spec: {serviceAccountName: concierge, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 127.0.0.1}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	concierge := `[{Effect: Allow, Principal: {Trellis: "spiffe://local/ns/default/sa/concierge"}, Action: trellis:Invoke, Resource: "*"}]`
	if err := os.WriteFile(policy, inventoryPolicy(concierge), 0o644); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the concierge workload to be let in without x-team", func() bool {
		code, _ := do(inventoryHost, nil)
		return code == http.StatusOK
	})
	if _, body := do(inventoryHost, nil); !strings.Contains(body, `"X-Trellis-Identity":["Principal=spiffe://local/ns/default/sa/concierge; Type=Workload"]`) {
		t.Errorf("the backend was not told the caller's identity: %s", body)
	}

	if err := os.Remove(policy); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the inventory route to open again", func() bool {
		code, _ := do(inventoryHost, nil)
		return code == http.StatusOK
	})
}

// inventoryPolicy is the quick start's AuthPolicy file on its inventory
// route, with statement (a YAML list) as the policy's Statement.
func inventoryPolicy(statement string) []byte {
	return []byte(`
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: inventory-readers}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: inventory}]
  policy:
    Statement: ` + statement + "\n")
}

// hotelTeamOnly is a Statement that allows requests with the header
// x-team: hotel, and no others.
const hotelTeamOnly = `[{Effect: Allow, Principal: "*", Action: trellis:Invoke, Resource: "*", Condition: {StringEquals: {"trellis:RequestHeader/x-team": hotel}}}]`
