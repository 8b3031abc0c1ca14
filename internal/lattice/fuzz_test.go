package lattice

import (
	"testing"

	"trellis.dev/trellis/internal/model"
)

// FuzzSinkOf: any destination ARN either is refused or names a sink that
// is a file name of the proxy's directory.
func FuzzSinkOf(f *testing.F) {
	for _, s := range []string{
		"arn:aws:logs:us-east-1:123456789012:log-group:inventory-logs:*",
		"arn:aws:s3:::bucket", "arn:aws:s3:::../../x", "arn:aws:firehose:us-east-1:123456789012:deliverystream/s",
		"arn:aws:logs:us-east-1:123456789012:log-group:/a/b", "arn:aws:s3:::a\x00b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arn string) {
		kind, sink, err := sinkOf(arn)
		if err != nil {
			return
		}
		if kind == "" || !model.ValidAccessLog(sink) {
			t.Fatalf("sinkOf(%q) = %q, %q", arn, kind, sink)
		}
	})
}

// FuzzSharedWith: any policy document shares with known owners only,
// never with the network's own owner.
func FuzzSharedWith(f *testing.F) {
	known := map[string]string{accountID("east"): "east", accountID("west"): "west"}
	for _, s := range []string{
		`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*"}]}`,
		`{"Statement":{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::` + accountID("west") + `:root"]},"Action":["vpc-lattice:Create*"]}}`,
		`{"Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"vpc-lattice:*"}]}`,
		`{"Statement":null}`, `[]`, `{"Statement":[{"Principal":{"AWS":7}}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		for _, o := range sharedWith(doc, "east", known) {
			if o != "west" {
				t.Fatalf("sharedWith(%q) names %q", doc, o)
			}
		}
	})
}

// FuzzCertificateName: a certificate ARN is refused or names a
// Certificate by a model object name.
func FuzzCertificateName(f *testing.F) {
	for _, s := range []string{"arn:aws:acm:us-east-1:123456789012:certificate/inventory-cert", "", "arn:aws:acm:::certificate/-", "arn:aws:acm:us-east-1:1:certificate/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arn string) {
		name, err := certificateName(arn)
		if err != nil || name == "" {
			return
		}
		c := model.Certificate{Meta: model.Meta{Name: name, Owner: "east"}}
		// Without a chain, only certPEM may be wrong.
		if err := c.Validate(); err != nil && !onlyField(err, "certPEM") {
			t.Fatalf("certificateName(%q) = %q, not an object name: %v", arn, name, err)
		}
	})
}

// onlyField reports whether err is field errors naming only field.
func onlyField(err error, field string) bool {
	fe, ok := err.(model.FieldErrors)
	if !ok {
		return false
	}
	for _, e := range fe {
		if e.Field != field {
			return false
		}
	}
	return true
}
