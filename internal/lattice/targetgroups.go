package lattice

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var vpcRE = regexp.MustCompile(`^vpc-([0-9a-z]{8}|[0-9a-z]{17})$`)

// checkConfig checks and defaults the configuration of a target group of
// type typ (IP or INSTANCE).
func checkConfig(typ string, c *TargetGroupConfig) error {
	if c.Protocol == "" {
		return invalidf("config.protocol", "required for target groups of type %s", typ)
	}
	if typ == "INSTANCE" {
		// An instance's address may be of either family: Lattice has no
		// address type for INSTANCE groups.
		if c.IPAddressType != "" {
			return invalidf("config.ipAddressType", "only for target groups of type IP")
		}
		defer func() { c.IPAddressType = "" }()
	}
	if err := cmp.Or(
		oneOf("config.protocol", &c.Protocol, "", "HTTP", "HTTPS", "TCP"),
		oneOf("config.protocolVersion", &c.ProtocolVersion, "HTTP1", "HTTP1", "HTTP2", "GRPC"),
		oneOf("config.ipAddressType", &c.IPAddressType, "IPV4", "IPV4", "IPV6"),
	); err != nil {
		return err
	}
	if c.VPCIdentifier != "" && !vpcRE.MatchString(c.VPCIdentifier) {
		return invalidf("config.vpcIdentifier", "%q is not a VPC ID (vpc- and 8 or 17 characters)", c.VPCIdentifier)
	}
	if c.LambdaEventStructureVersion != "" {
		return invalidf("config.lambdaEventStructureVersion", "only for target groups of type LAMBDA")
	}
	if c.Port == nil {
		p := int32(80)
		if c.Protocol == "HTTPS" {
			p = 443
		}
		c.Port = &p
	} else if *c.Port < 1 || *c.Port > 65535 {
		return invalidf("config.port", "must be 1-65535, not %d", *c.Port)
	}
	if c.HealthCheck != nil {
		// The model holds Lattice's ranges; its field names differ.
		tg := modelTargetGroup("x", &targetGroup{meta: meta{ID: "tg-x"}, Config: *c})
		if err := tg.Validate(); err != nil {
			return invalidf("config.healthCheck", "%v", err)
		}
	}
	return nil
}

func (h *Handler) createTargetGroup(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Name   string             `json:"name"`
		Type   string             `json:"type"`
		Config *TargetGroupConfig `json:"config"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if err := checkName("name", req.Name, 3, 128, "tg-"); err != nil {
		return 0, nil, err
	}
	switch req.Type {
	case "IP", "INSTANCE":
	case "":
		return 0, nil, invalidf("type", "required")
	case "LAMBDA", "ALB":
		return 0, nil, invalidf("type", "target groups of type %s are not supported; IP and INSTANCE are", req.Type)
	default:
		return 0, nil, invalidf("type", "must be IP, LAMBDA, INSTANCE or ALB, not %q", req.Type)
	}
	if req.Config == nil {
		return 0, nil, invalidf("config", "required for target groups of type %s", req.Type)
	}
	if err := checkConfig(req.Type, req.Config); err != nil {
		return 0, nil, err
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		tg, err := targetGroups.create(a, c, req.ClientToken, req.Name, req.Tags, func(m meta) *targetGroup {
			return &targetGroup{meta: m, Type: req.Type, Config: *req.Config}
		})
		if err != nil {
			return nil, err
		}
		return map[string]any{"id": tg.ID, "arn": tg.ARN, "name": tg.Name, "type": tg.Type, "config": tg.Config, "status": statusActive}, nil
	})
	return http.StatusCreated, out, err
}

func serviceARNs(a *account, id string) []string {
	out := []string{}
	for _, s := range usedBy(a, id) {
		out = append(out, a.Services[s].ARN)
	}
	return out
}

func (h *Handler) getTargetGroup(ctx context.Context, c *call) (int, any, error) {
	return targetGroups.get(ctx, h, c, func(a *account, tg *targetGroup) map[string]any {
		return map[string]any{"id": tg.ID, "arn": tg.ARN, "name": tg.Name, "type": tg.Type, "config": tg.Config,
			"createdAt": ts(tg.CreatedAt), "lastUpdatedAt": ts(tg.UpdatedAt), "status": statusActive, "serviceArns": serviceARNs(a, tg.ID)}
	})
}

func (h *Handler) listTargetGroups(ctx context.Context, c *call) (int, any, error) {
	q := c.r.URL.Query()
	return targetGroups.list(ctx, h, c, func(a *account, tg *targetGroup) map[string]any {
		if (q.Get("targetGroupType") != "" && q.Get("targetGroupType") != tg.Type) ||
			(q.Get("vpcIdentifier") != "" && q.Get("vpcIdentifier") != tg.Config.VPCIdentifier) {
			return nil
		}
		v := map[string]any{"id": tg.ID, "arn": tg.ARN, "name": tg.Name, "type": tg.Type, "createdAt": ts(tg.CreatedAt),
			"lastUpdatedAt": ts(tg.UpdatedAt), "port": tg.Config.Port, "protocol": tg.Config.Protocol,
			"ipAddressType": tg.Config.IPAddressType, "status": statusActive, "serviceArns": serviceARNs(a, tg.ID)}
		if tg.Config.VPCIdentifier != "" {
			v["vpcIdentifier"] = tg.Config.VPCIdentifier
		}
		return v
	})
}

func (h *Handler) deleteTargetGroup(ctx context.Context, c *call) (int, any, error) {
	return targetGroups.remove(ctx, h, c, func(a *account, tg *targetGroup) error {
		if used := usedBy(a, tg.ID); len(used) > 0 {
			return conflict(resourceTargetGroup, tg.ID, "TargetGroup %s is used by a listener or rule of service %s", tg.ID, used[0])
		}
		return nil
	})
}

type targetFailure struct {
	ID             string `json:"id"`
	Port           *int32 `json:"port,omitempty"`
	FailureCode    string `json:"failureCode"`
	FailureMessage string `json:"failureMessage"`
}

// targetsRequest decodes Register/DeregisterTargets' body.
func targetsRequest(c *call, required bool) ([]Target, error) {
	var req struct {
		Targets []Target `json:"targets"`
	}
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if (required && len(req.Targets) < 1) || len(req.Targets) > maxTargetsPerCall {
		return nil, invalidf("targets", "must list 1-%d targets, not %d", maxTargetsPerCall, len(req.Targets))
	}
	return req.Targets, nil
}

// checkTarget returns the target with its port defaulted, or why not.
func checkTarget(tg *targetGroup, t Target) (Target, *targetFailure) {
	fail := func(code, format string, args ...any) *targetFailure {
		return &targetFailure{ID: t.ID, Port: t.Port, FailureCode: code, FailureMessage: fmt.Sprintf(format, args...)}
	}
	ip, err := netip.ParseAddr(t.ID)
	switch {
	case tg.Type == "INSTANCE" && strings.HasPrefix(t.ID, "i-"):
		return t, fail("InvalidTargetId", "%q is an EC2 instance ID: an INSTANCE target here is the instance's IP address in the caller's cluster", t.ID)
	case err != nil || ip.Zone() != "" || ip.String() != t.ID:
		return t, fail("InvalidTargetId", "%q is not an IP address in canonical form", t.ID)
	case tg.Type == "INSTANCE":
	case ip.Is4() != (tg.Config.IPAddressType == "IPV4"):
		return t, fail("InvalidTargetId", "%s is not of the target group's address type %s", t.ID, tg.Config.IPAddressType)
	}
	if t.Port == nil {
		t.Port = tg.Config.Port
	} else if *t.Port < 1 || *t.Port > 65535 {
		return t, fail("InvalidPort", "port %d is not in 1-65535", *t.Port)
	}
	return t, nil
}

// changeTargets answers RegisterTargets and DeregisterTargets: change
// applies each valid target of the request to the caller's target group
// and returns why it failed, if it did.
func (h *Handler) changeTargets(ctx context.Context, c *call, change func(tg *targetGroup, t Target) (*targetFailure, error)) (int, any, error) {
	targets, err := targetsRequest(c, true)
	if err != nil {
		return 0, nil, err
	}
	out, err := targetGroups.change(ctx, h, c, func(a *account, tg *targetGroup) (any, error) {
		ok, failed := []Target{}, []*targetFailure{}
		for _, t := range targets {
			t, f := checkTarget(tg, t)
			if f == nil {
				if f, err = change(tg, t); err != nil {
					return nil, err
				}
			}
			if f != nil {
				failed = append(failed, f)
				continue
			}
			ok = append(ok, t)
		}
		tg.UpdatedAt = time.Now().UTC()
		return map[string]any{"successful": ok, "unsuccessful": failed}, nil
	})
	return http.StatusOK, out, err
}

func sameTarget(t Target) func(Target) bool {
	return func(o Target) bool { return o.ID == t.ID && *o.Port == *t.Port }
}

func (h *Handler) registerTargets(ctx context.Context, c *call) (int, any, error) {
	return h.changeTargets(ctx, c, func(tg *targetGroup, t Target) (*targetFailure, error) {
		if !slices.ContainsFunc(tg.Targets, sameTarget(t)) {
			if len(tg.Targets) >= maxTargets {
				return nil, quota("TARGET", maxTargets)
			}
			tg.Targets = append(tg.Targets, t)
			// A draining target registered again is active again.
			tg.Draining = slices.DeleteFunc(tg.Draining, func(d drainingTarget) bool { return sameTarget(t)(d.Target) })
		}
		return nil, nil
	})
}

func (h *Handler) deregisterTargets(ctx context.Context, c *call) (int, any, error) {
	return h.changeTargets(ctx, c, func(tg *targetGroup, t Target) (*targetFailure, error) {
		i := slices.IndexFunc(tg.Targets, sameTarget(t))
		if i < 0 {
			return &targetFailure{ID: t.ID, Port: t.Port, FailureCode: "TargetNotFound", FailureMessage: "not registered"}, nil
		}
		tg.Targets = slices.Delete(tg.Targets, i, i+1)
		tg.Draining = append(tg.Draining, drainingTarget{Target: t, Until: time.Now().Add(drainTime).UTC()})
		return nil, nil
	})
}

// Reason codes of ListTargets. Lattice documents no list of them; these
// name why the status is what it is, and a HEALTHY target has none.
const (
	reasonNotInUse    = "TargetGroupNotInUse"
	reasonDraining    = "TargetDeregistrationInProgress"
	reasonChecksOff   = "HealthCheckDisabled"
	reasonInitial     = "HealthCheckInProgress"
	reasonFailed      = "HealthCheckFailed"
	reasonNotReported = "HealthStatusNotReported"
)

// listTargets lists targets with their health: a group no listener or
// rule uses is UNUSED; a deregistered target DRAINING; a target of a group
// whose checks are off UNAVAILABLE; any other what the owner's cluster's
// proxies report of their checks (server.TargetGroupHealth), or UNAVAILABLE
// with reason HealthStatusNotReported while no proxy has reported it.
func (h *Handler) listTargets(ctx context.Context, c *call) (int, any, error) {
	filter, err := targetsRequest(c, false)
	if err != nil {
		return 0, nil, err
	}
	a, tg, err := targetGroups.find(ctx, h, c.r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	mtg := modelTargetGroup(a.Owner, tg)
	checked := *mtg.HealthCheck.Defaulted(mtg.Protocol, mtg.ProtocolVersion).Enabled
	unused := len(usedBy(a, tg.ID)) == 0
	var reported map[string]string
	if checked && !unused {
		reported, err = h.cfg.Server.TargetGroupHealth(ctx, a.Owner, tg.ID)
		if err != nil {
			return 0, nil, err
		}
	}
	now := time.Now()
	var items []map[string]any
	add := func(t Target, status, reason string) {
		if len(filter) > 0 && !slices.ContainsFunc(filter, func(f Target) bool { return f.ID == t.ID && (f.Port == nil || *f.Port == *t.Port) }) {
			return
		}
		item := map[string]any{"id": t.ID, "port": *t.Port, "status": status}
		if reason != "" {
			item["reasonCode"] = reason
		}
		items = append(items, item)
	}
	for _, t := range tg.Targets {
		switch {
		case unused:
			add(t, "UNUSED", reasonNotInUse)
		case !checked:
			add(t, "UNAVAILABLE", reasonChecksOff)
		default:
			status := reported[net.JoinHostPort(t.ID, strconv.Itoa(int(*t.Port)))]
			switch status {
			case "":
				add(t, "UNAVAILABLE", reasonNotReported)
			case "HEALTHY":
				add(t, status, "")
			case "UNHEALTHY":
				add(t, status, reasonFailed)
			case "INITIAL":
				add(t, status, reasonInitial)
			default: // the proxy does not check it (yet)
				add(t, "UNAVAILABLE", reasonNotReported)
			}
		}
	}
	for _, t := range tg.Draining {
		if now.Before(t.Until) {
			add(t.Target, "DRAINING", reasonDraining)
		}
	}
	if items == nil {
		items = []map[string]any{}
	}
	p, next, err := page(c, items, func(m map[string]any) string { return fmt.Sprintf("%s/%05d", m["id"], m["port"]) })
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, list{Items: p, NextToken: next}, nil
}

func (h *Handler) updateTargetGroup(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		HealthCheck *HealthCheckConfig `json:"healthCheck"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.HealthCheck == nil {
		return 0, nil, invalidf("healthCheck", "required")
	}
	out, err := targetGroups.change(ctx, h, c, func(a *account, tg *targetGroup) (any, error) {
		cfg := tg.Config
		cfg.HealthCheck = req.HealthCheck
		if err := checkConfig(tg.Type, &cfg); err != nil {
			return nil, err
		}
		tg.Config, tg.UpdatedAt = cfg, time.Now().UTC()
		return map[string]any{"id": tg.ID, "arn": tg.ARN, "name": tg.Name, "type": tg.Type, "config": tg.Config, "status": statusActive}, nil
	})
	return http.StatusOK, out, err
}
