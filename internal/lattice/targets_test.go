package lattice

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
)

// ListTargets gives each target Lattice's status: UNUSED for a group no
// listener uses, UNAVAILABLE while checks are off or nothing reported,
// what the owner's proxies report of their checks otherwise, and DRAINING
// for a deregistered target; UpdateTargetGroup turning checks off makes
// them UNAVAILABLE.
func TestListTargetsHealth(t *testing.T) {
	a := newTestAPI(t)
	_, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"web","type":"IP","config":{"protocol":"HTTP","port":80}}`)
	tgID := tg["id"].(string)
	a.do("EAST", "POST", "/targetgroups/"+tgID+"/registertargets",
		`{"targets":[{"id":"10.0.0.1"},{"id":"10.0.0.2"},{"id":"10.0.0.3"},{"id":"10.0.0.4","port":8080}]}`)
	statuses := func() map[string]string {
		t.Helper()
		status, _, l := a.do("EAST", "POST", "/targetgroups/"+tgID+"/listtargets", "")
		if status != 200 {
			t.Fatalf("list-targets: %d %v", status, l)
		}
		out := map[string]string{}
		for _, it := range l["items"].([]any) {
			m := it.(map[string]any)
			out[fmt.Sprintf("%s:%v", m["id"], m["port"])] = fmt.Sprint(m["status"], "/", m["reasonCode"])
		}
		return out
	}
	if got := statuses(); got["10.0.0.1:80"] != "UNUSED/TargetGroupNotInUse" || len(got) != 4 {
		t.Errorf("targets of an unused group: %v", got)
	}
	_, _, svc := a.do("EAST", "POST", "/services", `{"name":"web"}`)
	a.do("EAST", "POST", "/services/"+svc["id"].(string)+"/listeners",
		fmt.Sprintf(`{"name":"http","protocol":"HTTP","port":80,"defaultAction":{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}}`, tgID))
	if got := statuses(); got["10.0.0.1:80"] != "UNAVAILABLE/HealthStatusNotReported" {
		t.Errorf("before any report: %v", got)
	}

	ts := httptest.NewServer(a.srv)
	defer ts.Close()
	cl, err := client.New(ts.URL, "t", client.Options{}) // token t is cluster east
	if err != nil {
		t.Fatal(err)
	}
	report := func(holder string, targets ...string) {
		t.Helper()
		g := api.GroupHealth{TargetGroup: tgID}
		for i := 0; i < len(targets); i += 2 {
			g.Targets = append(g.Targets, api.TargetHealth{Address: targets[i], Status: targets[i+1]})
		}
		if err := cl.ReportHealth(t.Context(), api.HealthReport{Holder: holder, Groups: []api.GroupHealth{g}}); err != nil {
			t.Fatal(err)
		}
	}
	report("proxy-a", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "UNHEALTHY", "10.0.0.3:80", "INITIAL")
	report("proxy-b", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "UNHEALTHY", "10.0.0.3:80", "INITIAL")
	a.do("EAST", "POST", "/targetgroups/"+tgID+"/deregistertargets", `{"targets":[{"id":"10.0.0.4","port":8080}]}`)
	want := map[string]string{
		"10.0.0.1:80":   "HEALTHY/<nil>",
		"10.0.0.2:80":   "UNHEALTHY/HealthCheckFailed",
		"10.0.0.3:80":   "INITIAL/HealthCheckInProgress",
		"10.0.0.4:8080": "DRAINING/TargetDeregistrationInProgress",
	}
	if got := statuses(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with reports: %v, want %v", got, want)
	}
	// West sees the same: health is the target group owner's proxies'.
	if status, _, l := a.do("WEST", "POST", "/targetgroups/"+tgID+"/listtargets", `{"targets":[{"id":"10.0.0.2"}]}`); status != 200 ||
		len(l["items"].([]any)) != 1 || l["items"].([]any)[0].(map[string]any)["status"] != "UNHEALTHY" {
		t.Errorf("west's list-targets with a filter: %d %v", status, l)
	}
	// A draining target leaves the model's active targets at once.
	if n := activeTargets(t, a, tgID); n != 3 {
		t.Errorf("%d active model targets, want 3", n)
	}
	// Checks off: UNAVAILABLE, whatever was reported.
	if status, _, u := a.do("EAST", "PATCH", "/targetgroups/"+tgID, `{"healthCheck":{"enabled":false}}`); status != 200 {
		t.Fatalf("update-target-group: %d %v", status, u)
	}
	if got := statuses(); got["10.0.0.2:80"] != "UNAVAILABLE/HealthCheckDisabled" {
		t.Errorf("checks off: %v", got)
	}
	// Registered again, a draining target is active again.
	a.do("EAST", "POST", "/targetgroups/"+tgID+"/registertargets", `{"targets":[{"id":"10.0.0.4","port":8080}]}`)
	if got := statuses(); got["10.0.0.4:8080"] != "UNAVAILABLE/HealthCheckDisabled" || len(got) != 4 {
		t.Errorf("registered again: %v", got)
	}
}

// activeTargets counts the Active targets of the model's target group id.
func activeTargets(t *testing.T, a *testAPI, id string) int {
	t.Helper()
	kv, err := a.srv.Store().Get(t.Context(), model.Key(model.KindTargetGroup, id))
	if err != nil {
		t.Fatal(err)
	}
	var tg model.TargetGroup
	if err := json.Unmarshal(kv.Value, &tg); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tt := range tg.Targets {
		if tt.State == model.TargetActive {
			n++
		}
	}
	return n
}

// A path match with caseSensitive false matches in any case, a prefix
// still by whole segments.
func TestCaseInsensitivePath(t *testing.T) {
	for _, tc := range []struct {
		m       PathMatchType
		yes, no []string
	}{
		{PathMatchType{Exact: "/Api/v1"}, []string{"/api/V1", "/API/V1"}, []string{"/api/v1/x", "/api"}},
		{PathMatchType{Prefix: "/api/"}, []string{"/API", "/Api/x/y"}, []string{"/apix", "/v1/api"}},
		{PathMatchType{Prefix: "/"}, []string{"/", "/anything"}, nil},
	} {
		re := regexp.MustCompile(`^(?:` + caseInsensitivePath(tc.m) + `)$`)
		for _, p := range tc.yes {
			if !re.MatchString(p) {
				t.Errorf("%+v does not match %s", tc.m, p)
			}
		}
		for _, p := range tc.no {
			if re.MatchString(p) {
				t.Errorf("%+v matches %s", tc.m, p)
			}
		}
	}
}

// An INSTANCE target group takes no address type, and its targets are the
// instances' IP addresses in the caller's cluster, of either family; an
// EC2 instance ID cannot be resolved here and is refused by name.
func TestInstanceTargetGroup(t *testing.T) {
	a := newTestAPI(t)
	if status, code, body := a.do("EAST", "POST", "/targetgroups", `{"name":"vms","type":"INSTANCE","config":{"protocol":"HTTP","port":8080,"ipAddressType":"IPV4"}}`); status != 400 || code != "ValidationException" || !strings.Contains(fmt.Sprint(body), "config.ipAddressType") {
		t.Errorf("INSTANCE with an address type: %d %s %v, want ValidationException naming config.ipAddressType", status, code, body)
	}
	status, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"vms","type":"INSTANCE","config":{"protocol":"HTTP","port":8080}}`)
	if status != 201 || tg["type"] != "INSTANCE" {
		t.Fatalf("create INSTANCE: %d %v", status, tg)
	}
	if cfg := tg["config"].(map[string]any); cfg["ipAddressType"] != nil || cfg["port"] != 8080.0 {
		t.Errorf("INSTANCE config: %v, want port 8080 and no address type", cfg)
	}
	id := tg["id"].(string)
	status, _, out := a.do("EAST", "POST", "/targetgroups/"+id+"/registertargets",
		`{"targets":[{"id":"10.0.0.7"},{"id":"fd00::7","port":9090},{"id":"i-0123456789abcdef0"}]}`)
	if status != 200 {
		t.Fatalf("register-targets: %d %v", status, out)
	}
	ok, bad := out["successful"].([]any), out["unsuccessful"].([]any)
	if len(ok) != 2 || len(bad) != 1 || bad[0].(map[string]any)["failureCode"] != "InvalidTargetId" ||
		!strings.Contains(bad[0].(map[string]any)["failureMessage"].(string), "EC2 instance ID") {
		t.Errorf("register-targets: successful %v, unsuccessful %v; want both addresses in and the instance ID refused", ok, bad)
	}
	status, _, l := a.do("EAST", "POST", "/targetgroups/"+id+"/listtargets", "")
	if status != 200 || len(l["items"].([]any)) != 2 {
		t.Errorf("list-targets: %d %v, want the two addresses", status, l)
	}
	if status, _, g := a.do("EAST", "GET", "/targetgroups/"+id, ""); status != 200 || g["type"] != "INSTANCE" {
		t.Errorf("get: %d %v", status, g)
	}
}

// A proxy's report in parts reaches ListTargets whichever part holds the
// target group.
func TestListTargetsHealthInParts(t *testing.T) {
	a := newTestAPI(t)
	_, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"web","type":"IP","config":{"protocol":"HTTP","port":80}}`)
	tgID := tg["id"].(string)
	a.do("EAST", "POST", "/targetgroups/"+tgID+"/registertargets", `{"targets":[{"id":"10.0.0.1"}]}`)
	_, _, svc := a.do("EAST", "POST", "/services", `{"name":"web"}`)
	a.do("EAST", "POST", "/services/"+svc["id"].(string)+"/listeners",
		fmt.Sprintf(`{"name":"http","protocol":"HTTP","port":80,"defaultAction":{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}}`, tgID))
	ts := httptest.NewServer(a.srv)
	defer ts.Close()
	cl, err := client.New(ts.URL, "t", client.Options{}) // token t is cluster east
	if err != nil {
		t.Fatal(err)
	}
	other := make([]api.GroupHealth, api.MaxHealthGroups)
	for i := range other {
		other[i] = api.GroupHealth{TargetGroup: fmt.Sprintf("other-%04d", i), Targets: []api.TargetHealth{{Address: "10.1.0.1:80", Status: "HEALTHY"}}}
	}
	for i, groups := range [][]api.GroupHealth{other, {{TargetGroup: tgID, Targets: []api.TargetHealth{{Address: "10.0.0.1:80", Status: "UNHEALTHY"}}}}} {
		if err := cl.ReportHealth(t.Context(), api.HealthReport{Holder: "proxy-a", Part: i, Parts: 2, Groups: groups}); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	status, _, l := a.do("EAST", "POST", "/targetgroups/"+tgID+"/listtargets", "")
	if status != 200 || len(l["items"].([]any)) != 1 || l["items"].([]any)[0].(map[string]any)["status"] != "UNHEALTHY" {
		t.Errorf("list-targets with the group in part 1 of 2: %d %v", status, l)
	}
}

// Header matches of each kind: exact, prefix and contains, in any case
// unless caseSensitive is true, always against the whole value as the
// model's expressions are matched.
func TestHeaderMatchKinds(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		m        HeaderMatch
		hit, not []string
	}{
		{HeaderMatch{Match: HeaderMatchType{Exact: "beta"}}, []string{"beta", "BETA"}, []string{"betas", "a beta"}},
		{HeaderMatch{Match: HeaderMatchType{Exact: "beta"}, CaseSensitive: &yes}, []string{"beta"}, []string{"BETA"}},
		{HeaderMatch{Match: HeaderMatchType{Prefix: "rc-"}, CaseSensitive: &yes}, []string{"rc-", "rc-7"}, []string{"RC-7", "xrc-7", "rc"}},
		{HeaderMatch{Match: HeaderMatchType{Prefix: "a.b"}, CaseSensitive: &no}, []string{"A.B", "a.bc"}, []string{"axb"}},
		{HeaderMatch{Match: HeaderMatchType{Contains: "blocked"}}, []string{"blocked", "is-BLOCKED-now", "x\nblocked"}, []string{"block", "b-locked"}},
		{HeaderMatch{Match: HeaderMatchType{Contains: "(x)"}, CaseSensitive: &yes}, []string{"a(x)b"}, []string{"a(X)b", "x"}},
	} {
		vm := headerMatch(tc.m)
		var matches func(string) bool
		switch vm.Type {
		case model.ValueExact:
			matches = func(s string) bool { return s == vm.Value }
		default:
			re := regexp.MustCompile(`^(?:` + vm.Value + `)$`)
			matches = re.MatchString
		}
		for _, v := range tc.hit {
			if !matches(v) {
				t.Errorf("%+v (%q) does not match %q", tc.m, vm.Value, v)
			}
		}
		for _, v := range tc.not {
			if matches(v) {
				t.Errorf("%+v (%q) matches %q", tc.m, vm.Value, v)
			}
		}
	}
	for _, tc := range []struct {
		m    HeaderMatchType
		want string
	}{
		{HeaderMatchType{}, "headerMatches[0].match: exactly one of exact, prefix and contains"},
		{HeaderMatchType{Prefix: "a", Contains: "b"}, "headerMatches[0].match: exactly one of exact, prefix and contains"},
		{HeaderMatchType{Contains: strings.Repeat("x", 201)}, "headerMatches[0].match.contains: must be 1-200 characters"},
	} {
		err := checkMatch("match", &RuleMatch{HTTPMatch: &HTTPMatch{HeaderMatches: []HeaderMatch{{Name: "x-a", Match: tc.m}}}})
		var ae *apiError
		if !errors.As(err, &ae) || ae.code != "ValidationException" || !strings.Contains(fmt.Sprint(ae.body), tc.want) {
			t.Errorf("%+v: got %v, want a ValidationException saying %s", tc.m, err, tc.want)
		}
	}
}
