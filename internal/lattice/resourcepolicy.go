package lattice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"unicode/utf8"
)

// Resource policies (Lattice's sharing of a network or a service with
// other accounts) are stored and returned, never enforced: who may use a
// network is its VPC associations (allowedClusters), and who may call a
// service its auth policy.

// maxResourcePolicyChars is the model's PolicyString maximum.
const maxResourcePolicyChars = 10000

const resourceResourcePolicy = "RESOURCE_POLICY"

// checkResourcePolicy checks that doc is an IAM-shaped policy: a JSON
// object whose Statement is one statement or a non-empty list of them,
// each with Effect Allow or Deny.
func checkResourcePolicy(doc string) error {
	switch n := utf8.RuneCountInString(doc); {
	case len(bytes.TrimSpace([]byte(doc))) == 0:
		return invalidf("policy", "required")
	case n > maxResourcePolicyChars:
		return invalidf("policy", "at most %d characters, not %d", maxResourcePolicyChars, n)
	}
	var p struct {
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return invalidf("policy", "not a JSON object: %v", err)
	}
	var stmts []map[string]json.RawMessage
	const field = "policy.Statement"
	list := false
	switch t := bytes.TrimSpace(p.Statement); {
	case len(t) == 0 || string(t) == "null":
		return invalidf(field, "required")
	case t[0] == '{':
		var one map[string]json.RawMessage
		if err := json.Unmarshal(t, &one); err != nil {
			return invalidf(field, "%v", err)
		}
		stmts = append(stmts, one)
	default:
		if err := json.Unmarshal(t, &stmts); err != nil {
			return invalidf(field, "must be a statement or a list of statements: %v", err)
		}
		if len(stmts) == 0 {
			return invalidf(field, "must not be empty")
		}
		list = true
	}
	for i, s := range stmts {
		f := field
		if list {
			f = fmt.Sprintf("%s[%d]", field, i)
		}
		var effect string
		if err := json.Unmarshal(s["Effect"], &effect); err != nil || (effect != "Allow" && effect != "Deny") {
			return invalidf(f+".Effect", "must be Allow or Deny")
		}
	}
	return nil
}

func (h *Handler) putResourcePolicy(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Policy string `json:"policy"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkResourcePolicy(req.Policy); err != nil {
		return 0, nil, err
	}
	_, err := h.changeGuarded(ctx, c, "arn", func(g *guarded) (any, error) {
		g.ResourcePolicy = req.Policy
		return nil, nil
	})
	return http.StatusOK, map[string]any{}, err
}

func (h *Handler) getResourcePolicy(ctx context.Context, c *call) (int, any, error) {
	id := identifier(c.r.PathValue("arn"))
	g, err := h.findGuarded(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	if g.ResourcePolicy == "" {
		return 0, nil, notFound(resourceResourcePolicy, id)
	}
	return http.StatusOK, map[string]any{"policy": g.ResourcePolicy}, nil
}

func (h *Handler) deleteResourcePolicy(ctx context.Context, c *call) (int, any, error) {
	_, err := h.changeGuarded(ctx, c, "arn", func(g *guarded) (any, error) {
		g.ResourcePolicy = ""
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}
