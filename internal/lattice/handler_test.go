package lattice

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/teststore"
)

// testAPI is the Lattice API over a real server and store, and a signing
// client per owner.
type testAPI struct {
	t   *testing.T
	url string
	srv *server.Server
}

func newTestAPI(t *testing.T) *testAPI {
	st := teststore.Bolt(t)
	srv := server.New(st, server.Config{Tokens: map[string]string{"t": "east"}})
	h := New(Config{Server: srv, Credentials: map[string]Credential{
		"EAST": {Secret: "east-secret", Owner: "east"},
		"WEST": {Secret: "west-secret", Owner: "west"},
	}})
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return &testAPI{t: t, url: ts.URL, srv: srv}
}

// storedNetwork is the model's service network id as the store holds it.
func (a *testAPI) storedNetwork(id string) model.ServiceNetwork {
	a.t.Helper()
	kv, err := a.srv.Store().Get(a.t.Context(), model.Key(model.KindServiceNetwork, id))
	if err != nil {
		a.t.Fatal(err)
	}
	var n model.ServiceNetwork
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		a.t.Fatal(err)
	}
	return n
}

// do sends a request signed with key's secret and returns the status,
// the error type header and the decoded body.
func (a *testAPI) do(key, method, path, body string) (int, string, map[string]any) {
	a.t.Helper()
	r, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	stamp := time.Now().UTC().Format(amzDate)
	r.Header.Set("X-Amz-Date", stamp)
	r.Header.Set("Content-Type", "application/json")
	signed := []string{"content-type", "host", "x-amz-date"}
	creq := canonicalRequest(r, signed, sha256Hex(body))
	scope := stamp[:8] + "/eu-west-1/vpc-lattice/aws4_request"
	secret := map[string]string{"EAST": "east-secret", "WEST": "west-secret"}[key]
	sig := hmacSHA256(signingKey(secret, stamp[:8], "eu-west-1", "vpc-lattice"), "AWS4-HMAC-SHA256\n"+stamp+"\n"+scope+"\n"+sha256Hex(creq))
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+key+"/"+scope+", SignedHeaders="+strings.Join(signed, ";")+", Signature="+hex.EncodeToString(sig))
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &v); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), v
}

func TestOwnersAndIdempotency(t *testing.T) {
	a := newTestAPI(t)
	status, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net","clientToken":"tok-1"}`)
	if status != http.StatusCreated || !strings.HasPrefix(sn["id"].(string), "sn-") || len(sn["id"].(string)) != 20 {
		t.Fatalf("create: %d %v", status, sn)
	}
	if !strings.HasPrefix(sn["arn"].(string), "arn:aws:vpc-lattice:eu-west-1:"+accountID("east")+":servicenetwork/sn-") {
		t.Errorf("arn %v", sn["arn"])
	}
	// The same client token and request: the same network, nothing new.
	if _, _, again := a.do("EAST", "POST", "/servicenetworks", `{"name":"net","clientToken":"tok-1"}`); again["id"] != sn["id"] {
		t.Errorf("retry with the client token made %v, want %v", again["id"], sn["id"])
	}
	// The same token with other parameters: ConflictException.
	if status, code, _ := a.do("EAST", "POST", "/servicenetworks", `{"name":"other","clientToken":"tok-1"}`); status != 409 || code != "ConflictException" {
		t.Errorf("token reuse: %d %s", status, code)
	}
	// The model holds the network, owned by east.
	kv, err := a.srv.Store().Get(t.Context(), model.Key(model.KindServiceNetwork, sn["id"].(string)))
	if err != nil || !strings.Contains(string(kv.Value), `"owner":"east"`) {
		t.Fatalf("model network: %v %s", err, kv.Value)
	}
	// West lists it, but may not change or delete it.
	if _, _, l := a.do("WEST", "GET", "/servicenetworks", ""); len(l["items"].([]any)) != 1 {
		t.Errorf("west lists %v", l)
	}
	id := sn["id"].(string)
	for _, tc := range []struct{ method, path, body string }{
		{"PATCH", "/servicenetworks/" + id, `{"authType":"AWS_IAM"}`},
		{"DELETE", "/servicenetworks/" + id, ""},
		{"PUT", "/authpolicy/" + id, `{"policy":"{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"*\",\"Resource\":\"*\"}]}"}`},
	} {
		if status, code, _ := a.do("WEST", tc.method, tc.path, tc.body); status != 403 || code != "AccessDeniedException" {
			t.Errorf("west %s %s: %d %s", tc.method, tc.path, status, code)
		}
	}
	// An ARN names it as well as the ID.
	if status, _, got := a.do("EAST", "GET", "/servicenetworks/"+strings.ReplaceAll(sn["arn"].(string), "/", "%2F"), ""); status != 200 || got["id"] != id {
		t.Errorf("get by ARN: %d %v", status, got)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	a := newTestAPI(t)
	for _, tc := range []struct{ path, body, field string }{
		{"/servicenetworks", `{"name":"a--b"}`, "name"},
		{"/servicenetworks", `{"name":"ok-net","authType":"MAYBE"}`, "authType"},
		{"/services", `{"name":"svc-reserved"}`, "name"},
		{"/services", `{"name":"web","customDomainName":"Web..Example"}`, "customDomainName"},
		{"/services", `{"name":"web","certificateArn":"arn:aws:acm:us-east-1:123456789012:certificate/-x"}`, "certificateArn"},
		{"/services", `{"name":"web","certificateArn":"arn:aws:iam::123456789012:role/x"}`, "certificateArn"},
		{"/targetgroups", `{"name":"tg1","type":"LAMBDA"}`, "type"},
		{"/targetgroups", `{"name":"tg1","type":"IP","config":{"protocol":"HTTP","port":70000}}`, "config.port"},
		{"/targetgroups", `{"name":"tg1","type":"IP","config":{"protocol":"HTTP","healthCheck":{"healthCheckIntervalSeconds":1}}}`, "config.healthCheck"},
	} {
		status, code, body := a.do("EAST", "POST", tc.path, tc.body)
		if status != 400 || code != "ValidationException" {
			t.Errorf("%s %s: %d %s", tc.path, tc.body, status, code)
			continue
		}
		fl, _ := body["fieldList"].([]any)
		if len(fl) == 0 || fl[0].(map[string]any)["name"] != tc.field {
			t.Errorf("%s %s: fieldList %v, want %s", tc.path, tc.body, body["fieldList"], tc.field)
		}
	}
	if status, code, _ := a.do("EAST", "POST", "/servicenetworks", `{"name":"net","surprise":1}`); status != 400 || code != "ValidationException" {
		t.Errorf("unknown member: %d %s", status, code)
	}
}

func TestPagination(t *testing.T) {
	a := newTestAPI(t)
	want := map[string]bool{}
	for _, n := range []string{"aaa", "bbb", "ccc", "ddd", "eee"} {
		_, _, tg := a.do("EAST", "POST", "/targetgroups", `{"name":"`+n+`","type":"IP","config":{"protocol":"HTTP"}}`)
		want[tg["id"].(string)] = true
	}
	got := map[string]bool{}
	token, pages := "", 0
	for {
		path := "/targetgroups?maxResults=2"
		if token != "" {
			path += "&nextToken=" + token
		}
		status, _, page := a.do("EAST", "GET", path, "")
		if status != 200 {
			t.Fatalf("page: %d %v", status, page)
		}
		pages++
		for _, it := range page["items"].([]any) {
			got[it.(map[string]any)["id"].(string)] = true
		}
		next, _ := page["nextToken"].(string)
		if next == "" {
			break
		}
		token = next
	}
	if pages != 3 || len(got) != 5 {
		t.Errorf("%d pages, %d items, want 3 and 5", pages, len(got))
	}
	if status, code, _ := a.do("EAST", "GET", "/targetgroups?maxResults=101", ""); status != 400 || code != "ValidationException" {
		t.Errorf("maxResults=101: %d %s", status, code)
	}
}

func TestTags(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net","tags":{"a":"1"}}`)
	path := "/tags/" + strings.ReplaceAll(sn["arn"].(string), "/", "%2F")
	if status, _, _ := a.do("EAST", "POST", path, `{"tags":{"b":"2"}}`); status != 200 {
		t.Fatalf("tag-resource: %d", status)
	}
	if status, _, _ := a.do("EAST", "DELETE", path+"?tagKeys=a", ""); status != 200 {
		t.Fatalf("untag-resource: %d", status)
	}
	if _, _, got := a.do("EAST", "GET", path, ""); len(got["tags"].(map[string]any)) != 1 || got["tags"].(map[string]any)["b"] != "2" {
		t.Errorf("tags %v, want b=2 only", got["tags"])
	}
	if status, code, _ := a.do("WEST", "POST", path, `{"tags":{"c":"3"}}`); status != 403 || code != "AccessDeniedException" {
		t.Errorf("west tags east's network: %d %s", status, code)
	}
}

// An apply of the same owner (its file provider) leaves the objects the
// Lattice API made alone.
func TestApplyLeavesLatticeObjects(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net"}`)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/apply", strings.NewReader(`{"objects":{}}`))
	req.Header.Set("Authorization", "Bearer t")
	a.srv.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"deleted":0`) {
		t.Fatalf("apply: %d %s", rec.Code, rec.Body)
	}
	if _, err := a.srv.Store().Get(t.Context(), model.Key(model.KindServiceNetwork, sn["id"].(string))); err != nil {
		t.Fatalf("the apply deleted the Lattice network: %v", err)
	}
}

func TestClientTokensAreBounded(t *testing.T) {
	a := &account{Owner: "east"}
	body := []byte(`{}`)
	for i := range maxClientTokens + 1 {
		remember(a, "CreateService", fmt.Sprintf("tok-%d", i), body, "svc-1")
		time.Sleep(time.Microsecond)
	}
	if len(a.Tokens) != maxClientTokens {
		t.Fatalf("%d tokens remembered, want %d", len(a.Tokens), maxClientTokens)
	}
	if id, _ := idempotent(a, "CreateService", "tok-0", body); id != "" {
		t.Errorf("the oldest token is still remembered")
	}
	if id, _ := idempotent(a, "CreateService", fmt.Sprintf("tok-%d", maxClientTokens), body); id != "svc-1" {
		t.Errorf("the newest token is forgotten")
	}
}

// Concurrent changes of one owner's records all land: a change that lost
// the race for the records' revision is redone from a fresh read.
func TestConcurrentCreates(t *testing.T) {
	a := newTestAPI(t)
	const n = 16
	errs := make(chan string, n)
	for i := range n {
		go func() {
			status, code, body := a.do("EAST", "POST", "/targetgroups", fmt.Sprintf(`{"name":"tg%03d","type":"IP","config":{"protocol":"HTTP"}}`, i))
			if status != http.StatusCreated {
				errs <- fmt.Sprintf("tg%03d: %d %s %v", i, status, code, body)
				return
			}
			errs <- ""
		}()
	}
	for range n {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	if _, _, l := a.do("EAST", "GET", "/targetgroups", ""); len(l["items"].([]any)) != n {
		t.Errorf("%d target groups, want %d", len(l["items"].([]any)), n)
	}
	kvs, _, err := a.srv.Store().List(t.Context(), model.KindPrefix(model.KindTargetGroup))
	if err != nil || len(kvs) != n {
		t.Errorf("%d model target groups (%v), want %d", len(kvs), err, n)
	}
}

// TestOneOfMessages pins the enum checks' defaults and their messages,
// which the API returns.
func TestOneOfMessages(t *testing.T) {
	auth := ""
	if err := checkAuthType("authType", &auth); err != nil || auth != authNone {
		t.Fatalf("empty auth type: %v, %q", err, auth)
	}
	cfg := TargetGroupConfig{Protocol: "HTTP"}
	if err := checkConfig("IP", &cfg); err != nil || cfg.ProtocolVersion != "HTTP1" || cfg.IPAddressType != "IPV4" || *cfg.Port != 80 {
		t.Fatalf("defaults: %v, %+v", err, cfg)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{checkAuthType("authType", new("NOPE")), `must be NONE or AWS_IAM, not "NOPE"`},
		{checkConfig("IP", &TargetGroupConfig{}), "required for target groups of type IP"},
		{checkConfig("IP", &TargetGroupConfig{Protocol: "UDP"}), `must be HTTP, HTTPS or TCP, not "UDP"`},
		{checkConfig("IP", &TargetGroupConfig{Protocol: "TCP", ProtocolVersion: "HTTP3"}), `must be HTTP1, HTTP2 or GRPC, not "HTTP3"`},
		{checkConfig("IP", &TargetGroupConfig{Protocol: "TCP", IPAddressType: "V4"}), `must be IPV4 or IPV6, not "V4"`},
	} {
		var ae *apiError
		if !errors.As(tc.err, &ae) || ae.code != "ValidationException" || !strings.Contains(fmt.Sprint(ae.body), tc.want) {
			t.Errorf("got %v, want a ValidationException saying %s", tc.err, tc.want)
		}
	}
}

// TestRecordKeys pins the stored records' JSON members: meta and guarded
// are inlined, so records stored before they existed read the same.
func TestRecordKeys(t *testing.T) {
	keys := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return strings.Join(slices.Sorted(maps.Keys(m)), " ")
	}
	now := time.Now()
	m := meta{ID: "x", Name: "n", ARN: "a", Tags: map[string]string{"k": "v"}, CreatedAt: now, UpdatedAt: now}
	g := guarded{AuthType: authIAM, Policy: &policy{}}
	for _, tc := range []struct {
		rec  any
		want string
	}{
		{&network{meta: m, guarded: g, Region: "r"}, "arn authType createdAt id name policy region tags updatedAt"},
		{&service{meta: m, guarded: g, Region: "r", DNS: "d", Listeners: map[string]*listener{"l": {meta: m}}},
			"arn authType createdAt dns id listeners name policy region tags updatedAt"},
		{&listener{meta: m, Rules: map[string]*rule{"r": {meta: m}}}, "arn createdAt defaultAction id name port protocol rules tags updatedAt"},
		{&rule{meta: m}, "action arn createdAt id match name priority tags updatedAt"},
		{&targetGroup{meta: m, Targets: []Target{{ID: "1"}}}, "arn config createdAt id name tags targets type updatedAt"},
		{&association{meta: meta{ID: "x", ARN: "a", Tags: m.Tags, CreatedAt: now}}, "arn createdAt id networkId serviceId tags"},
	} {
		if got := keys(tc.rec); got != tc.want {
			t.Errorf("%T: members %q, want %q", tc.rec, got, tc.want)
		}
	}
}

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
