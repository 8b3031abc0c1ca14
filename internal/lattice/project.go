package lattice

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
)

// denyAll is the policy of a resource whose authType is AWS_IAM and that
// has no auth policy: Lattice then denies every request.
const denyAll = `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}`

func authOf(authType string, p *policy) *model.Auth {
	if authType != "AWS_IAM" {
		return nil
	}
	doc := denyAll
	if p != nil {
		doc = p.Document
	}
	return &model.Auth{Policy: json.RawMessage(doc)}
}

// project returns the model objects an owner's records make, by store
// key (see docs/reference/lattice-api.md); known maps account IDs to
// owners, for the accounts a network's resource policy shares it with.
func project(a *account, known map[string]string) map[string]model.Object {
	out := map[string]model.Object{}
	add := func(o model.Object) { out[model.Key(o.ObjectKind(), o.ObjectMeta().Name)] = o }
	for _, n := range a.Networks {
		add(&model.ServiceNetwork{
			Meta:   model.Meta{Name: n.ID, Owner: a.Owner},
			Mode:   model.ModeServiceNetwork,
			Domain: ownerToken(a.Owner) + ".vpc-lattice-svcs." + n.Region + ".on.aws",
			Auth:   authOf(n.AuthType, n.Policy),
			// The clusters of its VPC associations may join it.
			AllowedClusters: allowedClusters(a, n, known),
			AccessLogs:      sinksOf(a, n.ID),
			Source:          &model.SourceRef{Kind: model.LatticeSourcePrefix + "ServiceNetwork", Name: n.Name},
		})
	}
	for _, as := range a.Associations {
		svc := a.Services[as.ServiceID]
		if svc == nil || a.Networks[as.NetworkID] == nil && as.NetworkOwner == "" {
			continue
		}
		for _, l := range svc.Listeners {
			var rules []model.Rule
			for _, r := range slices.SortedFunc(maps.Values(l.Rules), func(x, y *rule) int { return int(x.Priority - y.Priority) }) {
				rules = append(rules, model.Rule{Name: r.ID, Matches: []model.Match{modelMatch(r.Match)}, Action: modelAction(r.Action)})
			}
			rules = append(rules, model.Rule{Name: l.ID, Action: modelAction(l.DefaultAction)})
			ml := model.Listener{Name: l.ID, Port: l.Port, Protocol: model.Protocol(l.Protocol)}
			if l.Protocol == "HTTPS" {
				// Checked when the listener or the certificateArn was set.
				name, _ := certificateName(svc.CertificateARN)
				ml.Certificates = []string{name}
			}
			var domains []string
			if svc.CustomDomain != "" {
				domains = []string{svc.CustomDomain}
			}
			add(&model.Service{
				Meta:          model.Meta{Name: as.ID + "." + l.ID, Owner: a.Owner},
				Network:       as.NetworkID,
				DNSName:       svc.DNS,
				CustomDomains: domains,
				Listeners:     []model.Listener{ml},
				AccessLogs:    sinksOf(a, svc.ID),
				Rules:         rules,
				// Rules are ranked by priority, the first match answering.
				RulesInOrder: true,
				CreatedAt:    svc.CreatedAt,
				Auth:         authOf(svc.AuthType, svc.Policy),
				Source:       &model.SourceRef{Kind: model.LatticeSourcePrefix + "Service", Name: svc.Name},
			})
		}
	}
	for _, tg := range a.TargetGroups {
		add(modelTargetGroup(a.Owner, tg))
	}
	return out
}

func modelAction(act RuleAction) model.Action {
	if act.FixedResponse != nil {
		return model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: act.FixedResponse.StatusCode}}
	}
	f := &model.ForwardAction{}
	for _, tg := range act.Forward.TargetGroups {
		f.Backends = append(f.Backends, model.WeightedTargetGroup{TargetGroup: tg.TargetGroupIdentifier, Weight: *tg.Weight})
	}
	return model.Action{Forward: f}
}

// modelMatch turns a checked match into the model's. Header values are
// compared case-insensitively unless caseSensitive is true, as Lattice
// does; the model says so with an anchored (?i) expression.
func modelMatch(m RuleMatch) model.Match {
	var out model.Match
	hm := m.HTTPMatch
	if hm == nil {
		return out
	}
	out.Method = hm.Method
	if p := hm.PathMatch; p != nil {
		switch {
		case p.CaseSensitive != nil && !*p.CaseSensitive:
			out.Path = &model.PathMatch{Type: model.PathRegularExpression, Value: caseInsensitivePath(p.Match)}
		case p.Match.Exact != "":
			out.Path = &model.PathMatch{Type: model.PathExact, Value: p.Match.Exact}
		default:
			out.Path = &model.PathMatch{Type: model.PathPrefix, Value: p.Match.Prefix}
		}
	}
	for _, h := range hm.HeaderMatches {
		out.Headers = append(out.Headers, headerMatch(h))
	}
	return out
}

// headerMatch is the model's form of a checked header match. The model's
// expressions match whole values, so a prefix is the quoted prefix and
// anything after it, contains anything either side; (?i) makes it
// case-insensitive, Lattice's default, and (?s) lets "anything" cross a
// line break should a value carry one.
func headerMatch(h HeaderMatch) model.ValueMatch {
	sensitive := h.CaseSensitive != nil && *h.CaseSensitive
	kind, v, _ := h.Match.kind()
	if kind == "exact" && sensitive {
		return model.ValueMatch{Type: model.ValueExact, Name: h.Name, Value: v}
	}
	expr := regexp.QuoteMeta(v)
	switch kind {
	case "prefix":
		expr += ".*"
	case "contains":
		expr = ".*" + expr + ".*"
	}
	flags := "(?s)"
	if !sensitive {
		flags = "(?is)"
	}
	return model.ValueMatch{Type: model.ValueRegularExpression, Name: h.Name, Value: flags + expr}
}

// caseInsensitivePath is the model's expression of a path match with
// caseSensitive false: the exact path, or the prefix matching whole
// segments as a prefix match does, in any case.
func caseInsensitivePath(m PathMatchType) string {
	if m.Exact != "" {
		return "(?i)" + regexp.QuoteMeta(m.Exact)
	}
	p := strings.TrimRight(m.Prefix, "/")
	if p == "" {
		return "/.*"
	}
	return "(?i)" + regexp.QuoteMeta(p) + "(/.*)?"
}

func modelTargetGroup(owner string, tg *targetGroup) *model.TargetGroup {
	c := tg.Config
	out := &model.TargetGroup{
		Meta:            model.Meta{Name: tg.ID, Owner: owner},
		Protocol:        model.Protocol(c.Protocol),
		ProtocolVersion: model.ProtocolVersion(c.ProtocolVersion),
		Source:          &model.SourceRef{Kind: model.LatticeSourcePrefix + "TargetGroup", Name: tg.Name},
	}
	if c.Port != nil {
		out.Port = *c.Port
	}
	if hc := c.HealthCheck; hc != nil {
		out.HealthCheck = model.HealthCheck{
			Enabled: hc.Enabled, Protocol: model.Protocol(hc.Protocol), ProtocolVersion: model.ProtocolVersion(hc.ProtocolVersion),
			Port: deref(hc.Port), Path: hc.Path, IntervalSeconds: deref(hc.HealthCheckIntervalSeconds),
			TimeoutSeconds: deref(hc.HealthCheckTimeoutSeconds), HealthyThresholdCount: deref(hc.HealthyThresholdCount),
			UnhealthyThresholdCount: deref(hc.UnhealthyThresholdCount),
		}
		if hc.Matcher != nil {
			out.HealthCheck.Matcher = hc.Matcher.HTTPCode
		}
	}
	for _, t := range tg.Targets {
		out.Targets = append(out.Targets, model.Target{Address: t.ID, Port: deref(t.Port), Cluster: owner, State: model.TargetActive})
	}
	for _, t := range tg.Draining {
		out.Targets = append(out.Targets, model.Target{Address: t.ID, Port: deref(t.Port), Cluster: owner, State: model.TargetDraining})
	}
	return out
}

// drainTime is how long ListTargets shows a deregistered target DRAINING.
// The proxies send it no new request from the next snapshot on, and never
// cut one in flight, so the time only bounds what is shown (Lattice drains
// for minutes; Terraform's aws_vpclattice_target_group_attachment waits
// for a deregistered target to stop draining).
const drainTime = 10 * time.Second

// pruneDrained forgets the targets of a's groups that finished draining
// by now.
func pruneDrained(a *account, now time.Time) {
	for _, tg := range a.TargetGroups {
		tg.Draining = slices.DeleteFunc(tg.Draining, func(t drainingTarget) bool { return !now.Before(t.Until) })
	}
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// usedBy returns the IDs of the services whose listeners or rules
// forward to target group id.
func usedBy(a *account, id string) []string {
	var out []string
	for _, svc := range a.Services {
		for _, l := range svc.Listeners {
			uses := forwardsTo(l.DefaultAction, id)
			for _, r := range l.Rules {
				uses = uses || forwardsTo(r.Action, id)
			}
			if uses && !slices.Contains(out, svc.ID) {
				out = append(out, svc.ID)
			}
		}
	}
	slices.Sort(out)
	return out
}

func forwardsTo(act RuleAction, id string) bool {
	return act.Forward != nil && slices.ContainsFunc(act.Forward.TargetGroups, func(w WeightedTargetGroup) bool {
		return strings.EqualFold(w.TargetGroupIdentifier, id)
	})
}
