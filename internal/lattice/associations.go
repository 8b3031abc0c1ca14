package lattice

import (
	"context"
	"errors"
	"net/http"
	"time"

	"trellis.dev/trellis/internal/auth"
)

func (h *Handler) createAssociation(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		ServiceIdentifier        string `json:"serviceIdentifier"`
		ServiceNetworkIdentifier string `json:"serviceNetworkIdentifier"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	switch {
	case req.ServiceIdentifier == "":
		return 0, nil, invalidf("serviceIdentifier", "required")
	case req.ServiceNetworkIdentifier == "":
		return 0, nil, invalidf("serviceNetworkIdentifier", "required")
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		s, err := services.own(ctx, h, c, a, req.ServiceIdentifier)
		if err != nil {
			return nil, err
		}
		n, networkOwner, err := h.joinable(ctx, c, a, req.ServiceNetworkIdentifier)
		if err != nil {
			return nil, err
		}
		id, err := create(a, c, associationTokenScpe, req.ClientToken, func() (string, error) {
			for _, as := range a.Associations {
				if as.ServiceID == s.ID && as.NetworkID == n.ID {
					return "", conflict(resourceAssociation, as.ID, "service %s is already associated with service network %s", s.ID, n.ID)
				}
			}
			id := newID("snsa-")
			as := &association{meta: meta{ID: id, ARN: arn(c.region, c.owner, "servicenetworkserviceassociation/"+id), Tags: req.Tags,
				CreatedAt: time.Now().UTC()}, NetworkID: n.ID, ServiceID: s.ID, NetworkOwner: networkOwner}
			put(&a.Associations, as)
			return id, nil
		})
		if err != nil {
			return nil, err
		}
		as := a.Associations[id]
		return map[string]any{"id": as.ID, "arn": as.ARN, "status": statusActive, "createdBy": accountID(c.owner),
			"dnsEntry": DNSEntry{DomainName: a.Services[as.ServiceID].DNS}}, nil
	})
	return http.StatusOK, out, err
}

// joinable returns the network id names that the caller may associate
// its services with: its own, or another owner's (then also returned)
// whose resource policy shares it with the caller (sharing.go).
func (h *Handler) joinable(ctx context.Context, c *call, a *account, id string) (*network, string, error) {
	if n := a.Networks[identifier(id)]; n != nil {
		return n, "", nil
	}
	o, n, err := networks.find(ctx, h, id)
	if err != nil {
		return nil, "", err
	}
	if !h.sharesWith(n, o.Owner, c.owner) {
		return nil, "", accessDenied("service network %s is owned by %q and its resource policy does not share it with account %s", n.ID, o.Owner, accountID(c.owner))
	}
	return n, o.Owner, nil
}

// networkOf is the network of association as of account a, wherever
// it is in all; an empty one when it is gone.
func networkOf(all map[string]*account, a *account, as *association) *network {
	if n := a.Networks[as.NetworkID]; n != nil {
		return n
	}
	if o := all[as.NetworkOwner]; o != nil && o.Networks[as.NetworkID] != nil {
		return o.Networks[as.NetworkID]
	}
	return &network{meta: meta{ID: as.NetworkID}}
}

func associationView(all map[string]*account, a *account, as *association) map[string]any {
	s, n := a.Services[as.ServiceID], networkOf(all, a, as)
	return map[string]any{"id": as.ID, "arn": as.ARN, "status": statusActive, "createdBy": accountID(a.Owner), "createdAt": ts(as.CreatedAt),
		"serviceId": s.ID, "serviceName": s.Name, "serviceArn": s.ARN, "serviceNetworkId": n.ID, "serviceNetworkName": n.Name,
		"serviceNetworkArn": n.ARN, "dnsEntry": DNSEntry{DomainName: s.DNS}}
}

func (h *Handler) getAssociation(ctx context.Context, c *call) (int, any, error) {
	all, err := h.load(ctx)
	if err != nil {
		return 0, nil, err
	}
	id := identifier(c.r.PathValue("id"))
	for _, a := range all {
		if as := a.Associations[id]; as != nil {
			return http.StatusOK, associationView(all, a, as), nil
		}
	}
	return 0, nil, notFound(resourceAssociation, id)
}

func (h *Handler) listAssociations(ctx context.Context, c *call) (int, any, error) {
	q := c.r.URL.Query()
	sid, nid := identifier(q.Get("serviceIdentifier")), identifier(q.Get("serviceNetworkIdentifier"))
	all, err := h.load(ctx)
	if err != nil {
		return 0, nil, err
	}
	return associations.list(ctx, h, c, func(a *account, as *association) map[string]any {
		s, n := a.Services[as.ServiceID], networkOf(all, a, as)
		if (sid != "" && sid != s.ID && sid != s.Name) || (nid != "" && nid != n.ID && nid != n.Name) {
			return nil
		}
		return associationView(all, a, as)
	})
}

func (h *Handler) deleteAssociation(ctx context.Context, c *call) (int, any, error) {
	return associations.remove(ctx, h, c, nil)
}

// changeGuarded runs fn on the auth settings of the caller's service
// network or service that the path's value key names, in one transaction
// of the caller's account, as kind.change does for records.
func (h *Handler) changeGuarded(ctx context.Context, c *call, key string, fn func(g *guarded) (any, error)) (any, error) {
	return h.mutate(ctx, c, func(a *account) (any, error) {
		g, err := h.ownGuarded(ctx, c, a, c.r.PathValue(key))
		if err != nil {
			return nil, err
		}
		return fn(g)
	})
}

// ownGuarded returns the auth type and policies of the caller's service
// network or service whose ID or ARN is id, or the error for one it does
// not have.
func (h *Handler) ownGuarded(ctx context.Context, c *call, a *account, id string) (*guarded, error) {
	id = identifier(id)
	if n := a.Networks[id]; n != nil {
		return &n.guarded, nil
	}
	if s := a.Services[id]; s != nil {
		return &s.guarded, nil
	}
	return nil, h.elsewhere(ctx, c.owner, "RESOURCE", id, func(o *account) bool { return o.Networks[id] != nil || o.Services[id] != nil })
}

func policyState(authType string) string {
	if authType == authIAM {
		return "Active"
	}
	return "Inactive"
}

func (h *Handler) putAuthPolicy(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Policy string `json:"policy"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	switch {
	case req.Policy == "":
		return 0, nil, invalidf("policy", "required")
	case len(req.Policy) > maxPolicyBytes:
		return 0, nil, invalidf("policy", "at most %d bytes, not %d", maxPolicyBytes, len(req.Policy))
	}
	if _, err := auth.Parse([]byte(req.Policy)); err != nil {
		var errs auth.Errors
		if errors.As(err, &errs) && len(errs) > 0 {
			fields := make([]FieldError, len(errs))
			for i, e := range errs {
				fields[i] = FieldError{Name: "policy." + e.Field, Message: e.Detail}
			}
			return 0, nil, invalid(fields...)
		}
		return 0, nil, invalidf("policy", "%v", err)
	}
	out, err := h.changeGuarded(ctx, c, "id", func(g *guarded) (any, error) {
		now := time.Now().UTC()
		if g.Policy == nil {
			g.Policy = &policy{CreatedAt: now}
		}
		g.Policy.Document, g.Policy.UpdatedAt = req.Policy, now
		return map[string]any{"policy": req.Policy, "state": policyState(g.AuthType)}, nil
	})
	return http.StatusOK, out, err
}

func (h *Handler) getAuthPolicy(ctx context.Context, c *call) (int, any, error) {
	id := identifier(c.r.PathValue("id"))
	g, err := h.findGuarded(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	authType, p := g.AuthType, g.Policy
	if p == nil {
		return 0, nil, notFound(resourceAuthPolicy, id)
	}
	return http.StatusOK, map[string]any{"policy": p.Document, "state": policyState(authType),
		"createdAt": ts(p.CreatedAt), "lastUpdatedAt": ts(p.UpdatedAt)}, nil
}

// findGuarded returns the auth type and policies of the service network or
// service id names, whoever owns it; ResourceNotFoundException if none.
func (h *Handler) findGuarded(ctx context.Context, id string) (*guarded, error) {
	all, err := h.load(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range all {
		if n := a.Networks[id]; n != nil {
			return &n.guarded, nil
		}
		if s := a.Services[id]; s != nil {
			return &s.guarded, nil
		}
	}
	return nil, notFound("RESOURCE", id)
}

func (h *Handler) deleteAuthPolicy(ctx context.Context, c *call) (int, any, error) {
	_, err := h.changeGuarded(ctx, c, "id", func(g *guarded) (any, error) {
		g.Policy = nil
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}
