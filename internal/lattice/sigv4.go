package lattice

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Signature Version 4, verified as the AWS documentation specifies it
// ("Create a signed AWS API request"): canonical request, string to sign,
// the HMAC chain from the secret over date, region, service and
// "aws4_request", compared in constant time.

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	// SigningService is the service name the control plane's requests are
	// signed for.
	SigningService = "vpc-lattice"
	// MaxSkew is how far X-Amz-Date may be from the server's clock.
	MaxSkew = 5 * time.Minute
	amzDate = "20060102T150405Z"
	// maxAuthHeader bounds the Authorization header the parser reads.
	maxAuthHeader = 4096
)

// authHeader is a parsed Authorization header.
type authHeader struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        []byte
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/vpc-lattice/aws4_request,
// SignedHeaders=host;x-amz-date, Signature=<64 hex>". Every part is
// required once; signed header names are lower case, sorted, unique.
func parseAuthorization(h string) (*authHeader, error) {
	if len(h) > maxAuthHeader {
		return nil, errors.New("authorization header too long")
	}
	rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
	if !ok {
		return nil, fmt.Errorf("authorization header requires the %s algorithm", sigAlgorithm)
	}
	var a authHeader
	seen := map[string]bool{}
	for part := range strings.SplitSeq(rest, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok || seen[k] {
			return nil, fmt.Errorf("authorization header: malformed or repeated element %q", part)
		}
		seen[k] = true
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[0] == "" || f[4] != "aws4_request" || len(f[1]) != 8 || f[2] == "" {
				return nil, errors.New("authorization header: Credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request")
			}
			a.accessKey, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
			for i, n := range a.signedHeaders {
				if n == "" || n != strings.ToLower(n) || (i > 0 && a.signedHeaders[i-1] >= n) {
					return nil, errors.New("authorization header: SignedHeaders must be lower-case names, sorted, unique")
				}
			}
		case "Signature":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return nil, errors.New("authorization header: Signature must be 64 hex digits")
			}
			a.signature = sig
		default:
			return nil, fmt.Errorf("authorization header: unknown element %q", k)
		}
	}
	if a.accessKey == "" || a.signedHeaders == nil || a.signature == nil {
		return nil, errors.New("authorization header requires Credential, SignedHeaders and Signature")
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return nil, errors.New("authorization header: SignedHeaders must include host")
	}
	return &a, nil
}

// sigError is a failed verification: the AWS error code and message.
type sigError struct{ code, message string }

func (e *sigError) Error() string { return e.code + ": " + e.message }

// Credential is what an access key stands for.
type Credential struct {
	Secret string
	Owner  string
}

// verify checks r's signature over body. lookup finds an access key's
// credential. It returns the credential and the region the request was
// signed for.
func verify(r *http.Request, body []byte, lookup func(string) (Credential, bool), now time.Time) (Credential, string, error) {
	missing := &sigError{"MissingAuthenticationTokenException", "Missing Authentication Token"}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Credential{}, "", missing
	}
	a, err := parseAuthorization(h)
	if err != nil {
		return Credential{}, "", &sigError{"IncompleteSignatureException", err.Error()}
	}
	cred, ok := lookup(a.accessKey)
	if !ok {
		return Credential{}, "", &sigError{"UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	if a.service != SigningService {
		return Credential{}, "", &sigError{"InvalidSignatureException", fmt.Sprintf("Credential should be scoped to correct service: '%s'.", SigningService)}
	}
	stamp := r.Header.Get("X-Amz-Date")
	if !slices.Contains(a.signedHeaders, "x-amz-date") {
		return Credential{}, "", &sigError{"IncompleteSignatureException", "SignedHeaders must include x-amz-date"}
	}
	t, err := time.Parse(amzDate, stamp)
	if err != nil {
		return Credential{}, "", &sigError{"IncompleteSignatureException", "X-Amz-Date must be YYYYMMDDTHHMMSSZ"}
	}
	if d := now.Sub(t); d > MaxSkew || d < -MaxSkew {
		return Credential{}, "", &sigError{"InvalidSignatureException", fmt.Sprintf(
			"Signature expired: %s is now earlier than %s (%s - 5 min.)", stamp,
			now.Add(-MaxSkew).UTC().Format(amzDate), now.UTC().Format(amzDate))}
	}
	if a.date != stamp[:8] {
		return Credential{}, "", &sigError{"InvalidSignatureException", "Credential should be scoped to a valid date matching X-Amz-Date."}
	}
	payload := sha256.Sum256(body)
	payloadHex := hex.EncodeToString(payload[:])
	if v := r.Header.Get("X-Amz-Content-Sha256"); v != "" && v != payloadHex {
		return Credential{}, "", &sigError{"InvalidSignatureException", "The provided X-Amz-Content-Sha256 does not match the body."}
	}
	scope := strings.Join([]string{a.date, a.region, a.service, "aws4_request"}, "/")
	creq := canonicalRequest(r, a.signedHeaders, payloadHex)
	creqHash := sha256.Sum256([]byte(creq))
	toSign := sigAlgorithm + "\n" + stamp + "\n" + scope + "\n" + hex.EncodeToString(creqHash[:])
	key := signingKey(cred.Secret, a.date, a.region, a.service)
	want := hmacSHA256(key, toSign)
	if !hmac.Equal(want, a.signature) {
		return Credential{}, "", &sigError{"InvalidSignatureException",
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
	}
	return cred, a.region, nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

// canonicalRequest is the request's canonical form. The path is the
// escaped path as sent, escaped again (every service but S3 signs it so).
func canonicalRequest(r *http.Request, signed []string, payloadHex string) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	b.WriteString(uriEncode(path, false) + "\n")
	b.WriteString(canonicalQuery(r.URL.RawQuery) + "\n")
	for _, name := range signed {
		var vals []string
		if name == "host" {
			vals = []string{r.Host}
		} else {
			vals = r.Header.Values(name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	b.WriteString("\n" + strings.Join(signed, ";") + "\n" + payloadHex)
	return b.String()
}

// canonicalQuery sorts the query's parameters by name, then value, each
// URI-encoded.
func canonicalQuery(raw string) string {
	q, err := url.ParseQuery(raw)
	if err != nil || len(q) == 0 {
		return ""
	}
	var pairs [][2]string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, [2]string{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1])) })
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p[0] + "=" + p[1]
	}
	return strings.Join(out, "&")
}

// uriEncode escapes every byte but the unreserved characters
// (A-Z a-z 0-9 - _ . ~) and, unless slash is set, '/'.
func uriEncode(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !slash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
