package lattice

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
)

func (h *Handler) routes() {
	h.handle("POST /servicenetworks", h.createServiceNetwork)
	h.handle("GET /servicenetworks", h.listServiceNetworks)
	h.handle("GET /servicenetworks/{id}", h.getServiceNetwork)
	h.handle("PATCH /servicenetworks/{id}", h.updateServiceNetwork)
	h.handle("DELETE /servicenetworks/{id}", h.deleteServiceNetwork)

	h.handle("POST /services", h.createService)
	h.handle("GET /services", h.listServices)
	h.handle("GET /services/{id}", h.getService)
	h.handle("PATCH /services/{id}", h.updateService)
	h.handle("DELETE /services/{id}", h.deleteService)

	h.handle("POST /services/{svc}/listeners", h.createListener)
	h.handle("GET /services/{svc}/listeners", h.listListeners)
	h.handle("GET /services/{svc}/listeners/{id}", h.getListener)
	h.handle("PATCH /services/{svc}/listeners/{id}", h.updateListener)
	h.handle("DELETE /services/{svc}/listeners/{id}", h.deleteListener)

	h.handle("POST /services/{svc}/listeners/{lis}/rules", h.createRule)
	h.handle("GET /services/{svc}/listeners/{lis}/rules", h.listRules)
	h.handle("PATCH /services/{svc}/listeners/{lis}/rules", h.batchUpdateRule)
	h.handle("GET /services/{svc}/listeners/{lis}/rules/{id}", h.getRule)
	h.handle("PATCH /services/{svc}/listeners/{lis}/rules/{id}", h.updateRule)
	h.handle("DELETE /services/{svc}/listeners/{lis}/rules/{id}", h.deleteRule)

	h.handle("POST /targetgroups", h.createTargetGroup)
	h.handle("GET /targetgroups", h.listTargetGroups)
	h.handle("GET /targetgroups/{id}", h.getTargetGroup)
	h.handle("PATCH /targetgroups/{id}", h.updateTargetGroup)
	h.handle("DELETE /targetgroups/{id}", h.deleteTargetGroup)
	h.handle("POST /targetgroups/{id}/registertargets", h.registerTargets)
	h.handle("POST /targetgroups/{id}/deregistertargets", h.deregisterTargets)
	h.handle("POST /targetgroups/{id}/listtargets", h.listTargets)

	h.handle("POST /servicenetworkserviceassociations", h.createAssociation)
	h.handle("GET /servicenetworkserviceassociations", h.listAssociations)
	h.handle("GET /servicenetworkserviceassociations/{id}", h.getAssociation)
	h.handle("DELETE /servicenetworkserviceassociations/{id}", h.deleteAssociation)

	h.handle("POST /servicenetworkvpcassociations", h.createVPCAssociation)
	h.handle("GET /servicenetworkvpcassociations", h.listVPCAssociations)
	h.handle("GET /servicenetworkvpcassociations/{id}", h.getVPCAssociation)
	h.handle("DELETE /servicenetworkvpcassociations/{id}", h.deleteVPCAssociation)

	h.handle("PUT /resourcepolicy/{arn}", h.putResourcePolicy)
	h.handle("GET /resourcepolicy/{arn}", h.getResourcePolicy)
	h.handle("DELETE /resourcepolicy/{arn}", h.deleteResourcePolicy)

	h.handle("GET /tags/{arn}", h.listTags)
	h.handle("POST /tags/{arn}", h.tagResource)
	h.handle("DELETE /tags/{arn}", h.untagResource)

	h.handle("POST /accesslogsubscriptions", h.createAccessLog)
	h.handle("GET /accesslogsubscriptions", h.listAccessLogs)
	h.handle("GET /accesslogsubscriptions/{id}", h.getAccessLog)
	h.handle("PATCH /accesslogsubscriptions/{id}", h.updateAccessLog)
	h.handle("DELETE /accesslogsubscriptions/{id}", h.deleteAccessLog)

	h.handle("PUT /authpolicy/{id}", h.putAuthPolicy)
	h.handle("GET /authpolicy/{id}", h.getAuthPolicy)
	h.handle("DELETE /authpolicy/{id}", h.deleteAuthPolicy)
}

// Quotas, Lattice's defaults (docs/reference/lattice-api.md).
const (
	maxNetworks          = 50
	maxServices          = 2000
	maxTargetGroups      = 500
	maxTargets           = 1000
	maxListeners         = 2
	maxRules             = 10
	maxTargetsPerCall    = 100
	maxPolicyBytes       = 10 << 10
	maxHeaderMatches     = 5
	maxForwardTargets    = 10
	maxWeight            = 999
	maxPriority          = 100
	defaultSingleWeight  = 100
	resourceNetwork      = "SERVICE_NETWORK"
	resourceService      = "SERVICE"
	resourceTargetGroup  = "TARGET_GROUP"
	resourceListener     = "LISTENER"
	resourceRule         = "RULE"
	resourceAssociation  = "SERVICE_NETWORK_SERVICE_ASSOCIATION"
	resourceAuthPolicy   = "AUTH_POLICY"
	authNone, authIAM    = "NONE", "AWS_IAM"
	statusActive         = "ACTIVE"
	statusDeleting       = "DELETE_IN_PROGRESS"
	networkTokenScope    = "CreateServiceNetwork"
	serviceTokenScope    = "CreateService"
	targetGroupScope     = "CreateTargetGroup"
	listenerTokenScope   = "CreateListener"
	ruleTokenScope       = "CreateRule"
	associationTokenScpe = "CreateServiceNetworkServiceAssociation"
)

func checkAuthType(field string, t *string) error {
	return oneOf(field, t, authNone, authNone, authIAM)
}

// oneOf checks that *v is one of allowed, setting an empty one to def
// (when def is not empty).
func oneOf(field string, v *string, def string, allowed ...string) error {
	if *v == "" && def != "" {
		*v = def
	}
	if slices.Contains(allowed, *v) {
		return nil
	}
	return invalidf(field, "must be %s or %s, not %q", strings.Join(allowed[:len(allowed)-1], ", "), allowed[len(allowed)-1], *v)
}

// elsewhere is the error for an ID the caller's records lack: access
// denied when another owner has it (listed read-only), else not found.
func (h *Handler) elsewhere(ctx context.Context, owner, typ, id string, has func(*account) bool) error {
	all, err := h.load(ctx)
	if err != nil {
		return err
	}
	for o, a := range all {
		if o != owner && has(a) {
			return accessDenied("%s %s is owned by %q: objects of other owners are read-only", typ, id, o)
		}
	}
	return notFound(typ, id)
}

func (h *Handler) createServiceNetwork(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Name          string `json:"name"`
		AuthType      string `json:"authType"`
		SharingConfig *struct {
			Enabled bool `json:"enabled"`
		} `json:"sharingConfig"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkName("name", req.Name, 3, 63, ""); err != nil {
		return 0, nil, err
	}
	if err := checkAuthType("authType", &req.AuthType); err != nil {
		return 0, nil, err
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		n, err := networks.create(a, c, req.ClientToken, req.Name, req.Tags, func(m meta) *network {
			return &network{meta: m, guarded: guarded{AuthType: req.AuthType}, Region: c.region}
		})
		if err != nil {
			return nil, err
		}
		return map[string]any{"id": n.ID, "name": n.Name, "arn": n.ARN, "authType": n.AuthType}, nil
	})
	return http.StatusCreated, out, err
}

func networkView(a *account, n *network) map[string]any {
	assoc := 0
	for _, as := range a.Associations {
		if as.NetworkID == n.ID {
			assoc++
		}
	}
	return map[string]any{"id": n.ID, "name": n.Name, "arn": n.ARN, "createdAt": ts(n.CreatedAt), "lastUpdatedAt": ts(n.UpdatedAt),
		"authType": n.AuthType, "numberOfAssociatedVPCs": 0, "numberOfAssociatedServices": assoc}
}

func (h *Handler) getServiceNetwork(ctx context.Context, c *call) (int, any, error) {
	return networks.get(ctx, h, c, networkView)
}

func (h *Handler) listServiceNetworks(ctx context.Context, c *call) (int, any, error) {
	return networks.list(ctx, h, c, func(a *account, n *network) map[string]any {
		v := networkView(a, n)
		delete(v, "authType")
		return v
	})
}

// pageOf answers a List operation with the page of items by id.
func pageOf(c *call, items []map[string]any) (int, any, error) {
	if items == nil {
		items = []map[string]any{}
	}
	p, next, err := page(c, items, func(m map[string]any) string { return m["id"].(string) })
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, list{Items: p, NextToken: next}, nil
}

func (h *Handler) updateServiceNetwork(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		AuthType string `json:"authType"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	return setAuthType(ctx, h, c, networks, req.AuthType)
}

func (h *Handler) deleteServiceNetwork(ctx context.Context, c *call) (int, any, error) {
	_, err := networks.change(ctx, h, c, func(a *account, n *network) (any, error) {
		id := n.ID
		for _, as := range slices.Sorted(maps.Keys(a.Associations)) {
			if a.Associations[as].NetworkID == id {
				return nil, conflict(resourceNetwork, id, "ServiceNetwork %s has service(s) associated (%s)", id, as)
			}
		}
		if va := vpcAssociated(a, id); va != "" {
			return nil, conflict(resourceNetwork, id, "ServiceNetwork %s has VPC(s) associated (%s)", id, va)
		}
		// Services of the owners it is shared with.
		all, err := h.load(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range slices.Sorted(maps.Keys(all)) {
			for _, as := range slices.Sorted(maps.Keys(all[o].Associations)) {
				if o != c.owner && all[o].Associations[as].NetworkID == id {
					return nil, conflict(resourceNetwork, id, "ServiceNetwork %s has service(s) of account %s associated (%s)", id, accountID(o), as)
				}
			}
		}
		delete(a.Networks, id)
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}

func checkTags(tags map[string]string) error {
	if len(tags) > 200 {
		return invalidf("tags", "at most 200 tags, not %d", len(tags))
	}
	for k, v := range tags {
		if len(k) < 1 || len(k) > 128 {
			return invalidf("tags", "tag key %q must be 1-128 characters", k)
		}
		if len(v) > 256 {
			return invalidf("tags."+k, "tag value must be at most 256 characters")
		}
	}
	return nil
}
