package auth

import (
	"errors"
	"strings"
	"testing"
)

// mustParse parses doc or fails the test.
func mustParse(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%s): %v", doc, err)
	}
	return p
}

// allowIf is a document of one statement allowing everything when cond, a
// Condition block, holds.
func allowIf(cond string) string {
	return `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":` + cond + `}}`
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name       string
		doc        string
		statements int
	}{
		{"single statement object", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"trellis:Invoke","Resource":"*"}}`, 1},
		{"statement array", `{"Statement":[
			{"Sid":"a","Effect":"Allow","Principal":"*","Action":["trellis:Invoke","trellis:Connect"],"Resource":["svc/*","svc"]},
			{"Sid":"b","Effect":"Deny","Principal":{"Trellis":"spiffe://east/*"},"Action":"trellis:*","Resource":"*"},
			{"Effect":"Allow","Principal":{"Trellis":["a","b?"]},"Action":"*","Resource":"*"}]}`, 3},
		{"Id and no Version", `{"Id":"x","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`, 1},
		{"empty Sids may repeat", `{"Statement":[
			{"Sid":"","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"},
			{"Sid":"","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`, 2},
		{"Lattice action aliases", `{"Statement":{"Effect":"Allow","Principal":"*","Action":["vpc-lattice-svcs:Invoke","vpc-lattice-svcs:Connect","vpc-lattice-svcs:*","TRELLIS:invoke"],"Resource":"*"}}`, 1},
		{"empty Condition", allowIf(`{}`), 1},
		{"string operators", allowIf(`{
			"StringEquals":{"trellis:RequestMethod":["GET","HEAD"],"trellis:RequestHeader/x-n":5,"trellis:RequestQueryString/b":true},
			"StringNotEquals":{"trellis:RequestPath":"/admin"},
			"StringEqualsIgnoreCase":{"trellis:Service":"SVC"},
			"StringNotEqualsIgnoreCase":{"trellis:ServiceNetwork":"net"},
			"StringLike":{"trellis:RequestPath":["/api/*","/v?/*"]},
			"StringNotLike":{"trellis:SourceCluster":"test-*"}}`), 1},
		{"numeric operators", allowIf(`{
			"NumericEquals":{"trellis:Port":443},
			"NumericNotEquals":{"trellis:Port":"80"},
			"NumericLessThan":{"trellis:Port":1024.5},
			"NumericLessThanEquals":{"trellis:Port":"1e3"},
			"NumericGreaterThan":{"trellis:Port":-1},
			"NumericGreaterThanEquals":{"trellis:Port":["0","1"]}}`), 1},
		{"Bool, IP and Null operators", allowIf(`{
			"Bool":{"trellis:RequestHeader/x-debug":[true,"FALSE"]},
			"IpAddress":{"trellis:SourceIp":["10.0.0.0/8","192.168.1.1","2001:db8::/32","::1"]},
			"NotIpAddress":{"aws:SourceIp":"10.9.0.0/16"},
			"Null":{"trellis:Principal":"true","trellis:Port":false,"trellis:SourceIp":"True"}}`), 1},
		{"set prefixes and IfExists", allowIf(`{
			"ForAnyValue:StringLike":{"trellis:RequestHeader/x-tag":"a*"},
			"ForAllValues:StringEquals":{"trellis:RequestQueryString/t":["a","b"]},
			"StringEqualsIfExists":{"trellis:RequestMethod":"GET"},
			"ForAllValues:NumericLessThanIfExists":{"trellis:Port":10000},
			"NotIpAddressIfExists":{"trellis:SourceIp":"10.0.0.0/8"}}`), 1},
		{"condition key aliases", allowIf(`{"StringEquals":{
			"vpc-lattice-svcs:RequestMethod":"GET",
			"vpc-lattice-svcs:RequestPath":"/",
			"vpc-lattice-svcs:RequestHeader/x":"1",
			"vpc-lattice-svcs:RequestQueryString/q":"1",
			"vpc-lattice-svcs:ServiceNetworkArn":"n",
			"vpc-lattice-svcs:ServiceArn":"s",
			"vpc-lattice-svcs:SourceVpc":"c",
			"aws:PrincipalType":"Anonymous",
			"trellis:PrincipalType":"Anonymous",
			"trellis:Principal":"p"},
			"NumericEquals":{"vpc-lattice-svcs:Port":1},
			"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}`), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.doc)
			if got := len(p.statements); got != tt.statements {
				t.Errorf("%d statements, want %d", got, tt.statements)
			}
		})
	}
}

func TestParseCompiles(t *testing.T) {
	p := mustParse(t, `{"Statement":[
		{"Effect":"Deny","Principal":{"Trellis":["a*","b"]},"Action":["trellis:Connect","vpc-lattice-svcs:Invoke"],"Resource":"svc/*",
		 "Condition":{"ForAllValues:StringNotLikeIfExists":{"trellis:RequestHeader/x-TAG":["x*","y"]},"IpAddress":{"trellis:SourceIp":"10.1.2.3/8"}}}]}`)
	s := p.statements[0]
	if !s.deny || s.anyPrincipal || len(s.principals) != 2 || s.actions != actAll || len(s.resources) != 1 {
		t.Fatalf("statement compiled wrong: %+v", s)
	}
	if len(s.conditions) != 2 {
		t.Fatalf("%d conditions, want 2", len(s.conditions))
	}
	c := s.conditions[0]
	want := operator{match: matchStringLike, negated: true, set: setAllValues, ifExists: true}
	if c.op != want || c.key != (condKey{kind: keyHeader, arg: "X-Tag"}) || len(c.globs) != 2 {
		t.Errorf("condition 0 compiled wrong: %+v", c)
	}
	if got := s.conditions[1].prefixes[0].String(); got != "10.0.0.0/8" {
		t.Errorf("prefix compiled to %s, want the masked 10.0.0.0/8", got)
	}
}

func TestParseInvalid(t *testing.T) {
	stmt := func(fields string) string {
		return `{"Statement":[{` + fields + `}]}`
	}
	base := `"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"`
	cond := func(c string) string { return stmt(base + `,"Condition":` + c) }
	deep := `{"Statement":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`
	tests := []struct {
		name, doc string
		field     string
		detail    string // a part of the error's detail
	}{
		{"empty document", ``, "", "empty"},
		{"not an object", `["x"]`, "", "not an array"},
		{"syntax error", `{"Statement": [}`, "", "invalid JSON at byte offset"},
		{"truncated", `{"Statement": [`, "", "unexpected end"},
		{"trailing data", `{"Statement":{}} {}`, "", "unexpected data after"},
		{"too deep", deep, "", "nests deeper"},
		{"too large", `{"Statement":[]}` + strings.Repeat(" ", maxPolicySize), "", "65552 bytes"},
		{"bad Version", `{"Version":"2008-10-17","Statement":{` + base + `}}`, "Version", `"2008-10-17"`},
		{"Version not a string", `{"Version":2012,"Statement":{` + base + `}}`, "Version", "the number 2012"},
		{"Id not a string", `{"Id":[],"Statement":{` + base + `}}`, "Id", "an array"},
		{"unknown top-level field", `{"Statements":[],"Statement":{` + base + `}}`, "Statements", `"Statements"`},
		{"unknown field with odd name", `{"a b":1,"Statement":{` + base + `}}`, `["a b"]`, `"a b"`},
		{"repeated member", `{"Statement":{` + base + `},"Statement":{` + base + `}}`, "Statement", "more than once"},
		{"missing Statement", `{"Version":"2012-10-17"}`, "Statement", "required"},
		{"empty Statement", `{"Statement":[]}`, "Statement", "at least one"},
		{"Statement a number", `{"Statement":5}`, "Statement", "the number 5"},
		{"statement not an object", `{"Statement":[1]}`, "Statement[0]", "the number 1"},
		{"single statement path", `{"Statement":{"Effect":"allow","Principal":"*","Action":"*","Resource":"*"}}`, "Statement.Effect", `"allow"`},
		{"unknown statement field", stmt(base + `,"Conditions":{}`), "Statement[0].Conditions", `"Conditions"`},
		{"field name case", stmt(`"effect":"Allow","Principal":"*","Action":"*","Resource":"*"`), "Statement[0].effect", `did you mean "Effect"`},
		{"missing Effect", stmt(`"Principal":"*","Action":"*","Resource":"*"`), "Statement[0].Effect", "required"},
		{"bad Effect", stmt(`"Effect":"Permit","Principal":"*","Action":"*","Resource":"*"`), "Statement[0].Effect", `"Permit"`},
		{"Effect not a string", stmt(`"Effect":true,"Principal":"*","Action":"*","Resource":"*"`), "Statement[0].Effect", "true"},
		{"Sid not a string", stmt(base + `,"Sid":7`), "Statement[0].Sid", "the number 7"},
		{"repeated Sid", `{"Statement":[{"Sid":"dup",` + base + `},{"Sid":"dup",` + base + `}]}`, "Statement[1].Sid", `"dup"`},
		{"missing Principal", stmt(`"Effect":"Allow","Action":"*","Resource":"*"`), "Statement[0].Principal", "required"},
		{"AWS principal", stmt(`"Effect":"Allow","Principal":{"AWS":"*"},"Action":"*","Resource":"*"`), "Statement[0].Principal.AWS", `AWS principals are not supported; use "Trellis"`},
		{"Service principal", stmt(`"Effect":"Allow","Principal":{"Service":"x"},"Action":"*","Resource":"*"`), "Statement[0].Principal.Service", `"Service" is not supported`},
		{"principal type case", stmt(`"Effect":"Allow","Principal":{"trellis":"x"},"Action":"*","Resource":"*"`), "Statement[0].Principal.trellis", `"trellis" is not supported; use "Trellis" with principal IDs (did you mean "Trellis"?)`},
		{"principal string", stmt(`"Effect":"Allow","Principal":"me","Action":"*","Resource":"*"`), "Statement[0].Principal", `"me"`},
		{"principal array", stmt(`"Effect":"Allow","Principal":["*"],"Action":"*","Resource":"*"`), "Statement[0].Principal", "an array"},
		{"principal empty object", stmt(`"Effect":"Allow","Principal":{},"Action":"*","Resource":"*"`), "Statement[0].Principal", "must name principals"},
		{"Trellis empty list", stmt(`"Effect":"Allow","Principal":{"Trellis":[]},"Action":"*","Resource":"*"`), "Statement[0].Principal.Trellis", "empty array"},
		{"Trellis not a string", stmt(`"Effect":"Allow","Principal":{"Trellis":["a",3]},"Action":"*","Resource":"*"`), "Statement[0].Principal.Trellis[1]", "the number 3"},
		{"Trellis empty pattern", stmt(`"Effect":"Allow","Principal":{"Trellis":""},"Action":"*","Resource":"*"`), "Statement[0].Principal.Trellis", "must not be empty"},
		{"Trellis repeated", stmt(`"Effect":"Allow","Principal":{"Trellis":"a","Trellis":"b"},"Action":"*","Resource":"*"`), "Statement[0].Principal.Trellis", "more than once"},
		{"NotPrincipal", stmt(base + `,"NotPrincipal":"*"`), "Statement[0].NotPrincipal", "NotPrincipal is not supported"},
		{"NotAction", stmt(base + `,"NotAction":"*"`), "Statement[0].NotAction", "NotAction is not supported"},
		{"NotResource", stmt(base + `,"NotResource":"*"`), "Statement[0].NotResource", "NotResource is not supported"},
		{"missing Action", stmt(`"Effect":"Allow","Principal":"*","Resource":"*"`), "Statement[0].Action", "required"},
		{"unknown action", stmt(`"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"`), "Statement[0].Action", `"s3:GetObject"`},
		{"unknown action in list", stmt(`"Effect":"Allow","Principal":"*","Action":["trellis:Invoke","trellis:Delete"],"Resource":"*"`), "Statement[0].Action[1]", `"trellis:Delete"`},
		{"action wildcard pattern", stmt(`"Effect":"Allow","Principal":"*","Action":"trellis:Inv*","Resource":"*"`), "Statement[0].Action", `"trellis:Inv*"`},
		{"missing Resource", stmt(`"Effect":"Allow","Principal":"*","Action":"*"`), "Statement[0].Resource", "required"},
		{"empty Resource", stmt(`"Effect":"Allow","Principal":"*","Action":"*","Resource":""`), "Statement[0].Resource", "must not be empty"},
		{"Resource an object", stmt(`"Effect":"Allow","Principal":"*","Action":"*","Resource":{}`), "Statement[0].Resource", "an object"},
		{"policy variable in Resource", stmt(`"Effect":"Allow","Principal":"*","Action":"*","Resource":["svc/${aws:username}"]`), "Statement[0].Resource[0]", `"svc/${aws:username}"`},
		{"Condition a string", cond(`"x"`), "Statement[0].Condition", `"x"`},
		{"unknown operator", cond(`{"StringMatches":{"trellis:RequestPath":"/"}}`), "Statement[0].Condition.StringMatches", `"StringMatches"`},
		{"unsupported IAM operator", cond(`{"DateLessThan":{"trellis:RequestPath":"/"}}`), "Statement[0].Condition.DateLessThan", `"DateLessThan"`},
		{"operator case", cond(`{"stringequals":{"trellis:RequestPath":"/"}}`), "Statement[0].Condition.stringequals", `did you mean "StringEquals"`},
		{"prefixed operator case", cond(`{"forAnyValue:stringLikeIfExists":{"trellis:RequestPath":"/"}}`), `Statement[0].Condition["forAnyValue:stringLikeIfExists"]`, `did you mean "ForAnyValue:StringLikeIfExists"`},
		{"NullIfExists", cond(`{"NullIfExists":{"trellis:RequestPath":"true"}}`), "Statement[0].Condition.NullIfExists", `"NullIfExists"`},
		{"set prefix on Null", cond(`{"ForAnyValue:Null":{"trellis:RequestPath":"true"}}`), `Statement[0].Condition["ForAnyValue:Null"]`, "ForAnyValue:"},
		{"operator repeated", cond(`{"Null":{"trellis:Port":"true"},"Null":{"trellis:Port":"true"}}`), "Statement[0].Condition.Null", "more than once"},
		{"operator not an object", cond(`{"StringEquals":"x"}`), "Statement[0].Condition.StringEquals", `"x"`},
		{"operator without keys", cond(`{"StringEquals":{}}`), "Statement[0].Condition.StringEquals", "at least one condition key"},
		{"unknown key", cond(`{"StringEquals":{"trellis:Foo":"x"}}`), `Statement[0].Condition.StringEquals["trellis:Foo"]`, `"trellis:Foo"`},
		{"IAM key not supported", cond(`{"StringEquals":{"aws:PrincipalArn":"x"}}`), `Statement[0].Condition.StringEquals["aws:PrincipalArn"]`, `"aws:PrincipalArn"`},
		{"key case", cond(`{"IpAddress":{"aws:sourceip":"10.0.0.0/8"}}`), `Statement[0].Condition.IpAddress["aws:sourceip"]`, `did you mean "aws:SourceIp"`},
		{"header key case", cond(`{"StringEquals":{"trellis:requestheader/x":"1"}}`), `Statement[0].Condition.StringEquals["trellis:requestheader/x"]`, `did you mean "trellis:RequestHeader/x"`},
		{"key repeated", cond(`{"StringEquals":{"trellis:Service":"a","trellis:Service":"b"}}`), `Statement[0].Condition.StringEquals["trellis:Service"]`, "more than once"},
		{"header key without name", cond(`{"StringEquals":{"trellis:RequestHeader/":"x"}}`), `Statement[0].Condition.StringEquals["trellis:RequestHeader/"]`, "names no header"},
		{"header key bad name", cond(`{"StringEquals":{"trellis:RequestHeader/x y":"x"}}`), `Statement[0].Condition.StringEquals["trellis:RequestHeader/x y"]`, `"x y" is not a valid header name`},
		{"query key without name", cond(`{"StringEquals":{"vpc-lattice-svcs:RequestQueryString/":"x"}}`), `Statement[0].Condition.StringEquals["vpc-lattice-svcs:RequestQueryString/"]`, "names no query parameter"},
		{"Numeric on string key", cond(`{"NumericEquals":{"trellis:RequestPath":1}}`), `Statement[0].Condition.NumericEquals["trellis:RequestPath"]`, `NumericEquals needs a numeric key; "trellis:RequestPath" is a string key`},
		{"IpAddress on string key", cond(`{"NotIpAddressIfExists":{"trellis:Service":"10.0.0.0/8"}}`), `Statement[0].Condition.NotIpAddressIfExists["trellis:Service"]`, `NotIpAddressIfExists needs an IP address key; "trellis:Service" is a string key`},
		{"String on numeric key", cond(`{"StringEquals":{"trellis:Port":"443"}}`), `Statement[0].Condition.StringEquals["trellis:Port"]`, `StringEquals needs a string key; "trellis:Port" is a numeric key`},
		{"String on IP key", cond(`{"StringLike":{"aws:SourceIp":"10.*"}}`), `Statement[0].Condition.StringLike["aws:SourceIp"]`, `"aws:SourceIp" is an IP address key`},
		{"Bool on numeric key", cond(`{"Bool":{"trellis:Port":true}}`), `Statement[0].Condition.Bool["trellis:Port"]`, `Bool needs a string key`},
		{"numeric value not a number", cond(`{"NumericLessThan":{"trellis:Port":["10","abc"]}}`), `Statement[0].Condition.NumericLessThan["trellis:Port"][1]`, `"abc"`},
		{"numeric value NaN", cond(`{"NumericLessThan":{"trellis:Port":"NaN"}}`), `Statement[0].Condition.NumericLessThan["trellis:Port"]`, `"NaN"`},
		{"numeric value hex", cond(`{"NumericLessThan":{"trellis:Port":"0x10"}}`), `Statement[0].Condition.NumericLessThan["trellis:Port"]`, `"0x10"`},
		{"numeric value out of range", cond(`{"NumericLessThan":{"trellis:Port":1e999}}`), `Statement[0].Condition.NumericLessThan["trellis:Port"]`, "1e999"},
		{"numeric value a boolean", cond(`{"NumericEquals":{"trellis:Port":true}}`), `Statement[0].Condition.NumericEquals["trellis:Port"]`, "true"},
		{"IP value bad", cond(`{"IpAddress":{"trellis:SourceIp":"10.0.0.300/8"}}`), `Statement[0].Condition.IpAddress["trellis:SourceIp"]`, `"10.0.0.300/8"`},
		{"IP value a number", cond(`{"IpAddress":{"trellis:SourceIp":["10.0.0.0/8",10]}}`), `Statement[0].Condition.IpAddress["trellis:SourceIp"][1]`, "the number 10"},
		{"IP value with zone", cond(`{"IpAddress":{"trellis:SourceIp":"fe80::1%eth0"}}`), `Statement[0].Condition.IpAddress["trellis:SourceIp"]`, `"fe80::1%eth0"`},
		{"Bool value bad", cond(`{"Bool":{"trellis:RequestHeader/x":"yes"}}`), `Statement[0].Condition.Bool["trellis:RequestHeader/x"]`, `"yes"`},
		{"Bool value a number", cond(`{"Bool":{"trellis:RequestHeader/x":1}}`), `Statement[0].Condition.Bool["trellis:RequestHeader/x"]`, "the number 1"},
		{"Null value bad", cond(`{"Null":{"trellis:Port":"maybe"}}`), `Statement[0].Condition.Null["trellis:Port"]`, `"maybe"`},
		{"values empty", cond(`{"StringEquals":{"trellis:Service":[]}}`), `Statement[0].Condition.StringEquals["trellis:Service"]`, "at least one value"},
		{"value null", cond(`{"StringEquals":{"trellis:Service":null}}`), `Statement[0].Condition.StringEquals["trellis:Service"]`, "not null"},
		{"value an object", cond(`{"StringEquals":{"trellis:Service":{"a":1}}}`), `Statement[0].Condition.StringEquals["trellis:Service"]`, "an object"},
		{"value a nested array", cond(`{"StringEquals":{"trellis:Service":["a",["b"]]}}`), `Statement[0].Condition.StringEquals["trellis:Service"][1]`, "an array"},
		{"policy variable in value", cond(`{"StringLike":{"trellis:RequestPath":"/${aws:username}/*"}}`), `Statement[0].Condition.StringLike["trellis:RequestPath"]`, `"/${aws:username}/*"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error at %q", tt.field)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with its error")
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range errs {
				if e.Field == tt.field && strings.Contains(e.Detail, tt.detail) {
					return
				}
			}
			t.Errorf("no error at %q mentioning %q; got: %v", tt.field, tt.detail, err)
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`{"Version":"1","Statement":[
		{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Bogus":1},
		{"Effect":"Maybe","Principal":{"AWS":"x"},"Action":"trellis:Invoke","Resource":"*",
		 "Condition":{"NumericEquals":{"trellis:Port":"x"},"Foo":{"trellis:Port":1}}}]}`))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not Errors", err)
	}
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	want := []string{
		"Version",
		"Statement[0].Bogus",
		"Statement[1].Effect",
		"Statement[1].Principal.AWS",
		`Statement[1].Condition.NumericEquals["trellis:Port"]`,
		"Statement[1].Condition.Foo",
	}
	if strings.Join(fields, "\n") != strings.Join(want, "\n") {
		t.Errorf("fields in error:\n%s\nwant:\n%s", strings.Join(fields, "\n"), strings.Join(want, "\n"))
	}
}

func TestParseStopsAfterManyProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"Statement":[`)
	for i := range 200 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","X":1}`)
	}
	b.WriteString(`]}`)
	_, err := Parse([]byte(b.String()))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not Errors", err)
	}
	if len(errs) != maxErrors+1 {
		t.Fatalf("%d errors, want %d and a last one saying it stopped", len(errs), maxErrors+1)
	}
	if last := errs[len(errs)-1]; last.Field != "" || !strings.Contains(last.Detail, "stopped after 50") {
		t.Errorf("last error is %v", last)
	}
}

func TestParseSizeLimit(t *testing.T) {
	doc := `{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}`
	padded := doc + strings.Repeat(" ", maxPolicySize-len(doc))
	if _, err := Parse([]byte(padded)); err != nil {
		t.Errorf("a document of exactly %d bytes: %v", maxPolicySize, err)
	}
	if _, err := Parse([]byte(padded + " ")); err == nil || !strings.Contains(err.Error(), "limit is 65536") {
		t.Errorf("a document one byte over the limit: got %v", err)
	}
}

func TestErrorText(t *testing.T) {
	es := Errors{
		{Field: "Statement[0].Effect", Detail: `must be "Allow" or "Deny", not "x"`},
		{Detail: "policy document is empty"},
	}
	if got, want := es[0].Error(), `Statement[0].Effect: must be "Allow" or "Deny", not "x"`; got != want {
		t.Errorf("Error.Error() = %q, want %q", got, want)
	}
	if got, want := es.Error(), `Statement[0].Effect: must be "Allow" or "Deny", not "x"; policy document is empty`; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func TestLongValuesAreShortenedInErrors(t *testing.T) {
	long := strings.Repeat("é", 100)
	_, err := Parse([]byte(`{"Statement":{"Effect":"` + long + `","Principal":"*","Action":"*","Resource":"*"}}`))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, long) || !strings.Contains(msg, `"...`) {
		t.Errorf("long value not shortened: %s", msg)
	}
	if msg := err.Error(); strings.ContainsRune(msg, '\uFFFD') {
		t.Errorf("shortening split a UTF-8 sequence: %s", msg)
	}
}
