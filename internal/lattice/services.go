package lattice

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
)

func (h *Handler) createService(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Name             string            `json:"name"`
		AuthType         string            `json:"authType"`
		CustomDomainName string            `json:"customDomainName"`
		CertificateArn   string            `json:"certificateArn"`
		Tags             map[string]string `json:"tags"`
		ClientToken      string            `json:"clientToken"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkName("name", req.Name, 3, 40, "svc-"); err != nil {
		return 0, nil, err
	}
	if err := checkAuthType("authType", &req.AuthType); err != nil {
		return 0, nil, err
	}
	if req.CustomDomainName != "" {
		return 0, nil, invalidf("customDomainName", "custom domain names are not supported yet")
	}
	if req.CertificateArn != "" {
		return 0, nil, invalidf("certificateArn", "HTTPS listeners are not supported yet, so no certificate is")
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		s, err := services.create(a, c, req.ClientToken, req.Name, req.Tags, func(m meta) *service {
			return &service{meta: m, guarded: guarded{AuthType: req.AuthType}, Region: c.region,
				DNS: fmt.Sprintf("%s-%s.%s.vpc-lattice-svcs.%s.on.aws", req.Name, m.ID[len("svc-"):], ownerToken(c.owner), c.region)}
		})
		if err != nil {
			return nil, err
		}
		return map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "status": statusActive, "authType": s.AuthType,
			"dnsEntry": DNSEntry{DomainName: s.DNS}}, nil
	})
	return http.StatusCreated, out, err
}

func serviceView(s *service) map[string]any {
	return map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "createdAt": ts(s.CreatedAt), "lastUpdatedAt": ts(s.UpdatedAt),
		"dnsEntry": DNSEntry{DomainName: s.DNS}, "status": statusActive, "authType": s.AuthType}
}

func (h *Handler) getService(ctx context.Context, c *call) (int, any, error) {
	_, s, err := services.find(ctx, h, c.r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, serviceView(s), nil
}

func (h *Handler) listServices(ctx context.Context, c *call) (int, any, error) {
	return services.list(ctx, h, c, func(_ *account, s *service) map[string]any {
		v := serviceView(s)
		delete(v, "authType")
		return v
	})
}

func (h *Handler) updateService(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		AuthType       string `json:"authType"`
		CertificateArn string `json:"certificateArn"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.CertificateArn != "" {
		return 0, nil, invalidf("certificateArn", "HTTPS listeners are not supported yet, so no certificate is")
	}
	return setAuthType(ctx, h, c, services, req.AuthType)
}

func (h *Handler) deleteService(ctx context.Context, c *call) (int, any, error) {
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		s, err := services.own(ctx, h, c, a, c.r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		for _, as := range slices.Sorted(maps.Keys(a.Associations)) {
			if a.Associations[as].ServiceID == s.ID {
				return nil, conflict(resourceService, s.ID, "Service %s is associated with service network %s (%s)", s.ID, a.Associations[as].NetworkID, as)
			}
		}
		delete(a.Services, s.ID)
		return map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "status": statusDeleting}, nil
	})
	return http.StatusOK, out, err
}

// checkAction checks and normalizes an action of service svc: target
// groups named by ID, weights defaulted.
func checkAction(a *account, svc *service, field string, act *RuleAction) error {
	switch {
	case act.Forward != nil && act.FixedResponse != nil:
		return invalidf(field, "exactly one of forward and fixedResponse")
	case act.FixedResponse != nil:
		if sc := act.FixedResponse.StatusCode; sc != 404 && sc != 500 {
			return invalidf(field+".fixedResponse.statusCode", "only 404 and 500 are supported, not %d", sc)
		}
		return nil
	case act.Forward == nil:
		return invalidf(field, "exactly one of forward and fixedResponse is required")
	}
	tgs := act.Forward.TargetGroups
	if len(tgs) < 1 || len(tgs) > maxForwardTargets {
		return invalidf(field+".forward.targetGroups", "must list 1-%d target groups, not %d", maxForwardTargets, len(tgs))
	}
	for i := range tgs {
		f := fmt.Sprintf("%s.forward.targetGroups[%d]", field, i)
		w := &tgs[i]
		id := identifier(w.TargetGroupIdentifier)
		tg := a.TargetGroups[id]
		if tg == nil {
			return notFound(resourceTargetGroup, w.TargetGroupIdentifier)
		}
		w.TargetGroupIdentifier = id
		for _, other := range usedBy(a, id) {
			if other != svc.ID {
				return conflict(resourceTargetGroup, id, "target group %s is used by service %s: a target group serves one service", id, other)
			}
		}
		switch {
		case w.Weight == nil && len(tgs) == 1:
			w.Weight = new(int32)
			*w.Weight = defaultSingleWeight
		case w.Weight == nil:
			return invalidf(f+".weight", "required when forwarding to more than one target group")
		case *w.Weight < 0 || *w.Weight > maxWeight:
			return invalidf(f+".weight", "must be 0-%d, not %d", maxWeight, *w.Weight)
		}
		if slices.IndexFunc(tgs[:i], func(o WeightedTargetGroup) bool { return identifier(o.TargetGroupIdentifier) == id }) >= 0 {
			return invalidf(f+".targetGroupIdentifier", "%s is listed twice", id)
		}
	}
	return nil
}

var (
	pathRE   = regexp.MustCompile(`^/[a-zA-Z0-9@:%_+.~#?&/=-]*$`)
	tokenRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	methodRE = regexp.MustCompile(`^[A-Z]+$`)
)

// checkMatch checks a rule's match.
func checkMatch(field string, m *RuleMatch) error {
	hm := m.HTTPMatch
	if hm == nil {
		return invalidf(field+".httpMatch", "required")
	}
	f := field + ".httpMatch"
	if hm.Method != "" && (len(hm.Method) > 16 || !methodRE.MatchString(hm.Method)) {
		return invalidf(f+".method", "%q is not an HTTP method (upper-case, at most 16 characters)", hm.Method)
	}
	if p := hm.PathMatch; p != nil {
		pf := f + ".pathMatch"
		v := p.Match.Exact
		switch {
		case p.Match.Exact != "" && p.Match.Prefix != "", p.Match.Exact == "" && p.Match.Prefix == "":
			return invalidf(pf+".match", "exactly one of exact and prefix is required")
		case p.Match.Prefix != "":
			v = p.Match.Prefix
		}
		if len(v) > 200 || !pathRE.MatchString(v) {
			return invalidf(pf+".match", "%q must start with '/', be at most 200 characters of [a-zA-Z0-9@:%%_+.~#?&/=-]", v)
		}
		if p.CaseSensitive != nil && !*p.CaseSensitive {
			return invalidf(pf+".caseSensitive", "case-insensitive path matches are not supported yet")
		}
	}
	if len(hm.HeaderMatches) > maxHeaderMatches {
		return invalidf(f+".headerMatches", "at most %d header matches, not %d", maxHeaderMatches, len(hm.HeaderMatches))
	}
	for i, hdr := range hm.HeaderMatches {
		hf := fmt.Sprintf("%s.headerMatches[%d]", f, i)
		if len(hdr.Name) < 1 || len(hdr.Name) > 100 || !tokenRE.MatchString(hdr.Name) {
			return invalidf(hf+".name", "%q is not a header name of 1-100 characters", hdr.Name)
		}
		if hdr.Match.Prefix != "" || hdr.Match.Contains != "" {
			return invalidf(hf+".match", "only exact header matches are supported yet")
		}
		if v := hdr.Match.Exact; len(v) < 1 || len(v) > 200 {
			return invalidf(hf+".match.exact", "must be 1-200 characters")
		}
	}
	return nil
}
