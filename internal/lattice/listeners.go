package lattice

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// protocolPassthrough is the listener protocol that routes TLS by SNI
// without terminating it.
const protocolPassthrough = "TLS_PASSTHROUGH"

func (h *Handler) createListener(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Name          string      `json:"name"`
		Protocol      string      `json:"protocol"`
		Port          *int32      `json:"port"`
		DefaultAction *RuleAction `json:"defaultAction"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkName("name", req.Name, 3, 63, "listener-"); err != nil {
		return 0, nil, err
	}
	port := int32(443)
	switch req.Protocol {
	case "HTTP":
		port = 80
	case "HTTPS", protocolPassthrough:
	case "":
		return 0, nil, invalidf("protocol", "required")
	default:
		return 0, nil, invalidf("protocol", "must be HTTP, HTTPS or TLS_PASSTHROUGH, not %q", req.Protocol)
	}
	if req.Port != nil {
		if *req.Port < 1 || *req.Port > 65535 {
			return 0, nil, invalidf("port", "must be 1-65535, not %d", *req.Port)
		}
		port = *req.Port
	}
	if req.DefaultAction == nil {
		return 0, nil, invalidf("defaultAction", "required")
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		s, err := services.own(ctx, h, c, a, c.r.PathValue("svc"))
		if err != nil {
			return nil, err
		}
		id, err := create(a, c, listenerTokenScope, req.ClientToken, func() (string, error) {
			switch {
			case req.Protocol == "HTTPS":
				if err := h.checkCertificate(ctx, c.owner, s, "protocol"); err != nil {
					return "", err
				}
			case req.Protocol == protocolPassthrough && s.CustomDomain == "":
				return "", invalidf("protocol", "a TLS_PASSTHROUGH listener needs the service's customDomainName: it routes by SNI")
			}
			act := *req.DefaultAction
			if err := checkAction(a, s, req.Protocol, "defaultAction", &act); err != nil {
				return "", err
			}
			for _, l := range s.Listeners {
				switch {
				case l.Name == req.Name:
					return "", conflict(resourceListener, l.ID, "service %s already has a listener named %s", s.ID, req.Name)
				case l.Port == port:
					return "", conflict(resourceListener, l.ID, "service %s already has a listener on port %d", s.ID, port)
				}
			}
			return addNew(&s.Listeners, resourceListener, maxListeners, "listener-", func(id string) *listener {
				return &listener{meta: newMeta(id, req.Name, s.ARN+"/listener/"+id, req.Tags),
					Protocol: req.Protocol, Port: port, DefaultAction: act}
			})
		})
		if err != nil {
			return nil, err
		}
		l, err := madeBy(s.Listeners, resourceListener, id)
		if err != nil {
			return nil, err
		}
		return listenerView(s, l, false), nil
	})
	return http.StatusCreated, out, err
}

func listenerView(s *service, l *listener, summary bool) map[string]any {
	v := map[string]any{"arn": l.ARN, "id": l.ID, "name": l.Name, "protocol": l.Protocol, "port": l.Port,
		"createdAt": ts(l.CreatedAt), "lastUpdatedAt": ts(l.UpdatedAt)}
	if !summary {
		v["serviceArn"], v["serviceId"], v["defaultAction"] = s.ARN, s.ID, l.DefaultAction
	}
	return v
}

// findListener finds a listener of a service of any owner.
func (h *Handler) findListener(ctx context.Context, svcID, id string) (*account, *service, *listener, error) {
	a, s, err := services.find(ctx, h, svcID)
	if err != nil {
		return nil, nil, nil, err
	}
	id = identifier(id)
	for _, l := range s.Listeners {
		if l.ID == id || l.Name == id {
			return a, s, l, nil
		}
	}
	return nil, nil, nil, notFound(resourceListener, id)
}

func (h *Handler) getListener(ctx context.Context, c *call) (int, any, error) {
	_, s, l, err := h.findListener(ctx, c.r.PathValue("svc"), c.r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, listenerView(s, l, false), nil
}

func (h *Handler) listListeners(ctx context.Context, c *call) (int, any, error) {
	_, s, err := services.find(ctx, h, c.r.PathValue("svc"))
	if err != nil {
		return 0, nil, err
	}
	var items []map[string]any
	for _, l := range s.Listeners {
		items = append(items, listenerView(s, l, true))
	}
	return pageOf(c, items)
}

// changeListener runs fn on the caller's listener with the path's IDs
// and its service in one transaction of the caller's account, as
// kind.change does for records.
func (h *Handler) changeListener(ctx context.Context, c *call, fn func(a *account, s *service, l *listener) (any, error)) (any, error) {
	return h.mutate(ctx, c, func(a *account) (any, error) {
		s, l, err := h.ownListener(ctx, c, a)
		if err != nil {
			return nil, err
		}
		return fn(a, s, l)
	})
}

// ownListener returns the caller's listener of its service.
func (h *Handler) ownListener(ctx context.Context, c *call, a *account) (*service, *listener, error) {
	s, err := services.own(ctx, h, c, a, c.r.PathValue("svc"))
	if err != nil {
		return nil, nil, err
	}
	id := identifier(c.r.PathValue("lis"))
	if id == "" {
		id = identifier(c.r.PathValue("id"))
	}
	if l := s.Listeners[id]; l != nil {
		return s, l, nil
	}
	return nil, nil, notFound(resourceListener, id)
}

func (h *Handler) deleteListener(ctx context.Context, c *call) (int, any, error) {
	_, err := h.changeListener(ctx, c, func(a *account, s *service, l *listener) (any, error) {
		delete(s.Listeners, l.ID)
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}

type ruleRequest struct {
	Name     string      `json:"name"`
	Match    *RuleMatch  `json:"match"`
	Priority *int32      `json:"priority"`
	Action   *RuleAction `json:"action"`
	creation
}

// copied is r with a copy of its match and action, which checkRule may
// normalize while the decoded request stays as it was.
func (r ruleRequest) copied() ruleRequest {
	if r.Match != nil {
		m := *r.Match
		r.Match = &m
	}
	if r.Action != nil {
		act := *r.Action
		r.Action = &act
	}
	return r
}

// checkRule checks the members a create requires or an update sets.
func checkRule(a *account, s *service, l *listener, self string, req *ruleRequest) error {
	if l.Protocol == protocolPassthrough {
		return invalidf("listenerIdentifier", "listener %s is TLS_PASSTHROUGH: it has only its default rule", l.ID)
	}
	if req.Priority != nil {
		if p := *req.Priority; p < 1 || p > maxPriority {
			return invalidf("priority", "must be 1-%d, not %d", maxPriority, p)
		}
		for _, r := range l.Rules {
			if r.ID != self && r.Priority == *req.Priority {
				return conflict(resourceRule, r.ID, "priority %d is already used by rule %s of listener %s", r.Priority, r.ID, l.ID)
			}
		}
	}
	if req.Match != nil {
		if err := checkMatch("match", req.Match); err != nil {
			return err
		}
	}
	if req.Action != nil {
		if err := checkAction(a, s, l.Protocol, "action", req.Action); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) createRule(ctx context.Context, c *call) (int, any, error) {
	var req ruleRequest
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkName("name", req.Name, 3, 63, "rule-"); err != nil {
		return 0, nil, err
	}
	for field, missing := range map[string]bool{"match": req.Match == nil, "priority": req.Priority == nil, "action": req.Action == nil} {
		if missing {
			return 0, nil, invalidf(field, "required")
		}
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.changeListener(ctx, c, func(a *account, s *service, l *listener) (any, error) {
		id, err := create(a, c, ruleTokenScope, req.ClientToken, func() (string, error) {
			r := req
			match, act := *req.Match, *req.Action
			r.Match, r.Action = &match, &act
			if err := checkRule(a, s, l, "", &r); err != nil {
				return "", err
			}
			for _, o := range l.Rules {
				if o.Name == req.Name {
					return "", conflict(resourceRule, o.ID, "listener %s already has a rule named %s", l.ID, req.Name)
				}
			}
			return addNew(&l.Rules, resourceRule, maxRules, "rule-", func(id string) *rule {
				return &rule{meta: newMeta(id, req.Name, l.ARN+"/rule/"+id, req.Tags), Priority: *req.Priority, Match: match, Action: act}
			})
		})
		if err != nil {
			return nil, err
		}
		r, err := madeBy(l.Rules, resourceRule, id)
		if err != nil {
			return nil, err
		}
		return ruleView(r, false), nil
	})
	return http.StatusCreated, out, err
}

func ruleView(r *rule, summary bool) map[string]any {
	v := map[string]any{"arn": r.ARN, "id": r.ID, "name": r.Name, "isDefault": false, "priority": r.Priority,
		"createdAt": ts(r.CreatedAt), "lastUpdatedAt": ts(r.UpdatedAt)}
	if !summary {
		v["match"], v["action"] = r.Match, r.Action
	}
	return v
}

func (h *Handler) getRule(ctx context.Context, c *call) (int, any, error) {
	_, _, l, err := h.findListener(ctx, c.r.PathValue("svc"), c.r.PathValue("lis"))
	if err != nil {
		return 0, nil, err
	}
	id := identifier(c.r.PathValue("id"))
	for _, r := range l.Rules {
		if r.ID == id || r.Name == id {
			return http.StatusOK, ruleView(r, false), nil
		}
	}
	return 0, nil, notFound(resourceRule, id)
}

func (h *Handler) listRules(ctx context.Context, c *call) (int, any, error) {
	_, _, l, err := h.findListener(ctx, c.r.PathValue("svc"), c.r.PathValue("lis"))
	if err != nil {
		return 0, nil, err
	}
	var items []map[string]any
	for _, r := range l.Rules {
		items = append(items, ruleView(r, true))
	}
	// The default rule, as Lattice lists it: the listener's default action.
	def := "rule-" + strings.TrimPrefix(l.ID, "listener-")
	items = append(items, map[string]any{"arn": l.ARN + "/rule/" + def, "id": def, "name": "default", "isDefault": true,
		"createdAt": ts(l.CreatedAt), "lastUpdatedAt": ts(l.UpdatedAt)})
	return pageOf(c, items)
}

func (h *Handler) updateRule(ctx context.Context, c *call) (int, any, error) {
	var req ruleRequest
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.Name != "" || req.Tags != nil || req.ClientToken != "" {
		return 0, nil, invalidf("name", "UpdateRule takes match, priority and action only")
	}
	out, err := h.changeListener(ctx, c, func(a *account, s *service, l *listener) (any, error) {
		id := identifier(c.r.PathValue("id"))
		r := l.Rules[id]
		if r == nil {
			return nil, notFound(resourceRule, id)
		}
		u := req.copied()
		if err := checkRule(a, s, l, r.ID, &u); err != nil {
			return nil, err
		}
		if u.Match != nil {
			r.Match = *u.Match
		}
		if u.Action != nil {
			r.Action = *u.Action
		}
		if u.Priority != nil {
			r.Priority = *u.Priority
		}
		r.UpdatedAt = time.Now().UTC()
		v := ruleView(r, false)
		delete(v, "createdAt")
		delete(v, "lastUpdatedAt")
		return v, nil
	})
	return http.StatusOK, out, err
}

func (h *Handler) deleteRule(ctx context.Context, c *call) (int, any, error) {
	_, err := h.changeListener(ctx, c, func(a *account, _ *service, l *listener) (any, error) {
		id := identifier(c.r.PathValue("id"))
		if l.Rules[id] == nil {
			return nil, notFound(resourceRule, id)
		}
		delete(l.Rules, id)
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}

func (h *Handler) updateListener(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		DefaultAction *RuleAction `json:"defaultAction"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.DefaultAction == nil {
		return 0, nil, invalidf("defaultAction", "required")
	}
	out, err := h.changeListener(ctx, c, func(a *account, s *service, l *listener) (any, error) {
		act := *req.DefaultAction
		if err := checkAction(a, s, l.Protocol, "defaultAction", &act); err != nil {
			return nil, err
		}
		l.DefaultAction, l.UpdatedAt = act, time.Now().UTC()
		v := listenerView(s, l, false)
		delete(v, "createdAt")
		delete(v, "lastUpdatedAt")
		return v, nil
	})
	return http.StatusOK, out, err
}
