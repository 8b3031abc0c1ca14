package lattice

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// Sharing. A network's resource policy is how Lattice (with AWS RAM)
// shares it with other accounts; here it is enforced for one thing: an
// account the policy allows to create service-network service
// associations (or VPC associations) with the network may join it. Its
// owner's cluster is then in the network's AllowedClusters, so that it may
// put services into the network (through the Trellis API too), and its
// key may associate its own services with the network. The policy's
// accounts are the 12-digit IDs of this API's ARNs (accountID), as a
// principal "123456789012" or "arn:aws:iam::123456789012:root"; only the
// owners of the credentials file have one. "*" shares with every one of
// them. A Deny for an account or "*" wins over any Allow.

// shareActions are the actions whose Allow shares a network.
var shareActions = []string{"vpc-lattice:CreateServiceNetworkServiceAssociation", "vpc-lattice:CreateServiceNetworkVpcAssociation"}

// sharedWith returns the owners (among known: account ID → owner) that
// policy doc allows to associate with the network it is attached to,
// sorted, without owner itself.
func sharedWith(doc, owner string, known map[string]string) []string {
	if doc == "" {
		return nil
	}
	var p struct {
		Statement json.RawMessage `json:"Statement"`
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return nil
	}
	var stmts []policyStatement
	if t := bytes.TrimSpace(p.Statement); len(t) > 0 && t[0] == '{' {
		var one policyStatement
		if json.Unmarshal(t, &one) != nil {
			return nil
		}
		stmts = []policyStatement{one}
	} else if json.Unmarshal(t, &stmts) != nil {
		return nil
	}
	allowed, denied := map[string]bool{}, map[string]bool{}
	for _, s := range stmts {
		if !slices.ContainsFunc(shareActions, s.Action.allows) {
			continue
		}
		into := allowed
		if s.Effect == "Deny" {
			into = denied
		}
		for _, acct := range s.accounts(known) {
			into[acct] = true
		}
	}
	var out []string
	for acct := range allowed {
		if o := known[acct]; o != "" && o != owner && !denied[acct] && !denied["*"] {
			out = append(out, o)
		}
	}
	slices.Sort(out)
	return out
}

// policyStatement is what sharedWith reads of a statement.
type policyStatement struct {
	Effect    string          `json:"Effect"`
	Principal json.RawMessage `json:"Principal"`
	Action    stringList      `json:"Action"`
}

// accounts are the account IDs the statement's principal names: every
// known one, and "*", for "*" or {"AWS": "*"}.
func (s policyStatement) accounts(known map[string]string) []string {
	var names stringList
	if json.Unmarshal(s.Principal, &names) != nil {
		var p struct {
			AWS stringList `json:"AWS"`
		}
		if json.Unmarshal(s.Principal, &p) != nil {
			return nil
		}
		names = p.AWS
	}
	var out []string
	for _, n := range names {
		if n == "*" {
			out = append(out, "*")
			for acct := range known {
				out = append(out, acct)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(n, "arn:aws:iam::"); ok {
			n = strings.TrimSuffix(rest, ":root")
		}
		out = append(out, n)
	}
	return out
}

// stringList is an IAM value that is one string or a list of them.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// allows reports whether the list's action patterns ("*", "vpc-lattice:*",
// a trailing "*" prefix) match action.
func (l stringList) allows(action string) bool {
	for _, p := range l {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(strings.ToLower(action), strings.ToLower(prefix)) ||
			strings.EqualFold(p, action) {
			return true
		}
	}
	return false
}

// sharesWith reports whether n's resource policy lets owner associate
// with it.
func (h *Handler) sharesWith(n *network, networkOwner, owner string) bool {
	return slices.Contains(sharedWith(n.ResourcePolicy, networkOwner, h.known), owner)
}
