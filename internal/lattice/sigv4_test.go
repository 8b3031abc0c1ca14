package lattice

import (
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The "get-vanilla" case of AWS's Signature Version 4 test suite.
func TestSignatureVanilla(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://example.amazonaws.com/", nil)
	r.Header.Set("X-Amz-Date", "20150830T123600Z")
	creq := canonicalRequest(r, []string{"host", "x-amz-date"}, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
	want := "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if creq != want {
		t.Fatalf("canonical request\n%s\nwant\n%s", creq, want)
	}
	toSign := "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n" +
		"bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
	key := signingKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "service")
	if got := hex.EncodeToString(hmacSHA256(key, toSign)); got != "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" {
		t.Fatalf("signature %s", got)
	}
}

func TestCanonicalQuerySortsByNameThenValue(t *testing.T) {
	got := canonicalQuery("b=2&a-b=1&a=z&a=y&sp=a%20b")
	if want := "a=y&a=z&a-b=1&b=2&sp=a%20b"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	creds := func(k string) (Credential, bool) { return Credential{Secret: "s3cret", Owner: "local"}, k == "AK" }
	sign := func(key, secret, stamp string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:9/servicenetworks", nil)
		r.Header.Set("X-Amz-Date", stamp)
		payload := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		creq := canonicalRequest(r, []string{"host", "x-amz-date"}, payload)
		sum := sha256Hex(creq)
		scope := stamp[:8] + "/us-east-1/vpc-lattice/aws4_request"
		sig := hmacSHA256(signingKey(secret, stamp[:8], "us-east-1", "vpc-lattice"), "AWS4-HMAC-SHA256\n"+stamp+"\n"+scope+"\n"+sum)
		r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+key+"/"+scope+", SignedHeaders=host;x-amz-date, Signature="+hex.EncodeToString(sig))
		return r
	}
	good := now.Format(amzDate)
	if c, region, err := verify(sign("AK", "s3cret", good), nil, creds, now); err != nil || c.Owner != "local" || region != "us-east-1" {
		t.Fatalf("good request: %v %v %v", c, region, err)
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		code string
	}{
		{"wrong secret", sign("AK", "other", good), "InvalidSignatureException"},
		{"unknown key", sign("NOPE", "s3cret", good), "UnrecognizedClientException"},
		{"6 minutes early", sign("AK", "s3cret", now.Add(-6*time.Minute).Format(amzDate)), "InvalidSignatureException"},
		{"6 minutes late", sign("AK", "s3cret", now.Add(6*time.Minute).Format(amzDate)), "InvalidSignatureException"},
	} {
		_, _, err := verify(tc.r, nil, creds, now)
		if se, ok := err.(*sigError); !ok || se.code != tc.code {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	r := sign("AK", "s3cret", good)
	if _, _, err := verify(r, []byte("tampered body"), creds, now); err == nil || !strings.Contains(err.Error(), "InvalidSignature") {
		t.Errorf("a changed body verified: %v", err)
	}
}

// FuzzParseAuthorization: the parser of the Authorization header never
// panics, and what it accepts has every part it needs.
func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/vpc-lattice/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("ab", 32))
	f.Add("AWS4-HMAC-SHA256 Credential=/, SignedHeaders=;, Signature=zz")
	f.Add("AWS4-HMAC-SHA256 ,,,=")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if a.accessKey == "" || len(a.signature) != 32 || len(a.date) != 8 || len(a.signedHeaders) == 0 {
			t.Fatalf("accepted %q as %+v", h, a)
		}
	})
}
