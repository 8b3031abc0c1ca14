package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A join token lets one component of a new cluster prove, once, that an
// operator admitted the cluster: `trellis cluster add NAME` makes one, and
// the join call exchanges it with a certificate request for the cluster's
// first certificate. Its text is
//
//	trellis-join.<id>.<secret>
//
// The id (8 random bytes, hex) finds the record; the secret (32 random
// bytes, base64url) proves possession. The server keeps only the secret's
// SHA-256, so a copy of the store does not hold usable tokens.
type JoinToken struct {
	ID     string
	Secret string
}

const joinPrefix = "trellis-join."

// NewJoinToken makes a token with fresh random id and secret.
func NewJoinToken() (JoinToken, error) {
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return JoinToken{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return JoinToken{}, err
	}
	return JoinToken{ID: hex.EncodeToString(id[:]), Secret: base64.RawURLEncoding.EncodeToString(secret[:])}, nil
}

// String is the token's text, as an operator hands it to a cluster.
func (t JoinToken) String() string { return joinPrefix + t.ID + "." + t.Secret }

// ErrMalformedToken says a text is not a join token at all.
var ErrMalformedToken = errors.New("not a join token (want trellis-join.<id>.<secret>, as `trellis cluster add` prints it)")

// ParseJoinToken reads a token's text. Surrounding white space is ignored
// (tokens travel through files and environment variables).
func ParseJoinToken(s string) (JoinToken, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), joinPrefix)
	if !ok {
		return JoinToken{}, ErrMalformedToken
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || len(id) != 16 || len(secret) != 43 {
		return JoinToken{}, ErrMalformedToken
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return JoinToken{}, ErrMalformedToken
	}
	if b, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(b) != 32 {
		return JoinToken{}, ErrMalformedToken
	}
	return JoinToken{ID: id, Secret: secret}, nil
}

// SecretHash is what the server stores of a token's secret.
func (t JoinToken) SecretHash() []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// Grant is the server's record of a join token: which cluster it admits,
// until when, and whether it was used.
type Grant struct {
	Cluster    string    `json:"cluster"`
	SecretHash []byte    `json:"secretHash"`
	Expires    time.Time `json:"expires"`
	// Used is when the token was exchanged; a used token is refused.
	Used time.Time `json:"used,omitzero"`
}

// Join errors. Each says what happened and what to do, since the operator
// reading it is setting up a cluster.
var (
	ErrTokenUnknown = errors.New("join token unknown or revoked: make a new one with `trellis cluster add NAME`")
	ErrTokenExpired = errors.New("join token expired: make a new one with `trellis cluster add NAME`")
	ErrTokenUsed    = errors.New("join token already used (each token admits one component once): make a new one with `trellis cluster add NAME`, or renew with the certificate the first exchange gave")
)

// Check says whether t may be exchanged under grant g at now. It compares
// the secret in constant time. A nil grant is an unknown token.
func (g *Grant) Check(t JoinToken, now time.Time) error {
	if g == nil || subtle.ConstantTimeCompare(g.SecretHash, t.SecretHash()) != 1 {
		return ErrTokenUnknown
	}
	if !g.Used.IsZero() {
		return fmt.Errorf("%w (used %s)", ErrTokenUsed, g.Used.UTC().Format(time.RFC3339))
	}
	if !now.Before(g.Expires) {
		return fmt.Errorf("%w (expired %s)", ErrTokenExpired, g.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
