package lattice

import (
	"encoding/json"
	"fmt"
	"testing"
)

// listenerWithRules makes a service, a target group, a listener and one
// rule per priority; it returns the rules path and the rule IDs.
func listenerWithRules(t *testing.T, a *testAPI, priorities ...int) (string, []string) {
	t.Helper()
	_, _, svc := a.do("EAST", "POST", "/services", `{"name":"inventory"}`)
	_, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"ver1","type":"IP","config":{"protocol":"HTTP","port":80}}`)
	status, _, l := a.do("EAST", "POST", "/services/"+svc["id"].(string)+"/listeners",
		fmt.Sprintf(`{"name":"http","protocol":"HTTP","port":8080,"defaultAction":{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}}`, tg["id"]))
	if status != 201 && status != 200 {
		t.Fatalf("create-listener: %d %v", status, l)
	}
	path := "/services/" + svc["id"].(string) + "/listeners/" + l["id"].(string) + "/rules"
	var ids []string
	for i, p := range priorities {
		status, _, r := a.do("EAST", "POST", path, fmt.Sprintf(`{"name":"rul%d","priority":%d,"match":{"httpMatch":{"method":"GET"}},"action":{"fixedResponse":{"statusCode":404}}}`, i, p))
		if status != 201 && status != 200 {
			t.Fatalf("create-rule: %d %v", status, r)
		}
		ids = append(ids, r["id"].(string))
	}
	return path, ids
}

func TestBatchUpdateRule(t *testing.T) {
	a := newTestAPI(t)
	path, ids := listenerWithRules(t, a, 10, 20, 30)
	priority := func(id string) any {
		_, _, r := a.do("EAST", "GET", path+"/"+id, "")
		return r["priority"]
	}
	// A swap of two priorities succeeds; a bad match, an unknown rule and
	// a collision with a rule the batch leaves alone each fail alone.
	body, _ := json.Marshal(map[string]any{"rules": []map[string]any{
		{"ruleIdentifier": ids[0], "priority": 20},
		{"ruleIdentifier": ids[1], "priority": 10, "action": map[string]any{"fixedResponse": map[string]any{"statusCode": 500}}},
		{"ruleIdentifier": ids[2], "match": map[string]any{"httpMatch": map[string]any{"method": "get"}}},
		{"ruleIdentifier": "rule-00000000000000000", "priority": 50},
	}})
	status, _, out := a.do("EAST", "PATCH", path, string(body))
	if status != 200 {
		t.Fatalf("batch: %d %v", status, out)
	}
	ok, _ := out["successful"].([]any)
	bad, _ := out["unsuccessful"].([]any)
	if len(ok) != 2 || len(bad) != 2 {
		t.Fatalf("successful %v, unsuccessful %v; want 2 and 2", ok, bad)
	}
	codes := map[string]string{}
	for _, f := range bad {
		m := f.(map[string]any)
		codes[m["ruleIdentifier"].(string)] = m["failureCode"].(string)
	}
	if codes[ids[2]] != "ValidationException" || codes["rule-00000000000000000"] != "ResourceNotFoundException" {
		t.Errorf("failures %v", bad)
	}
	if priority(ids[0]) != 20.0 || priority(ids[1]) != 10.0 || priority(ids[2]) != 30.0 {
		t.Errorf("priorities %v %v %v, want 20 10 30", priority(ids[0]), priority(ids[1]), priority(ids[2]))
	}
	// Moving a rule onto a priority another keeps: ConflictException for
	// it, and its other members are not applied either.
	body, _ = json.Marshal(map[string]any{"rules": []map[string]any{
		{"ruleIdentifier": ids[0], "priority": 30, "action": map[string]any{"fixedResponse": map[string]any{"statusCode": 500}}},
		{"ruleIdentifier": ids[0], "priority": 40},
	}})
	_, _, out = a.do("EAST", "PATCH", path, string(body))
	bad, _ = out["unsuccessful"].([]any)
	if len(bad) != 2 || bad[0].(map[string]any)["failureCode"] != "ConflictException" || bad[1].(map[string]any)["failureCode"] != "ConflictException" {
		t.Errorf("collision and duplicate: %v", out)
	}
	_, _, r := a.do("EAST", "GET", path+"/"+ids[0], "")
	if r["priority"] != 20.0 || r["action"].(map[string]any)["fixedResponse"].(map[string]any)["statusCode"] != 404.0 {
		t.Errorf("a failed update changed the rule: %v", r)
	}
	// Whole-request errors.
	for _, tc := range []struct {
		key, body, code string
		status          int
	}{
		{"EAST", `{"rules":[]}`, "ValidationException", 400},
		{"EAST", `{"rules":[{"priority":5}]}`, "ValidationException", 400},
		{"EAST", `{"rules":[{"ruleIdentifier":"` + ids[0] + `","surprise":1}]}`, "ValidationException", 400},
		{"WEST", `{"rules":[{"ruleIdentifier":"` + ids[0] + `","priority":5}]}`, "AccessDeniedException", 403},
	} {
		if status, code, _ := a.do(tc.key, "PATCH", path, tc.body); status != tc.status || code != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.key, tc.body, status, code, tc.status, tc.code)
		}
	}
	if priority(ids[0]) != 20.0 {
		t.Errorf("a refused batch changed a priority")
	}
}
