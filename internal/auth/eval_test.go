package auth

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

const (
	testService = "inventory-default.my-hotel"
	testWorker  = "spiffe://east/ns/shop/sa/web"
)

// testRequest is an anonymous Invoke of GET /api/items on port 443, with
// headers and query parameters, from 10.1.2.3 in the cluster "east". Each
// edit then changes it.
func testRequest(edits ...func(*Request)) *Request {
	h := http.Header{
		"X-Tenant": {"acme"},
		"X-Tag":    {"a", "b"},
		"X-Debug":  {"TRUE"},
		"X-Empty":  {""},
	}
	q := map[string][]string{"tag": {"x", "y"}, "page": {"2"}}
	r := &Request{
		Action:        ActionInvoke,
		Principal:     Principal{Type: PrincipalAnonymous},
		Network:       "my-hotel",
		Service:       testService,
		Port:          443,
		Method:        "GET",
		Path:          "/api/items",
		Header:        h.Values,
		Query:         func(key string) []string { return q[key] },
		SourceIP:      netip.MustParseAddr("10.1.2.3"),
		SourceCluster: "east",
	}
	for _, e := range edits {
		e(r)
	}
	return r
}

// Request edits.
var (
	asWorkload = func(r *Request) { r.Principal = Principal{Type: PrincipalWorkload, ID: testWorker} }
	asConnect  = func(r *Request) { r.Action, r.Method, r.Path = ActionConnect, "", "" }
	noHeaders  = func(r *Request) { r.Header, r.Query = nil, nil }
	withPath   = func(p string) func(*Request) { return func(r *Request) { r.Path = p } }
	withMethod = func(m string) func(*Request) { return func(r *Request) { r.Method = m } }
	withPort   = func(p int) func(*Request) { return func(r *Request) { r.Port = p } }
	withIP     = func(ip string) func(*Request) {
		return func(r *Request) {
			r.SourceIP = netip.Addr{}
			if ip != "" {
				r.SourceIP = netip.MustParseAddr(ip)
			}
		}
	}
	withHeader = func(name string, values ...string) func(*Request) {
		return func(r *Request) {
			h := http.Header{}
			for _, v := range values {
				h.Add(name, v)
			}
			r.Header = h.Values
		}
	}
	withQuery = func(key string, values ...string) func(*Request) {
		return func(r *Request) { r.Query = func(k string) []string { return map[string][]string{key: values}[k] } }
	}
)

// statements is a document of the given statements.
func statements(stmts ...string) string {
	return `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
}

// stmt is a statement; principal, action and resource are JSON values.
func stmt(effect, principal, action, resource string) string {
	return `{"Effect":"` + effect + `","Principal":` + principal + `,"Action":` + action + `,"Resource":` + resource + `}`
}

type evalCase struct {
	name   string
	doc    string
	edits  []func(*Request)
	want   Decision
	wantAt int
}

// runEval runs cases of documents and requests.
func runEval(t *testing.T, tests []evalCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.doc)
			got, at := p.Evaluate(testRequest(tt.edits...))
			if got != tt.want || at != tt.wantAt {
				t.Errorf("Evaluate = %v, %d; want %v, %d", got, at, tt.want, tt.wantAt)
			}
		})
	}
}

func TestEvaluateStatements(t *testing.T) {
	allowAll := stmt("Allow", `"*"`, `"*"`, `"*"`)
	denyAll := stmt("Deny", `"*"`, `"*"`, `"*"`)
	runEval(t, []evalCase{
		{"allow applies", statements(allowAll), nil, Allow, 0},
		{"single statement object", `{"Statement":` + allowAll + `}`, nil, Allow, 0},
		{"deny wins over an earlier allow", statements(allowAll, denyAll), nil, ExplicitDeny, 1},
		{"deny wins over a later allow", statements(denyAll, allowAll), nil, ExplicitDeny, 0},
		{"first applying allow reported", statements(stmt("Allow", `"*"`, `"*"`, `"other"`), allowAll, allowAll), nil, Allow, 1},
		{"first applying deny reported", statements(allowAll, stmt("Deny", `"*"`, `"*"`, `"other"`), denyAll, denyAll), nil, ExplicitDeny, 2},
		{"deny that does not apply", statements(stmt("Deny", `"*"`, `"*"`, `"other"`), allowAll), nil, Allow, 1},
		{"nothing applies", statements(stmt("Allow", `"*"`, `"*"`, `"other"`)), nil, ImplicitDeny, -1},
		{"deny alone that does not apply", statements(stmt("Deny", `"*"`, `"*"`, `"other"`)), nil, ImplicitDeny, -1},
	})
}

func TestEvaluatePrincipals(t *testing.T) {
	allow := func(principal string) string { return statements(stmt("Allow", principal, `"*"`, `"*"`)) }
	deny := func(principal string) string {
		return statements(stmt("Allow", `"*"`, `"*"`, `"*"`), stmt("Deny", principal, `"*"`, `"*"`))
	}
	runEval(t, []evalCase{
		{"star allows anonymous", allow(`"*"`), nil, Allow, 0},
		{"star allows a workload", allow(`"*"`), []func(*Request){asWorkload}, Allow, 0},
		{"Trellis star does not match anonymous", allow(`{"Trellis":"*"}`), nil, ImplicitDeny, -1},
		{"Trellis star matches a workload", allow(`{"Trellis":"*"}`), []func(*Request){asWorkload}, Allow, 0},
		{"Trellis glob matches", allow(`{"Trellis":"spiffe://east/ns/shop/*"}`), []func(*Request){asWorkload}, Allow, 0},
		{"Trellis glob does not match", allow(`{"Trellis":"spiffe://east/ns/admin/*"}`), []func(*Request){asWorkload}, ImplicitDeny, -1},
		{"Trellis list", allow(`{"Trellis":["x","spiffe://east/ns/shop/sa/we?"]}`), []func(*Request){asWorkload}, Allow, 0},
		{"Trellis is case-sensitive", allow(`{"Trellis":"SPIFFE://east/*"}`), []func(*Request){asWorkload}, ImplicitDeny, -1},
		{"workload without ID is anonymous", allow(`{"Trellis":"*"}`), []func(*Request){func(r *Request) { r.Principal = Principal{Type: PrincipalWorkload} }}, ImplicitDeny, -1},
		{"anonymous type with ID is anonymous", allow(`{"Trellis":"*"}`), []func(*Request){func(r *Request) { r.Principal = Principal{Type: PrincipalAnonymous, ID: "x"} }}, ImplicitDeny, -1},
		{"Trellis deny does not touch anonymous", deny(`{"Trellis":"*"}`), nil, Allow, 0},
		{"Trellis deny matches the workload", deny(`{"Trellis":"spiffe://east/*"}`), []func(*Request){asWorkload}, ExplicitDeny, 1},
		{"star deny matches anonymous", deny(`"*"`), nil, ExplicitDeny, 1},
	})
}

func TestEvaluateActions(t *testing.T) {
	allow := func(action string) string { return statements(stmt("Allow", `"*"`, action, `"*"`)) }
	connect := []func(*Request){asConnect}
	runEval(t, []evalCase{
		{"Invoke allows Invoke", allow(`"trellis:Invoke"`), nil, Allow, 0},
		{"Invoke does not allow Connect", allow(`"trellis:Invoke"`), connect, ImplicitDeny, -1},
		{"Connect allows Connect", allow(`"trellis:Connect"`), connect, Allow, 0},
		{"Connect does not allow Invoke", allow(`"trellis:Connect"`), nil, ImplicitDeny, -1},
		{"trellis:* allows Invoke", allow(`"trellis:*"`), nil, Allow, 0},
		{"trellis:* allows Connect", allow(`"trellis:*"`), connect, Allow, 0},
		{"* allows Connect", allow(`"*"`), connect, Allow, 0},
		{"list", allow(`["trellis:Connect","trellis:Invoke"]`), nil, Allow, 0},
		{"Lattice Invoke", allow(`"vpc-lattice-svcs:Invoke"`), nil, Allow, 0},
		{"Lattice Invoke does not allow Connect", allow(`"vpc-lattice-svcs:Invoke"`), connect, ImplicitDeny, -1},
		{"Lattice Connect", allow(`"vpc-lattice-svcs:Connect"`), connect, Allow, 0},
		{"Lattice star", allow(`"vpc-lattice-svcs:*"`), connect, Allow, 0},
		{"action names ignore case", allow(`"Trellis:INVOKE"`), nil, Allow, 0},
		{"unknown request action matches nothing", allow(`"*"`), []func(*Request){func(r *Request) { r.Action = "trellis:Delete" }}, ImplicitDeny, -1},
		{"empty request action matches nothing", allow(`"*"`), []func(*Request){func(r *Request) { r.Action = "" }}, ImplicitDeny, -1},
	})
}

func TestEvaluateResources(t *testing.T) {
	allow := func(resource string) string { return statements(stmt("Allow", `"*"`, `"*"`, resource)) }
	grpc := withPath("/pkg.Inventory/List")
	runEval(t, []evalCase{
		{"star", allow(`"*"`), nil, Allow, 0},
		{"exact service and path", allow(`"inventory-default.my-hotel/api/items"`), nil, Allow, 0},
		{"exact, other path", allow(`"inventory-default.my-hotel/api/item"`), nil, ImplicitDeny, -1},
		{"exact, longer pattern", allow(`"inventory-default.my-hotel/api/items/"`), nil, ImplicitDeny, -1},
		{"bare service does not match an Invoke", allow(`"inventory-default.my-hotel"`), nil, ImplicitDeny, -1},
		{"service with any path", allow(`"inventory-default.my-hotel/*"`), nil, Allow, 0},
		{"path prefix", allow(`"inventory-default.my-hotel/api/*"`), nil, Allow, 0},
		{"prefix inside the service name", allow(`"inventory-*"`), nil, Allow, 0},
		{"other path prefix", allow(`"inventory-default.my-hotel/admin/*"`), nil, ImplicitDeny, -1},
		{"star in the middle", allow(`"*.my-hotel/api/*"`), nil, Allow, 0},
		{"star spans slashes", allow(`"inventory-*/items"`), nil, Allow, 0},
		{"question mark", allow(`"inventory-default.my-hotel/ap?/items"`), nil, Allow, 0},
		{"question mark needs a character", allow(`"inventory-default.my-hotel/api/items?"`), nil, ImplicitDeny, -1},
		{"case-sensitive", allow(`"Inventory-default.my-hotel/*"`), nil, ImplicitDeny, -1},
		{"list", allow(`["other/*","*/api/items"]`), nil, Allow, 0},
		{"gRPC service", allow(`"inventory-default.my-hotel/pkg.Inventory/*"`), []func(*Request){grpc}, Allow, 0},
		{"gRPC method", allow(`"inventory-default.my-hotel/pkg.Inventory/List"`), []func(*Request){grpc}, Allow, 0},
		{"gRPC other service", allow(`"inventory-default.my-hotel/pkg.Billing/*"`), []func(*Request){grpc}, ImplicitDeny, -1},
		{"Connect matches the bare service", allow(`"inventory-default.my-hotel"`), []func(*Request){asConnect}, Allow, 0},
		{"Connect ignores a stale path", allow(`"inventory-default.my-hotel"`), []func(*Request){asConnect, withPath("/x")}, Allow, 0},
		{"Connect does not match a path pattern", allow(`"inventory-default.my-hotel/*"`), []func(*Request){asConnect}, ImplicitDeny, -1},
	})
}

func TestEvaluateStringConditions(t *testing.T) {
	runEval(t, []evalCase{
		{"StringEquals", allowIf(`{"StringEquals":{"trellis:RequestMethod":"GET"}}`), nil, Allow, 0},
		{"StringEquals other", allowIf(`{"StringEquals":{"trellis:RequestMethod":"POST"}}`), nil, ImplicitDeny, -1},
		{"StringEquals is case-sensitive", allowIf(`{"StringEquals":{"trellis:RequestMethod":"get"}}`), nil, ImplicitDeny, -1},
		{"StringEquals values OR", allowIf(`{"StringEquals":{"trellis:RequestMethod":["POST","GET"]}}`), nil, Allow, 0},
		{"StringEquals missing key", allowIf(`{"StringEquals":{"trellis:RequestMethod":"GET"}}`), []func(*Request){withMethod("")}, ImplicitDeny, -1},
		{"StringNotEquals", allowIf(`{"StringNotEquals":{"trellis:RequestMethod":["POST","PUT"]}}`), nil, Allow, 0},
		{"StringNotEquals listed", allowIf(`{"StringNotEquals":{"trellis:RequestMethod":["POST","GET"]}}`), nil, ImplicitDeny, -1},
		{"StringNotEquals missing key", allowIf(`{"StringNotEquals":{"trellis:RequestMethod":"GET"}}`), []func(*Request){asConnect}, Allow, 0},
		{"StringEqualsIgnoreCase", allowIf(`{"StringEqualsIgnoreCase":{"trellis:RequestMethod":"get"}}`), nil, Allow, 0},
		{"StringEqualsIgnoreCase other", allowIf(`{"StringEqualsIgnoreCase":{"trellis:RequestMethod":"post"}}`), nil, ImplicitDeny, -1},
		{"StringNotEqualsIgnoreCase", allowIf(`{"StringNotEqualsIgnoreCase":{"trellis:RequestMethod":"get"}}`), nil, ImplicitDeny, -1},
		{"StringNotEqualsIgnoreCase other", allowIf(`{"StringNotEqualsIgnoreCase":{"trellis:RequestMethod":"post"}}`), nil, Allow, 0},
		{"StringNotEqualsIgnoreCase missing key", allowIf(`{"StringNotEqualsIgnoreCase":{"trellis:RequestMethod":"get"}}`), []func(*Request){withMethod("")}, Allow, 0},
		{"StringLike", allowIf(`{"StringLike":{"trellis:RequestPath":"/api/*"}}`), nil, Allow, 0},
		{"StringLike is case-sensitive", allowIf(`{"StringLike":{"trellis:RequestPath":"/API/*"}}`), nil, ImplicitDeny, -1},
		{"StringLike question mark", allowIf(`{"StringLike":{"trellis:RequestPath":"/api/item?"}}`), nil, Allow, 0},
		{"StringLike missing key", allowIf(`{"StringLike":{"trellis:RequestPath":"*"}}`), []func(*Request){asConnect}, ImplicitDeny, -1},
		{"StringNotLike", allowIf(`{"StringNotLike":{"trellis:RequestPath":["/admin/*","/internal*"]}}`), nil, Allow, 0},
		{"StringNotLike listed", allowIf(`{"StringNotLike":{"trellis:RequestPath":["/admin/*","/api*"]}}`), nil, ImplicitDeny, -1},
		{"StringNotLike missing key", allowIf(`{"StringNotLike":{"trellis:RequestPath":"*"}}`), []func(*Request){asConnect}, Allow, 0},
		{"number compared as its text", allowIf(`{"StringEquals":{"trellis:RequestQueryString/page":2}}`), nil, Allow, 0},
		{"boolean compared as its text", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-debug":true}}`), []func(*Request){withHeader("X-Debug", "true")}, Allow, 0},
		{"keys under one operator AND", allowIf(`{"StringEquals":{"trellis:RequestMethod":"GET","trellis:RequestPath":"/other"}}`), nil, ImplicitDeny, -1},
		{"operators AND", allowIf(`{"StringEquals":{"trellis:RequestMethod":"GET"},"StringLike":{"trellis:RequestPath":"/other*"}}`), nil, ImplicitDeny, -1},
		{"operators AND, all hold", allowIf(`{"StringEquals":{"trellis:RequestMethod":"GET"},"StringLike":{"trellis:RequestPath":"/api*"}}`), nil, Allow, 0},
	})
}

func TestEvaluateConditionKeys(t *testing.T) {
	runEval(t, []evalCase{
		{"ServiceNetwork", allowIf(`{"StringEquals":{"trellis:ServiceNetwork":"my-hotel"}}`), nil, Allow, 0},
		{"ServiceNetworkArn alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:ServiceNetworkArn":"my-hotel"}}`), nil, Allow, 0},
		{"Service", allowIf(`{"StringEquals":{"trellis:Service":"inventory-default.my-hotel"}}`), nil, Allow, 0},
		{"ServiceArn alias", allowIf(`{"StringLike":{"vpc-lattice-svcs:ServiceArn":"inventory-*"}}`), nil, Allow, 0},
		{"SourceCluster", allowIf(`{"StringEquals":{"trellis:SourceCluster":"west"}}`), nil, ImplicitDeny, -1},
		{"SourceVpc alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:SourceVpc":"east"}}`), nil, Allow, 0},
		{"RequestMethod alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"GET"}}`), nil, Allow, 0},
		{"RequestPath alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:RequestPath":"/api/items"}}`), nil, Allow, 0},
		{"PrincipalType", allowIf(`{"StringEquals":{"trellis:PrincipalType":"Anonymous"}}`), nil, Allow, 0},
		{"PrincipalType alias", allowIf(`{"StringEquals":{"aws:PrincipalType":"Workload"}}`), []func(*Request){asWorkload}, Allow, 0},
		{"Principal", allowIf(`{"StringLike":{"trellis:Principal":"spiffe://east/*"}}`), []func(*Request){asWorkload}, Allow, 0},
		{"Principal missing for anonymous", allowIf(`{"StringLike":{"trellis:Principal":"*"}}`), nil, ImplicitDeny, -1},
		{"Principal null for anonymous", allowIf(`{"Null":{"trellis:Principal":"true"}}`), nil, Allow, 0},
		{"header", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-tenant":"acme"}}`), nil, Allow, 0},
		{"header name ignores case", allowIf(`{"StringEquals":{"trellis:RequestHeader/X-TENANT":"acme"}}`), nil, Allow, 0},
		{"header alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:RequestHeader/X-Tenant":"acme"}}`), nil, Allow, 0},
		{"header value is case-sensitive", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-tenant":"ACME"}}`), nil, ImplicitDeny, -1},
		{"header present but empty", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-empty":""}}`), nil, Allow, 0},
		{"header present but empty is not null", allowIf(`{"Null":{"trellis:RequestHeader/x-empty":"false"}}`), nil, Allow, 0},
		{"header without a Header func", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-tenant":"acme"}}`), []func(*Request){noHeaders}, ImplicitDeny, -1},
		{"query", allowIf(`{"StringEquals":{"trellis:RequestQueryString/page":"2"}}`), nil, Allow, 0},
		{"query alias", allowIf(`{"StringEquals":{"vpc-lattice-svcs:RequestQueryString/page":"2"}}`), nil, Allow, 0},
		{"query key is case-sensitive", allowIf(`{"StringEquals":{"trellis:RequestQueryString/Page":"2"}}`), nil, ImplicitDeny, -1},
		{"query without a Query func", allowIf(`{"StringNotEquals":{"trellis:RequestQueryString/page":"2"}}`), []func(*Request){noHeaders}, Allow, 0},
		{"Port alias", allowIf(`{"NumericEquals":{"vpc-lattice-svcs:Port":443}}`), nil, Allow, 0},
		{"SourceIp alias", allowIf(`{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`), nil, Allow, 0},
	})
}

func TestEvaluateMultiValued(t *testing.T) {
	// X-Tag is "a", "b"; query tag is "x", "y".
	runEval(t, []evalCase{
		{"positive: any value matches", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-tag":"b"}}`), nil, Allow, 0},
		{"positive: no value matches", allowIf(`{"StringEquals":{"trellis:RequestHeader/x-tag":"c"}}`), nil, ImplicitDeny, -1},
		{"negated: one value is listed", allowIf(`{"StringNotEquals":{"trellis:RequestHeader/x-tag":"b"}}`), nil, ImplicitDeny, -1},
		{"negated: no value is listed", allowIf(`{"StringNotEquals":{"trellis:RequestHeader/x-tag":["c","d"]}}`), nil, Allow, 0},
		{"query any", allowIf(`{"StringLike":{"trellis:RequestQueryString/tag":"y*"}}`), nil, Allow, 0},
		{"query negated", allowIf(`{"StringNotLike":{"trellis:RequestQueryString/tag":"y*"}}`), nil, ImplicitDeny, -1},
		{"ForAnyValue one matches", allowIf(`{"ForAnyValue:StringEquals":{"trellis:RequestHeader/x-tag":["b","c"]}}`), nil, Allow, 0},
		{"ForAnyValue none matches", allowIf(`{"ForAnyValue:StringEquals":{"trellis:RequestHeader/x-tag":["c","d"]}}`), nil, ImplicitDeny, -1},
		{"ForAnyValue missing", allowIf(`{"ForAnyValue:StringEquals":{"trellis:RequestHeader/x-none":"a"}}`), nil, ImplicitDeny, -1},
		{"ForAnyValue negated, one value unlisted", allowIf(`{"ForAnyValue:StringNotEquals":{"trellis:RequestHeader/x-tag":"a"}}`), nil, Allow, 0},
		{"ForAnyValue negated, all listed", allowIf(`{"ForAnyValue:StringNotEquals":{"trellis:RequestHeader/x-tag":["a","b"]}}`), nil, ImplicitDeny, -1},
		{"ForAnyValue negated missing", allowIf(`{"ForAnyValue:StringNotEquals":{"trellis:RequestHeader/x-none":"a"}}`), nil, ImplicitDeny, -1},
		{"ForAnyValue IfExists missing", allowIf(`{"ForAnyValue:StringEqualsIfExists":{"trellis:RequestHeader/x-none":"a"}}`), nil, Allow, 0},
		{"ForAllValues all listed", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestHeader/x-tag":["a","b","c"]}}`), nil, Allow, 0},
		{"ForAllValues one unlisted", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestHeader/x-tag":["a","c"]}}`), nil, ImplicitDeny, -1},
		{"ForAllValues missing", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestHeader/x-none":"a"}}`), nil, Allow, 0},
		{"ForAllValues negated, none listed", allowIf(`{"ForAllValues:StringNotLike":{"trellis:RequestQueryString/tag":["z*","w"]}}`), nil, Allow, 0},
		{"ForAllValues negated, one listed", allowIf(`{"ForAllValues:StringNotLike":{"trellis:RequestQueryString/tag":["z*","x"]}}`), nil, ImplicitDeny, -1},
		{"ForAllValues single-valued key", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestMethod":["GET","HEAD"]}}`), nil, Allow, 0},
		{"ForAllValues single-valued key missing", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestMethod":"POST"}}`), []func(*Request){asConnect}, Allow, 0},
		{"ForAnyValue single-valued key", allowIf(`{"ForAnyValue:StringEquals":{"trellis:RequestMethod":"POST"}}`), nil, ImplicitDeny, -1},
		{"ForAllValues query, one unlisted", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestQueryString/tag":["x","y"]}}`), []func(*Request){withQuery("tag", "x", "z")}, ImplicitDeny, -1},
		{"ForAllValues query, all listed", allowIf(`{"ForAllValues:StringEquals":{"trellis:RequestQueryString/tag":["x","y"]}}`), []func(*Request){withQuery("tag", "y", "x", "y")}, Allow, 0},
		{"ForAllValues Numeric", allowIf(`{"ForAllValues:NumericLessThan":{"trellis:Port":1024}}`), nil, Allow, 0},
	})
}

func TestEvaluateNumericConditions(t *testing.T) {
	noPort := []func(*Request){withPort(0)}
	runEval(t, []evalCase{
		{"NumericEquals", allowIf(`{"NumericEquals":{"trellis:Port":443}}`), nil, Allow, 0},
		{"NumericEquals string", allowIf(`{"NumericEquals":{"trellis:Port":"443"}}`), nil, Allow, 0},
		{"NumericEquals decimal", allowIf(`{"NumericEquals":{"trellis:Port":443.0}}`), nil, Allow, 0},
		{"NumericEquals exponent", allowIf(`{"NumericEquals":{"trellis:Port":"4.43e2"}}`), nil, Allow, 0},
		{"NumericEquals other", allowIf(`{"NumericEquals":{"trellis:Port":[80,8080]}}`), nil, ImplicitDeny, -1},
		{"NumericEquals missing", allowIf(`{"NumericEquals":{"trellis:Port":443}}`), noPort, ImplicitDeny, -1},
		{"NumericNotEquals", allowIf(`{"NumericNotEquals":{"trellis:Port":[80,8080]}}`), nil, Allow, 0},
		{"NumericNotEquals listed", allowIf(`{"NumericNotEquals":{"trellis:Port":[80,443]}}`), nil, ImplicitDeny, -1},
		{"NumericNotEquals missing", allowIf(`{"NumericNotEquals":{"trellis:Port":443}}`), noPort, Allow, 0},
		{"NumericLessThan", allowIf(`{"NumericLessThan":{"trellis:Port":1024}}`), nil, Allow, 0},
		{"NumericLessThan equal", allowIf(`{"NumericLessThan":{"trellis:Port":443}}`), nil, ImplicitDeny, -1},
		{"NumericLessThan fraction", allowIf(`{"NumericLessThan":{"trellis:Port":443.5}}`), nil, Allow, 0},
		{"NumericLessThanEquals equal", allowIf(`{"NumericLessThanEquals":{"trellis:Port":443}}`), nil, Allow, 0},
		{"NumericLessThanEquals below", allowIf(`{"NumericLessThanEquals":{"trellis:Port":442}}`), nil, ImplicitDeny, -1},
		{"NumericGreaterThan", allowIf(`{"NumericGreaterThan":{"trellis:Port":442}}`), nil, Allow, 0},
		{"NumericGreaterThan equal", allowIf(`{"NumericGreaterThan":{"trellis:Port":443}}`), nil, ImplicitDeny, -1},
		{"NumericGreaterThan negative", allowIf(`{"NumericGreaterThan":{"trellis:Port":"-1"}}`), nil, Allow, 0},
		{"NumericGreaterThanEquals equal", allowIf(`{"NumericGreaterThanEquals":{"trellis:Port":443}}`), nil, Allow, 0},
		{"NumericGreaterThanEquals above", allowIf(`{"NumericGreaterThanEquals":{"trellis:Port":444}}`), nil, ImplicitDeny, -1},
		{"NumericLessThan missing", allowIf(`{"NumericLessThan":{"trellis:Port":1024}}`), noPort, ImplicitDeny, -1},
		{"NumericLessThanIfExists missing", allowIf(`{"NumericLessThanIfExists":{"trellis:Port":1024}}`), noPort, Allow, 0},
		{"values OR", allowIf(`{"NumericLessThan":{"trellis:Port":[10,1000]}}`), nil, Allow, 0},
	})
}

func TestEvaluateBoolAndNull(t *testing.T) {
	runEval(t, []evalCase{
		{"Bool true, value TRUE", allowIf(`{"Bool":{"trellis:RequestHeader/x-debug":true}}`), nil, Allow, 0},
		{"Bool string true", allowIf(`{"Bool":{"trellis:RequestHeader/x-debug":"True"}}`), nil, Allow, 0},
		{"Bool false, value TRUE", allowIf(`{"Bool":{"trellis:RequestHeader/x-debug":false}}`), nil, ImplicitDeny, -1},
		{"Bool false, value false", allowIf(`{"Bool":{"trellis:RequestHeader/x-debug":"false"}}`), []func(*Request){withHeader("x-debug", "false")}, Allow, 0},
		{"Bool value not a boolean", allowIf(`{"Bool":{"trellis:RequestHeader/x-debug":true}}`), []func(*Request){withHeader("x-debug", "yes")}, ImplicitDeny, -1},
		{"Bool missing", allowIf(`{"Bool":{"trellis:RequestHeader/x-none":false}}`), nil, ImplicitDeny, -1},
		{"BoolIfExists missing", allowIf(`{"BoolIfExists":{"trellis:RequestHeader/x-none":false}}`), nil, Allow, 0},
		{"Null true, missing", allowIf(`{"Null":{"trellis:RequestHeader/x-none":"true"}}`), nil, Allow, 0},
		{"Null true, present", allowIf(`{"Null":{"trellis:RequestHeader/x-tenant":true}}`), nil, ImplicitDeny, -1},
		{"Null false, present", allowIf(`{"Null":{"trellis:RequestHeader/x-tenant":"false"}}`), nil, Allow, 0},
		{"Null false, missing", allowIf(`{"Null":{"trellis:RequestHeader/x-none":false}}`), nil, ImplicitDeny, -1},
		{"Null on Port", allowIf(`{"Null":{"trellis:Port":"true"}}`), []func(*Request){withPort(0)}, Allow, 0},
		{"Null on SourceIp", allowIf(`{"Null":{"trellis:SourceIp":"false"}}`), []func(*Request){withIP("")}, ImplicitDeny, -1},
		{"Null on a method of a Connect", allowIf(`{"Null":{"trellis:RequestMethod":"true"}}`), []func(*Request){asConnect}, Allow, 0},
		{"Null either", allowIf(`{"Null":{"trellis:RequestHeader/x-none":["true","false"]}}`), nil, Allow, 0},
	})
}

func TestEvaluateIPConditions(t *testing.T) {
	runEval(t, []evalCase{
		{"IPv4 in range", allowIf(`{"IpAddress":{"trellis:SourceIp":"10.0.0.0/8"}}`), nil, Allow, 0},
		{"IPv4 out of range", allowIf(`{"IpAddress":{"trellis:SourceIp":"192.168.0.0/16"}}`), nil, ImplicitDeny, -1},
		{"IPv4 single address", allowIf(`{"IpAddress":{"trellis:SourceIp":"10.1.2.3"}}`), nil, Allow, 0},
		{"IPv4 other single address", allowIf(`{"IpAddress":{"trellis:SourceIp":"10.1.2.4"}}`), nil, ImplicitDeny, -1},
		{"IPv4 host bits in the prefix", allowIf(`{"IpAddress":{"trellis:SourceIp":"10.9.9.9/8"}}`), nil, Allow, 0},
		{"ranges OR", allowIf(`{"IpAddress":{"trellis:SourceIp":["192.168.0.0/16","10.1.0.0/16"]}}`), nil, Allow, 0},
		{"IPv6 in range", allowIf(`{"IpAddress":{"trellis:SourceIp":"2001:db8::/32"}}`), []func(*Request){withIP("2001:db8:1::5")}, Allow, 0},
		{"IPv6 out of range", allowIf(`{"IpAddress":{"trellis:SourceIp":"2001:db8::/32"}}`), []func(*Request){withIP("2001:db9::5")}, ImplicitDeny, -1},
		{"IPv6 single address", allowIf(`{"IpAddress":{"trellis:SourceIp":"::1"}}`), []func(*Request){withIP("::1")}, Allow, 0},
		{"IPv6 with zone", allowIf(`{"IpAddress":{"trellis:SourceIp":"fe80::/10"}}`), []func(*Request){withIP("fe80::1%eth0")}, Allow, 0},
		{"IPv4 address, IPv6 range", allowIf(`{"IpAddress":{"trellis:SourceIp":"::/0"}}`), nil, ImplicitDeny, -1},
		{"IPv6 address, IPv4 range", allowIf(`{"IpAddress":{"trellis:SourceIp":"0.0.0.0/0"}}`), []func(*Request){withIP("2001:db8::1")}, ImplicitDeny, -1},
		{"IPv4-mapped address", allowIf(`{"IpAddress":{"trellis:SourceIp":"10.0.0.0/8"}}`), []func(*Request){withIP("::ffff:10.1.2.3")}, Allow, 0},
		{"IpAddress missing", allowIf(`{"IpAddress":{"trellis:SourceIp":"0.0.0.0/0"}}`), []func(*Request){withIP("")}, ImplicitDeny, -1},
		{"IpAddressIfExists missing", allowIf(`{"IpAddressIfExists":{"trellis:SourceIp":"10.0.0.0/8"}}`), []func(*Request){withIP("")}, Allow, 0},
		{"NotIpAddress outside", allowIf(`{"NotIpAddress":{"trellis:SourceIp":["192.168.0.0/16","2001:db8::/32"]}}`), nil, Allow, 0},
		{"NotIpAddress inside", allowIf(`{"NotIpAddress":{"trellis:SourceIp":["192.168.0.0/16","10.0.0.0/8"]}}`), nil, ImplicitDeny, -1},
		{"NotIpAddress missing", allowIf(`{"NotIpAddress":{"trellis:SourceIp":"10.0.0.0/8"}}`), []func(*Request){withIP("")}, Allow, 0},
		{"deny outside the office", statements(
			stmt("Allow", `"*"`, `"*"`, `"*"`),
			`{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}`),
			[]func(*Request){withIP("203.0.113.9")}, ExplicitDeny, 1},
	})
}

func TestEvaluateIfExists(t *testing.T) {
	runEval(t, []evalCase{
		{"missing", allowIf(`{"StringEqualsIfExists":{"trellis:RequestHeader/x-none":"a"}}`), nil, Allow, 0},
		{"present, matching", allowIf(`{"StringEqualsIfExists":{"trellis:RequestHeader/x-tenant":"acme"}}`), nil, Allow, 0},
		{"present, not matching", allowIf(`{"StringEqualsIfExists":{"trellis:RequestHeader/x-tenant":"other"}}`), nil, ImplicitDeny, -1},
		{"negated present, listed", allowIf(`{"StringNotEqualsIfExists":{"trellis:RequestHeader/x-tenant":"acme"}}`), nil, ImplicitDeny, -1},
		{"StringLikeIfExists missing", allowIf(`{"StringLikeIfExists":{"trellis:RequestPath":"/x*"}}`), []func(*Request){asConnect}, Allow, 0},
		{"ForAllValues IfExists present", allowIf(`{"ForAllValues:StringLikeIfExists":{"trellis:RequestHeader/x-tag":"a"}}`), nil, ImplicitDeny, -1},
	})
}

func TestEvaluateNil(t *testing.T) {
	var p *Policy
	if d, i := p.Evaluate(testRequest()); d != ImplicitDeny || i != -1 {
		t.Errorf("nil policy: %v, %d", d, i)
	}
	p = mustParse(t, allowIf(`{}`))
	if d, i := p.Evaluate(nil); d != ImplicitDeny || i != -1 {
		t.Errorf("nil request: %v, %d", d, i)
	}
}

func TestDecisionString(t *testing.T) {
	for d, want := range map[Decision]string{ImplicitDeny: "ImplicitDeny", Allow: "Allow", ExplicitDeny: "ExplicitDeny", 7: "Decision(7)"} {
		if got := d.String(); got != want {
			t.Errorf("Decision(%d).String() = %q, want %q", int(d), got, want)
		}
	}
}

// TestEvaluateConcurrently shares one policy between goroutines, for the
// race detector.
func TestEvaluateConcurrently(t *testing.T) {
	p := mustParse(t, benchPolicy)
	done := make(chan Decision)
	for range 4 {
		go func() {
			var d Decision
			for range 100 {
				d, _ = p.Evaluate(benchRequest())
			}
			done <- d
		}()
	}
	for range 4 {
		if d := <-done; d != Allow {
			t.Errorf("decision %v, want Allow", d)
		}
	}
}
