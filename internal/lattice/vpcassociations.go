package lattice

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/model"
)

// A Lattice VPC is a Trellis cluster: vpcIdentifier is "vpc-" and the
// cluster's name (docs/reference/lattice-api.md). Associating it with a
// network allows the cluster to join the network
// (model.ServiceNetwork.AllowedClusters).
const vpcPrefix = "vpc-"

// maxVPCAssociations is Lattice's quota of VPC associations a network.
const maxVPCAssociations = 500

const (
	resourceVPCAssociation = "SERVICE_NETWORK_VPC_ASSOCIATION"
	vpcAssociationScope    = "CreateServiceNetworkVpcAssociation"
	maxSecurityGroups      = 5
)

var securityGroupRE = regexp.MustCompile(`^sg-([0-9a-z]{8}|[0-9a-z]{17})$`)

// vpcAssociation is a cluster allowed to join a network; never updated.
type vpcAssociation struct {
	meta
	NetworkID        string   `json:"networkId"`
	Cluster          string   `json:"cluster"`
	SecurityGroupIDs []string `json:"securityGroupIds,omitempty"`
	PrivateDNS       *bool    `json:"privateDnsEnabled,omitempty"`
}

var vpcAssociations = kind[*vpcAssociation]{typ: resourceVPCAssociation,
	of: func(a *account) *map[string]*vpcAssociation { return &a.VPCAssociations }}

// clusterOfVPC returns the cluster a vpcIdentifier names.
func clusterOfVPC(field, vpc string) (string, error) {
	cluster, ok := strings.CutPrefix(vpc, vpcPrefix)
	if !ok || !model.ValidClusterName(cluster) {
		return "", invalidf(field, "%q must be %q and a cluster name (a VPC is a cluster here)", vpc, vpcPrefix)
	}
	return cluster, nil
}

// allowedClusters is what network id's VPC associations allow, besides
// its owner (always allowed), sorted.
func allowedClusters(a *account, n *network, known map[string]string) []string {
	out := sharedWith(n.ResourcePolicy, a.Owner, known)
	for _, va := range a.VPCAssociations {
		if va.NetworkID == n.ID && va.Cluster != a.Owner && !slices.Contains(out, va.Cluster) {
			out = append(out, va.Cluster)
		}
	}
	slices.Sort(out)
	return out
}

func (h *Handler) createVPCAssociation(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		ServiceNetworkIdentifier string          `json:"serviceNetworkIdentifier"`
		VPCIdentifier            string          `json:"vpcIdentifier"`
		SecurityGroupIDs         []string        `json:"securityGroupIds"`
		PrivateDNSEnabled        *bool           `json:"privateDnsEnabled"`
		DNSOptions               json.RawMessage `json:"dnsOptions"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.ServiceNetworkIdentifier == "" {
		return 0, nil, invalidf("serviceNetworkIdentifier", "required")
	}
	if req.VPCIdentifier == "" {
		return 0, nil, invalidf("vpcIdentifier", "required")
	}
	cluster, err := clusterOfVPC("vpcIdentifier", req.VPCIdentifier)
	if err != nil {
		return 0, nil, err
	}
	if len(req.DNSOptions) > 0 && string(req.DNSOptions) != "null" {
		return 0, nil, invalidf("dnsOptions", "not supported: Trellis serves no private hosted zones")
	}
	if len(req.SecurityGroupIDs) > maxSecurityGroups {
		return 0, nil, invalidf("securityGroupIds", "at most %d, not %d", maxSecurityGroups, len(req.SecurityGroupIDs))
	}
	for i, sg := range req.SecurityGroupIDs {
		if !securityGroupRE.MatchString(sg) {
			return 0, nil, invalidf(fmt.Sprintf("securityGroupIds[%d]", i), "%q is not a security group ID (sg- and 8 or 17 characters)", sg)
		}
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		n, err := networks.own(ctx, h, c, a, req.ServiceNetworkIdentifier)
		if err != nil {
			return nil, err
		}
		id, err := create(a, c, vpcAssociationScope, req.ClientToken, func() (string, error) {
			count := 0
			for _, va := range a.VPCAssociations {
				if va.NetworkID != n.ID {
					continue
				}
				if va.Cluster == cluster {
					return "", conflict(resourceVPCAssociation, va.ID, "VPC %s is already associated with service network %s", req.VPCIdentifier, n.ID)
				}
				count++
			}
			if count >= maxVPCAssociations {
				return "", quota(resourceVPCAssociation, maxVPCAssociations)
			}
			id := newID("snva-")
			va := &vpcAssociation{meta: newMeta(id, "", arn(c.region, c.owner, "servicenetworkvpcassociation/"+id), req.Tags),
				NetworkID: n.ID, Cluster: cluster, SecurityGroupIDs: req.SecurityGroupIDs, PrivateDNS: req.PrivateDNSEnabled}
			put(&a.VPCAssociations, va)
			return id, nil
		})
		if err != nil {
			return nil, err
		}
		va, err := madeBy(a.VPCAssociations, resourceVPCAssociation, id)
		if err != nil {
			return nil, err
		}
		out := map[string]any{"id": va.ID, "arn": va.ARN, "status": statusActive, "createdBy": accountID(c.owner),
			"securityGroupIds": sgList(va.SecurityGroupIDs)}
		if va.PrivateDNS != nil {
			out["privateDnsEnabled"] = *va.PrivateDNS
		}
		return out, nil
	})
	return http.StatusOK, out, err
}

func sgList(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// vpcAssociationView is the Get response; List items are its subset.
func vpcAssociationView(a *account, va *vpcAssociation, full bool) map[string]any {
	n := a.Networks[va.NetworkID]
	out := map[string]any{"id": va.ID, "arn": va.ARN, "status": statusActive, "createdBy": accountID(a.Owner),
		"createdAt": ts(va.CreatedAt), "lastUpdatedAt": ts(va.UpdatedAt), "serviceNetworkId": n.ID, "serviceNetworkName": n.Name,
		"serviceNetworkArn": n.ARN, "vpcId": vpcPrefix + va.Cluster}
	if va.PrivateDNS != nil {
		out["privateDnsEnabled"] = *va.PrivateDNS
	}
	if full {
		out["securityGroupIds"] = sgList(va.SecurityGroupIDs)
	}
	return out
}

func (h *Handler) getVPCAssociation(ctx context.Context, c *call) (int, any, error) {
	all, err := h.load(ctx)
	if err != nil {
		return 0, nil, err
	}
	id := identifier(c.r.PathValue("id"))
	for _, a := range all {
		if va := a.VPCAssociations[id]; va != nil && a.Networks[va.NetworkID] != nil {
			return http.StatusOK, vpcAssociationView(a, va, true), nil
		}
	}
	return 0, nil, notFound(resourceVPCAssociation, id)
}

func (h *Handler) listVPCAssociations(ctx context.Context, c *call) (int, any, error) {
	q := c.r.URL.Query()
	nid, vpc := identifier(q.Get("serviceNetworkIdentifier")), q.Get("vpcIdentifier")
	if vpc != "" {
		if _, err := clusterOfVPC("vpcIdentifier", vpc); err != nil {
			return 0, nil, err
		}
	}
	return vpcAssociations.list(ctx, h, c, func(a *account, va *vpcAssociation) map[string]any {
		n := a.Networks[va.NetworkID]
		if n == nil || (nid != "" && nid != n.ID && nid != n.Name) || (vpc != "" && vpc != vpcPrefix+va.Cluster) {
			return nil
		}
		return vpcAssociationView(a, va, false)
	})
}

func (h *Handler) deleteVPCAssociation(ctx context.Context, c *call) (int, any, error) {
	return vpcAssociations.remove(ctx, h, c, nil)
}

// vpcAssociated is the first (by ID) VPC association of network id, ""
// for none.
func vpcAssociated(a *account, id string) string {
	for _, k := range slices.Sorted(maps.Keys(a.VPCAssociations)) {
		if a.VPCAssociations[k].NetworkID == id {
			return k
		}
	}
	return ""
}
