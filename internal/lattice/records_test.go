package lattice

import (
	"fmt"
	"net/http"
	"testing"
)

// Get, Delete and the auth policy operations answer through the kinds'
// shared steps (get, remove, ownGuarded): a record by ID or name for any
// owner, the owner alone deleting it, a target group a listener uses kept
// with a ConflictException, and a policy on the caller's service only.
func TestGetDeleteAndPolicyOfAKind(t *testing.T) {
	a := newTestAPI(t)
	_, _, svc := a.do("EAST", "POST", "/services", `{"name":"inventory"}`)
	_, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"ver1","type":"IP","config":{"protocol":"HTTP","port":80}}`)
	svcID, tgID := svc["id"].(string), tg["id"].(string)
	status, _, l := a.do("EAST", "POST", "/services/"+svcID+"/listeners",
		fmt.Sprintf(`{"name":"http","protocol":"HTTP","defaultAction":{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}}`, tgID))
	if status != http.StatusCreated {
		t.Fatalf("create-listener: %d %v", status, l)
	}

	for _, key := range []string{"EAST", "WEST"} {
		if status, _, got := a.do(key, "GET", "/services/inventory", ""); status != http.StatusOK || got["id"] != svcID || got["arn"] != svc["arn"] {
			t.Errorf("%s get-service by name: %d %v, want %s", key, status, got, svcID)
		}
	}
	if status, code, _ := a.do("EAST", "GET", "/services/svc-00000000000000000", ""); status != http.StatusNotFound || code != "ResourceNotFoundException" {
		t.Errorf("get-service of none: %d %s, want 404 ResourceNotFoundException", status, code)
	}

	// Auth policy: east's own service; west may not put one on it.
	const doc = `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:Invoke","Resource":"*"}]}`
	body := fmt.Sprintf(`{"policy":%q}`, doc)
	if status, code, _ := a.do("WEST", "PUT", "/authpolicy/"+svcID, body); status != http.StatusForbidden || code != "AccessDeniedException" {
		t.Errorf("west's put-auth-policy on east's service: %d %s, want 403 AccessDeniedException", status, code)
	}
	if status, _, got := a.do("EAST", "PUT", "/authpolicy/"+svcID, body); status != http.StatusOK || got["policy"] != doc || got["state"] != "Inactive" {
		t.Errorf("put-auth-policy: %d %v", status, got)
	}
	if status, _, got := a.do("WEST", "GET", "/authpolicy/"+svcID, ""); status != http.StatusOK || got["policy"] != doc {
		t.Errorf("get-auth-policy: %d %v", status, got)
	}
	if status, _, _ := a.do("EAST", "DELETE", "/authpolicy/"+svcID, ""); status != http.StatusNoContent {
		t.Errorf("delete-auth-policy: %d", status)
	}
	if status, code, _ := a.do("EAST", "GET", "/authpolicy/"+svcID, ""); status != http.StatusNotFound || code != "ResourceNotFoundException" {
		t.Errorf("get-auth-policy after delete: %d %s, want 404 ResourceNotFoundException", status, code)
	}

	// Delete: only the owner, and not while the listener forwards to it.
	if status, code, _ := a.do("WEST", "DELETE", "/targetgroups/"+tgID, ""); status != http.StatusForbidden || code != "AccessDeniedException" {
		t.Errorf("west's delete-target-group: %d %s, want 403 AccessDeniedException", status, code)
	}
	if status, code, _ := a.do("EAST", "DELETE", "/targetgroups/"+tgID, ""); status != http.StatusConflict || code != "ConflictException" {
		t.Errorf("delete-target-group in use: %d %s, want 409 ConflictException", status, code)
	}
	if status, _, _ := a.do("EAST", "DELETE", "/services/"+svcID+"/listeners/"+l["id"].(string), ""); status != http.StatusNoContent {
		t.Fatalf("delete-listener: %d", status)
	}
	if status, _, got := a.do("EAST", "DELETE", "/targetgroups/"+tgID, ""); status != http.StatusOK ||
		got["id"] != tgID || got["arn"] != tg["arn"] || got["status"] != statusDeleting {
		t.Errorf("delete-target-group: %d %v, want its id, arn and %s", status, got, statusDeleting)
	}
	if status, code, _ := a.do("EAST", "GET", "/targetgroups/"+tgID, ""); status != http.StatusNotFound || code != "ResourceNotFoundException" {
		t.Errorf("get-target-group after delete: %d %s, want 404 ResourceNotFoundException", status, code)
	}
}
