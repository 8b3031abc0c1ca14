package lattice

import (
	"encoding/json"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

func TestResourcePolicy(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net"}`)
	_, _, svc := a.do("EAST", "POST", "/services", `{"name":"inventory"}`)
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"vpc-lattice:CreateServiceNetworkVpcAssociation","Resource":"*"}]}`
	body, _ := json.Marshal(map[string]string{"policy": doc})
	for _, r := range []map[string]any{sn, svc} {
		path := "/resourcepolicy/" + strings.ReplaceAll(r["arn"].(string), "/", "%2F")
		if status, code, _ := a.do("EAST", "GET", path, ""); status != 404 || code != "ResourceNotFoundException" {
			t.Errorf("get before put: %d %s", status, code)
		}
		if status, code, _ := a.do("WEST", "PUT", path, string(body)); status != 403 || code != "AccessDeniedException" {
			t.Errorf("west puts on east's %s: %d %s", r["id"], status, code)
		}
		if status, _, out := a.do("EAST", "PUT", path, string(body)); status != 200 || len(out) != 0 {
			t.Fatalf("put: %d %v", status, out)
		}
		// Stored as sent, readable by ID too.
		if status, _, got := a.do("EAST", "GET", "/resourcepolicy/"+r["id"].(string), ""); status != 200 || got["policy"] != doc {
			t.Errorf("get: %d %v", status, got)
		}
		if status, code, _ := a.do("WEST", "DELETE", path, ""); status != 403 || code != "AccessDeniedException" {
			t.Errorf("west deletes: %d %s", status, code)
		}
		if status, _, _ := a.do("EAST", "DELETE", path, ""); status != 204 {
			t.Errorf("delete: %d", status)
		}
		if status, code, _ := a.do("EAST", "GET", path, ""); status != 404 || code != "ResourceNotFoundException" {
			t.Errorf("get after delete: %d %s", status, code)
		}
	}
	if status, code, _ := a.do("EAST", "PUT", "/resourcepolicy/sn-00000000000000000", string(body)); status != 404 || code != "ResourceNotFoundException" {
		t.Errorf("unknown resource: %d %s", status, code)
	}
	id := sn["id"].(string)
	for _, tc := range []struct{ policy, field string }{
		{"", "policy"},
		{"  ", "policy"},
		{"[1]", "policy"},
		{"{", "policy"},
		{`{"Version":"2012-10-17"}`, "policy.Statement"},
		{`{"Statement":[]}`, "policy.Statement"},
		{`{"Statement":{"Effect":"Maybe"}}`, "policy.Statement.Effect"},
		{`{"Statement":[{"Effect":"Allow"},{"Action":"*"}]}`, "policy.Statement[1].Effect"},
		{`{"Statement":{"Effect":"Allow","Sid":"` + strings.Repeat("x", maxResourcePolicyChars) + `"}}`, "policy"},
	} {
		body, _ := json.Marshal(map[string]string{"policy": tc.policy})
		status, code, out := a.do("EAST", "PUT", "/resourcepolicy/"+id, string(body))
		fl, _ := out["fieldList"].([]any)
		if status != 400 || code != "ValidationException" || len(fl) == 0 || fl[0].(map[string]any)["name"] != tc.field {
			t.Errorf("policy %.40q: %d %s %v, want the field %s", tc.policy, status, code, out["fieldList"], tc.field)
		}
	}
	// The policy changes nothing in the model: it is not enforced.
	before, err := a.srv.Store().Get(t.Context(), model.Key(model.KindServiceNetwork, id))
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := a.do("EAST", "PUT", "/resourcepolicy/"+id, string(body)); status != 200 {
		t.Fatalf("put: %d", status)
	}
	after, err := a.srv.Store().Get(t.Context(), model.Key(model.KindServiceNetwork, id))
	if err != nil || string(after.Value) != string(before.Value) {
		t.Errorf("a resource policy changed the model network: %v\n%s\n%s", err, before.Value, after.Value)
	}
}
