package auth

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse: it must not panic, it must
// return either a policy or a non-empty Errors, and a policy it returns must
// evaluate, alone and in Authorize, without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(benchPolicy))
	f.Add([]byte(allowIf(`{"ForAnyValue:StringLikeIfExists":{"trellis:RequestHeader/x-tag":["a*","?b"]},"Null":{"trellis:Principal":true}}`)))
	f.Add([]byte(allowIf(`{"NumericLessThanEquals":{"vpc-lattice-svcs:Port":"1e3"},"NotIpAddress":{"aws:SourceIp":["::1","10.0.0.0/8"]}}`)))
	f.Add([]byte(`{"Statement":{"Effect":"Deny","Principal":{"Trellis":["spiffe://*"]},"Action":"trellis:Connect","Resource":"svc"}}`))
	f.Add([]byte(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"s3:*","Resource":"","Bogus":1}]}`))
	f.Add([]byte(`{"Statement":[[[[`))
	f.Add([]byte(`null`))
	requests := []*Request{
		testRequest(),
		testRequest(asWorkload, asConnect),
		testRequest(noHeaders, withIP("::ffff:10.0.0.1"), withPort(0), withPath("")),
		{},
	}
	r := testRequest(asWorkload)
	r.SourceIP = netip.MustParseAddr("fe80::1%eth0")
	requests = append(requests, r)
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := Parse(doc)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range errs {
				if e == nil || e.Detail == "" {
					t.Fatalf("empty problem in %v", errs)
				}
			}
			if p != nil {
				t.Fatal("Parse returned a policy with its error")
			}
			return
		}
		if p == nil {
			t.Fatal("Parse returned neither a policy nor an error")
		}
		for _, r := range requests {
			d, i := p.Evaluate(r)
			if (d == ImplicitDeny) != (i == -1) || i >= len(p.statements) {
				t.Fatalf("Evaluate = %v, %d with %d statements", d, i, len(p.statements))
			}
			res := Authorize(p, p, r)
			if res.Allowed != (d == Allow) {
				t.Fatalf("Authorize = %+v, but Evaluate = %v", res, d)
			}
			_ = res.Message(r)
		}
	})
}
