// Package lattice serves the Amazon VPC Lattice control-plane REST API
// (botocore's vpc-lattice 2022-11-30 model, a subset: see
// docs/reference/lattice-api.md) over the control plane's store, so that
// `aws vpc-lattice` and Terraform's aws_vpclattice_* resources manage
// Trellis service networks.
//
// It owns Signature Version 4 verification, the REST routes and JSON
// shapes, Lattice's IDs, ARNs, errors and limits, and its own records
// (one document per owner, outside the model's keys), which it projects
// into model objects. It must not write the model except through
// server.Server.Commit, whose ownership and association checks hold for
// it as for every other writer, and it knows nothing of the data plane.
package lattice

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store"
)

// recordPrefix is where the owners' records live, outside the model's "/".
const recordPrefix = "lattice/owner/"

// maxBody bounds a request body; the largest the model allows (an auth
// policy of 36,864 characters, 100 targets) fits.
const maxBody = 256 << 10

// Config configures a Handler.
type Config struct {
	// Server is the control plane the model objects are written through.
	Server *server.Server
	// Credentials maps access key IDs to their secrets and owners.
	Credentials map[string]Credential
	// Now is the clock signatures are checked against (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Handler serves the Lattice API.
type Handler struct {
	cfg Config
	st  store.Store
	mux *http.ServeMux
	// known maps the account IDs of the credentials' owners to the owners.
	known map[string]string
}

// call is one authenticated request.
type call struct {
	r      *http.Request
	body   []byte
	owner  string
	region string
}

// op answers one operation: the success status and the response body.
type op func(ctx context.Context, c *call) (int, any, error)

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, st: cfg.Server.Store(), mux: http.NewServeMux(), known: map[string]string{}}
	for _, c := range cfg.Credentials {
		h.known[accountID(c.Owner)] = c.Owner
	}
	h.routes()
	return h
}

func (h *Handler) handle(pattern string, fn op) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, invalidf("body", "larger than %d bytes", maxBody))
			return
		}
		cred, region, err := verify(r, body, func(k string) (Credential, bool) {
			c, ok := h.cfg.Credentials[k]
			return c, ok
		}, h.cfg.Now())
		if err != nil {
			// AWS answers a malformed signature 400 and every other
			// refusal 403.
			var se *sigError
			errors.As(err, &se)
			status := http.StatusForbidden
			if se.code == "IncompleteSignatureException" {
				status = http.StatusBadRequest
			}
			writeError(w, &apiError{status, se.code, map[string]any{"message": se.message}})
			return
		}
		status, out, err := fn(r.Context(), &call{r: r, body: body, owner: cred.Owner, region: region})
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = internal(err)
			}
			if ae.status >= 500 {
				h.cfg.Logger.Error("lattice", "pattern", pattern, "err", err)
			}
			writeError(w, ae)
			return
		}
		writeJSON(w, status, out)
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeError(w, &apiError{http.StatusNotFound, "UnknownOperationException",
			map[string]any{"message": fmt.Sprintf("no operation %s %s", r.Method, r.URL.Path)}})
		return
	}
	h.mux.ServeHTTP(w, r)
}

// decode decodes the body strictly into v: an unknown member is a
// ValidationException naming it.
func (c *call) decode(v any) error {
	if len(bytes.TrimSpace(c.body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(c.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return cannotParse(err)
	}
	return nil
}

// load reads every owner's records.
func (h *Handler) load(ctx context.Context) (map[string]*account, error) {
	kvs, _, err := h.st.List(ctx, recordPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string]*account{}
	for _, kv := range kvs {
		a := &account{}
		if err := json.Unmarshal(kv.Value, a); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		out[a.Owner] = a
	}
	return out, nil
}

// loadOwn reads owner's records and their revision (0: none yet).
func (h *Handler) loadOwn(ctx context.Context, owner string) (*account, int64, error) {
	kv, err := h.st.Get(ctx, recordPrefix+owner)
	if errors.Is(err, store.ErrNotFound) {
		return &account{Owner: owner}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	a := &account{}
	if err := json.Unmarshal(kv.Value, a); err != nil {
		return nil, 0, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return a, kv.ModRevision, nil
}

// maxAttempts bounds how often a change is redone after another change
// of the same owner's records won the race.
const maxAttempts = 20

// mutate applies fn to the caller's records and commits them and the
// model objects they project to in one transaction. fn's result is the
// response; fn may run more than once.
func (h *Handler) mutate(ctx context.Context, c *call, fn func(a *account) (any, error)) (any, error) {
	for range maxAttempts {
		a, rev, err := h.loadOwn(ctx, c.owner)
		if err != nil {
			return nil, err
		}
		before := project(a, h.known)
		out, err := fn(a)
		if err != nil {
			return nil, err
		}
		pruneDrained(a, time.Now())
		pruneAccessLogs(a)
		after := project(a, h.known)
		var puts []model.Object
		for _, key := range slices.Sorted(maps.Keys(after)) {
			puts = append(puts, after[key])
		}
		var deletes []string
		for _, key := range slices.Sorted(maps.Keys(before)) {
			if _, keep := after[key]; !keep {
				deletes = append(deletes, key)
			}
		}
		doc, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		ifRev := rev
		if rev == 0 {
			ifRev = store.MustNotExist
		}
		_, err = h.cfg.Server.Commit(ctx, c.owner, puts, deletes,
			[]store.Op{{Type: store.OpPut, Key: recordPrefix + c.owner, Value: doc, IfRevision: ifRev}})
		switch {
		case errors.Is(err, store.ErrConflict):
			continue
		case err == nil:
			return out, nil
		case server.HTTPStatus(err) == http.StatusForbidden:
			return nil, accessDenied("%v", err)
		case server.HTTPStatus(err) == http.StatusUnprocessableEntity:
			return nil, invalidf("model", "%v", err)
		default:
			return nil, err
		}
	}
	return nil, throttled()
}

// newID is prefix and 17 random lower-case hex digits, as Lattice's IDs.
func newID(prefix string) string {
	var b [9]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])[:17]
}

// accountID is the 12-digit account an owner's ARNs name: derived from
// the owner, so stable across servers and restarts.
func accountID(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	n := new(big.Int).SetBytes(sum[:])
	return fmt.Sprintf("%012d", new(big.Int).Mod(n, big.NewInt(1e12)))
}

// ownerToken is the 7 hex digits of an owner's generated DNS names.
func ownerToken(owner string) string {
	sum := sha256.Sum256([]byte("dns:" + owner))
	return hex.EncodeToString(sum[:])[:7]
}

func arn(region, owner, resource string) string {
	return fmt.Sprintf("arn:aws:vpc-lattice:%s:%s:%s", region, accountID(owner), resource)
}

// identifier reduces an ID or an ARN to the ID: the ARN's last segment.
func identifier(s string) string {
	if strings.HasPrefix(s, "arn:") {
		return s[strings.LastIndex(s, "/")+1:]
	}
	return s
}

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// checkName checks a Lattice resource name: lower-case letters, digits
// and single inner hyphens, min-max long, not starting with reserved.
func checkName(field, name string, minLen, maxLen int, reserved string) error {
	switch {
	case name == "":
		return invalidf(field, "required")
	case len(name) < minLen || len(name) > maxLen:
		return invalidf(field, "must be %d-%d characters, not %d", minLen, maxLen, len(name))
	case !nameRE.MatchString(name):
		return invalidf(field, "%q must be lower-case letters, digits and hyphens, with no leading, trailing or double hyphen", name)
	case reserved != "" && strings.HasPrefix(name, reserved):
		return invalidf(field, "must not start with %q", reserved)
	}
	return nil
}

var clientTokenRE = regexp.MustCompile(`^[!-~]{1,64}$`)

// idempotent returns the ID a create with this client token made before,
// "" for a new token; the same token with another request is a conflict.
func idempotent(a *account, opName, token string, body []byte) (string, error) {
	if token == "" {
		return "", nil
	}
	if !clientTokenRE.MatchString(token) {
		return "", invalidf("clientToken", "must be 1-64 printable ASCII characters")
	}
	sum := sha256.Sum256(body)
	rec := a.Tokens[opName+"/"+token]
	switch {
	case rec == nil:
		return "", nil
	case rec.Request != hex.EncodeToString(sum[:]):
		return "", conflict(opName, rec.ID, "client token %q was used with other parameters", token)
	}
	return rec.ID, nil
}

func remember(a *account, opName, token string, body []byte, id string) {
	if token == "" {
		return
	}
	if a.Tokens == nil {
		a.Tokens = map[string]*idempotency{}
	}
	if len(a.Tokens) >= maxClientTokens {
		oldest := ""
		for k, t := range a.Tokens {
			if oldest == "" || t.At.Before(a.Tokens[oldest].At) || (t.At.Equal(a.Tokens[oldest].At) && k < oldest) {
				oldest = k
			}
		}
		delete(a.Tokens, oldest)
	}
	sum := sha256.Sum256(body)
	a.Tokens[opName+"/"+token] = &idempotency{Request: hex.EncodeToString(sum[:]), ID: id, At: time.Now().UTC()}
}

// maxClientTokens bounds the client tokens an owner's records remember:
// past it, a new one forgets the oldest, so that a caller cannot grow
// the records without bound with tokens alone.
const maxClientTokens = 1000

// page returns the page of items (sorted by key) that maxResults and
// nextToken select, and the next token.
func page[T any](c *call, items []T, key func(T) string) ([]T, string, error) {
	q := c.r.URL.Query()
	limit := 100
	if v := q.Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return nil, "", invalidf("maxResults", "must be 1-100")
		}
		limit = n
	}
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	start := 0
	if tok := q.Get("nextToken"); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(tok) > 2048 {
			return nil, "", invalidf("nextToken", "not a token this API returned")
		}
		start, _ = slices.BinarySearchFunc(items, string(after), func(it T, s string) int {
			if key(it) <= s {
				return -1
			}
			return 1
		})
	}
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte(key(items[end-1])))
	}
	return items[start:end], next, nil
}

// list is a List operation's response.
type list struct {
	Items     any    `json:"items"`
	NextToken string `json:"nextToken,omitempty"`
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// creation is the members every create request carries: the new
// resource's tags (checked with checkTags) and the client token that
// makes the create idempotent (see create).
type creation struct {
	Tags        map[string]string `json:"tags"`
	ClientToken string            `json:"clientToken"`
}
