package lattice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
)

func (h *Handler) createService(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Name             string `json:"name"`
		AuthType         string `json:"authType"`
		CustomDomainName string `json:"customDomainName"`
		CertificateArn   string `json:"certificateArn"`
		creation
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
	if req.CustomDomainName != "" && !validDomain(req.CustomDomainName) {
		return 0, nil, invalidf("customDomainName", "%q is not a domain name of 3-255 characters (lower-case labels of letters, digits and hyphens)", req.CustomDomainName)
	}
	if _, err := certificateName(req.CertificateArn); err != nil {
		return 0, nil, err
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		s, err := services.create(a, c, req.ClientToken, req.Name, req.Tags, func(m meta) *service {
			return &service{meta: m, guarded: guarded{AuthType: req.AuthType}, Region: c.region,
				DNS:          fmt.Sprintf("%s-%s.%s.vpc-lattice-svcs.%s.on.aws", req.Name, m.ID[len("svc-"):], ownerToken(c.owner), c.region),
				CustomDomain: req.CustomDomainName, CertificateARN: req.CertificateArn}
		})
		if err != nil {
			return nil, err
		}
		v := map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "status": statusActive, "authType": s.AuthType,
			"dnsEntry": DNSEntry{DomainName: s.DNS}}
		addDomain(v, s)
		return v, nil
	})
	return http.StatusCreated, out, err
}

// addDomain adds a service's custom domain name and certificate to its
// view v, when it has them.
func addDomain(v map[string]any, s *service) {
	if s.CustomDomain != "" {
		v["customDomainName"] = s.CustomDomain
	}
	if s.CertificateARN != "" {
		v["certificateArn"] = s.CertificateARN
	}
}

func serviceView(s *service) map[string]any {
	v := map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "createdAt": ts(s.CreatedAt), "lastUpdatedAt": ts(s.UpdatedAt),
		"dnsEntry": DNSEntry{DomainName: s.DNS}, "status": statusActive, "authType": s.AuthType}
	addDomain(v, s)
	return v
}

// validDomain reports whether d may be a service's custom domain name.
func validDomain(d string) bool {
	return len(d) >= 3 && len(d) <= 255 && domainRE.MatchString(d)
}

var (
	domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// certificateARNRE is botocore's CertificateArn pattern (less its
	// empty alternative).
	certificateARNRE = regexp.MustCompile(`^arn(:[a-z0-9]+([.-][a-z0-9]+)*){2}(:([a-z0-9]+([.-][a-z0-9]+)*)?){2}:certificate/([0-9a-z-]+)$`)
)

// certificateName is the model Certificate a certificateArn names: its
// last segment, "arn:aws:acm:REGION:ACCOUNT:certificate/NAME" naming the
// Certificate NAME (written with the Trellis API, or translated from a
// Kubernetes Secret). "" names none.
func certificateName(arn string) (string, error) {
	if arn == "" {
		return "", nil
	}
	if len(arn) > 2048 {
		return "", invalidf("certificateArn", "at most 2048 characters")
	}
	m := certificateARNRE.FindStringSubmatch(arn)
	if m == nil {
		return "", invalidf("certificateArn", "%q is not a certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/NAME)", arn)
	}
	name := m[len(m)-1]
	if len(name) > 253 || name[0] == '-' || name[len(name)-1] == '-' {
		return "", invalidf("certificateArn", "%q is not the name of a Certificate", name)
	}
	return name, nil
}

// checkCertificate checks that the certificate s's certificateArn names
// exists and is owner's, as an HTTPS listener of s needs; without one, the
// error names field.
func (h *Handler) checkCertificate(ctx context.Context, owner string, s *service, field string) error {
	name, err := certificateName(s.CertificateARN)
	if err != nil {
		return err
	}
	if name == "" {
		return invalidf(field, "an HTTPS listener needs the service's certificateArn: Trellis issues no certificate for the generated domain name")
	}
	kv, err := h.st.Get(ctx, model.Key(model.KindCertificate, name))
	if errors.Is(err, store.ErrNotFound) {
		return invalidf("certificateArn", "no Certificate named %s: write it with the Trellis API first", name)
	}
	if err != nil {
		return err
	}
	var m model.Meta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return err
	}
	if m.Owner != owner {
		return accessDenied("Certificate %s is not yours", name)
	}
	return nil
}

func (h *Handler) getService(ctx context.Context, c *call) (int, any, error) {
	return services.get(ctx, h, c, func(_ *account, s *service) map[string]any { return serviceView(s) })
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
		AuthType       string  `json:"authType"`
		CertificateArn *string `json:"certificateArn"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.CertificateArn == nil {
		return setAuthType(ctx, h, c, services, req.AuthType)
	}
	if req.AuthType != "" {
		if err := checkAuthType("authType", &req.AuthType); err != nil {
			return 0, nil, err
		}
	}
	if _, err := certificateName(*req.CertificateArn); err != nil {
		return 0, nil, err
	}
	out, err := services.change(ctx, h, c, func(a *account, s *service) (any, error) {
		s.CertificateARN = *req.CertificateArn
		if req.AuthType != "" {
			s.AuthType = req.AuthType
		}
		for _, l := range s.Listeners {
			if l.Protocol == "HTTPS" {
				if err := h.checkCertificate(ctx, c.owner, s, "certificateArn"); err != nil {
					return nil, err
				}
				break
			}
		}
		s.UpdatedAt = time.Now().UTC()
		v := map[string]any{"id": s.ID, "name": s.Name, "arn": s.ARN, "authType": s.AuthType}
		addDomain(v, s)
		return v, nil
	})
	return http.StatusOK, out, err
}

func (h *Handler) deleteService(ctx context.Context, c *call) (int, any, error) {
	out, err := services.change(ctx, h, c, func(a *account, s *service) (any, error) {
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

// checkAction checks and normalizes an action of a listener of service
// svc speaking protocol: target groups named by ID, weights defaulted.
// A TLS_PASSTHROUGH listener forwards to TCP target groups only, and the
// others to no TCP target group, as in Lattice.
func checkAction(a *account, svc *service, protocol, field string, act *RuleAction) error {
	switch {
	case act.Forward != nil && act.FixedResponse != nil:
		return invalidf(field, "exactly one of forward and fixedResponse")
	case act.FixedResponse != nil && protocol == protocolPassthrough:
		return invalidf(field+".fixedResponse", "a TLS_PASSTHROUGH listener can only forward")
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
		if tcp := tg.Config.Protocol == "TCP"; tcp != (protocol == protocolPassthrough) {
			return invalidf(f+".targetGroupIdentifier", "%s is a %s target group: TCP target groups serve TLS_PASSTHROUGH listeners only, and they no other", id, tg.Config.Protocol)
		}
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
	}
	if len(hm.HeaderMatches) > maxHeaderMatches {
		return invalidf(f+".headerMatches", "at most %d header matches, not %d", maxHeaderMatches, len(hm.HeaderMatches))
	}
	for i, hdr := range hm.HeaderMatches {
		hf := fmt.Sprintf("%s.headerMatches[%d]", f, i)
		if len(hdr.Name) < 1 || len(hdr.Name) > 100 || !tokenRE.MatchString(hdr.Name) {
			return invalidf(hf+".name", "%q is not a header name of 1-100 characters", hdr.Name)
		}
		kind, v, n := hdr.Match.kind()
		if n != 1 {
			return invalidf(hf+".match", "exactly one of exact, prefix and contains is required")
		}
		if len(v) > 200 {
			return invalidf(hf+".match."+kind, "must be 1-200 characters")
		}
	}
	return nil
}
