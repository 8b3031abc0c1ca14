package lattice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ruleUpdate is one member of BatchUpdateRule's rules.
type ruleUpdate struct {
	RuleIdentifier string      `json:"ruleIdentifier"`
	Match          *RuleMatch  `json:"match"`
	Priority       *int32      `json:"priority"`
	Action         *RuleAction `json:"action"`
}

// failure is one member of BatchUpdateRule's unsuccessful.
type failure struct {
	RuleIdentifier string `json:"ruleIdentifier"`
	FailureCode    string `json:"failureCode"`
	FailureMessage string `json:"failureMessage"`
}

func failureOf(id string, err error) failure {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = internal(err)
	}
	msg, _ := ae.body["message"].(string)
	return failure{RuleIdentifier: id, FailureCode: ae.code, FailureMessage: msg}
}

// batchUpdateRule answers BatchUpdateRule: each update is checked alone
// (the rule exists, once in the batch; its match, action and priority
// are valid) and then priorities are checked against what the whole
// batch leaves, so that two rules may swap priorities. An update that
// fails is in unsuccessful and changes nothing; the others are applied
// together.
func (h *Handler) batchUpdateRule(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Rules []ruleUpdate `json:"rules"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if len(req.Rules) == 0 || len(req.Rules) > maxRules {
		return 0, nil, invalidf("rules", "must hold 1-%d rule updates, not %d", maxRules, len(req.Rules))
	}
	for i, u := range req.Rules {
		if u.RuleIdentifier == "" {
			return 0, nil, invalidf(fmt.Sprintf("rules[%d].ruleIdentifier", i), "required")
		}
	}
	out, err := h.changeListener(ctx, c, func(a *account, s *service, l *listener) (any, error) {
		failed := map[int]failure{}
		fail := func(i int, err error) { failed[i] = failureOf(req.Rules[i].RuleIdentifier, err) }
		seen := map[string]int{}
		checked := make([]ruleRequest, len(req.Rules))
		for i, u := range req.Rules {
			id := identifier(u.RuleIdentifier)
			if l.Rules[id] == nil {
				if id == "rule-"+strings.TrimPrefix(l.ID, "listener-") {
					fail(i, invalidf(fmt.Sprintf("rules[%d].ruleIdentifier", i), "the default rule is changed with UpdateListener"))
				} else {
					fail(i, notFound(resourceRule, id))
				}
				continue
			}
			if j, dup := seen[id]; dup {
				fail(i, conflict(resourceRule, id, "rule %s is already rules[%d] of this batch", id, j))
				continue
			}
			seen[id] = i
			r := ruleRequest{Priority: u.Priority, Match: u.Match, Action: u.Action}.copied()
			// Priorities are checked below, against the batch's result.
			if r.Priority != nil {
				if p := *r.Priority; p < 1 || p > maxPriority {
					fail(i, invalidf(fmt.Sprintf("rules[%d].priority", i), "must be 1-%d, not %d", maxPriority, p))
					continue
				}
			}
			noPriority := r
			noPriority.Priority = nil
			if err := checkRule(a, s, l, id, &noPriority); err != nil {
				fail(i, err)
				continue
			}
			checked[i] = noPriority
			checked[i].Priority = r.Priority
		}
		// Drop priority changes that collide with another rule's
		// resulting priority until none do.
		for {
			final := map[string]int32{}
			for id, r := range l.Rules {
				final[id] = r.Priority
			}
			for i, u := range req.Rules {
				if _, bad := failed[i]; !bad && u.Priority != nil {
					final[identifier(u.RuleIdentifier)] = *u.Priority
				}
			}
			holders := map[int32][]string{}
			for id, p := range final {
				holders[p] = append(holders[p], id)
			}
			dropped := false
			for i, u := range req.Rules {
				if _, bad := failed[i]; bad || u.Priority == nil {
					continue
				}
				id := identifier(u.RuleIdentifier)
				if hs := holders[*u.Priority]; len(hs) > 1 {
					other := hs[0]
					if other == id {
						other = hs[1]
					}
					fail(i, conflict(resourceRule, other, "priority %d is also rule %s's after this batch", *u.Priority, other))
					dropped = true
					break
				}
			}
			if !dropped {
				break
			}
		}
		now := time.Now().UTC()
		successful := []map[string]any{}
		unsuccessful := []failure{}
		for i, u := range req.Rules {
			if f, bad := failed[i]; bad {
				unsuccessful = append(unsuccessful, f)
				continue
			}
			r := l.Rules[identifier(u.RuleIdentifier)]
			if m := checked[i].Match; m != nil {
				r.Match = *m
			}
			if act := checked[i].Action; act != nil {
				r.Action = *act
			}
			if p := checked[i].Priority; p != nil {
				r.Priority = *p
			}
			r.UpdatedAt = now
			v := ruleView(r, false)
			delete(v, "createdAt")
			delete(v, "lastUpdatedAt")
			successful = append(successful, v)
		}
		return map[string]any{"successful": successful, "unsuccessful": unsuccessful}, nil
	})
	return http.StatusOK, out, err
}
