package lattice

import (
	"context"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
)

// Access log subscriptions. In AWS the destination is a CloudWatch Logs
// log group, an S3 bucket or a Firehose delivery stream; here each names
// an access-log sink of the proxies (model.ValidAccessLog): the log
// group's, bucket's or stream's name, which a proxy started with
// --access-log-dir writes to DIR/NAME.log.

const (
	resourceAccessLog = "ACCESS_LOG_SUBSCRIPTION"
	accessLogScope    = "CreateAccessLogSubscription"
	// maxAccessLogs is per network or service: one per destination type,
	// as in Lattice.
	maxAccessLogs = 3
)

// accessLogSub is one subscription of a network or a service.
type accessLogSub struct {
	meta
	ResourceID     string `json:"resourceId"`
	ResourceARN    string `json:"resourceArn"`
	DestinationARN string `json:"destinationArn"`
	LogType        string `json:"serviceNetworkLogType,omitempty"`
}

// destinationARNRE is botocore's AccessLogDestinationArn pattern.
var destinationARNRE = regexp.MustCompile(`^arn(:[a-z0-9]+([.-][a-z0-9]+)*){2}(:([a-z0-9]+([.-][a-z0-9]+)*)?){2}:([^/].*)?$`)

// sinkOf returns the destination type and the sink name a destination
// ARN names, or the ValidationException on destinationArn.
func sinkOf(arn string) (kind, sink string, err error) {
	if len(arn) < 20 || len(arn) > 2048 || !destinationARNRE.MatchString(arn) {
		return "", "", invalidf("destinationArn", "%q is not an ARN of 20-2048 characters", arn)
	}
	parts := strings.SplitN(arn, ":", 6)
	service, resource := parts[2], parts[5]
	switch service {
	case "logs":
		name, ok := strings.CutPrefix(resource, "log-group:")
		if !ok {
			return "", "", invalidf("destinationArn", "a CloudWatch Logs destination is arn:aws:logs:REGION:ACCOUNT:log-group:NAME")
		}
		kind, sink = "CloudWatchLogs", strings.TrimSuffix(name, ":*")
	case "s3":
		kind, sink = "S3", resource
	case "firehose":
		name, ok := strings.CutPrefix(resource, "deliverystream/")
		if !ok {
			return "", "", invalidf("destinationArn", "a Firehose destination is arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME")
		}
		kind, sink = "Firehose", name
	default:
		return "", "", invalidf("destinationArn", "the destination must be a CloudWatch Logs log group, an S3 bucket or a Firehose delivery stream, not %s", service)
	}
	if !model.ValidAccessLog(sink) {
		return "", "", invalidf("destinationArn", "%q cannot name a proxy's access-log file: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", sink)
	}
	return kind, sink, nil
}

// sinksOf returns the sink names of the subscriptions of resource id, in
// ID order, without repeats.
func sinksOf(a *account, id string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(a.AccessLogs)) {
		if s := a.AccessLogs[k]; s.ResourceID == id {
			if _, sink, err := sinkOf(s.DestinationARN); err == nil && !slices.Contains(out, sink) {
				out = append(out, sink)
			}
		}
	}
	return out
}

// checkDestination is the conflict of a subscription of resource id to a
// destination of kind while another (not self) has one of that kind.
func checkDestination(a *account, id, self, kind string) error {
	for _, s := range a.AccessLogs {
		if k, _, _ := sinkOf(s.DestinationARN); s.ResourceID == id && s.ID != self && k == kind {
			return conflict(resourceAccessLog, s.ID, "resource %s already has a %s access log subscription, %s", id, kind, s.ID)
		}
	}
	return nil
}

// pruneAccessLogs forgets the subscriptions of networks and services
// that are gone: they go with their resource.
func pruneAccessLogs(a *account) {
	maps.DeleteFunc(a.AccessLogs, func(_ string, s *accessLogSub) bool {
		return a.Networks[s.ResourceID] == nil && a.Services[s.ResourceID] == nil
	})
}

func accessLogView(s *accessLogSub, full bool) map[string]any {
	v := map[string]any{"id": s.ID, "arn": s.ARN, "resourceId": s.ResourceID, "resourceArn": s.ResourceARN, "destinationArn": s.DestinationARN}
	if s.LogType != "" {
		v["serviceNetworkLogType"] = s.LogType
	}
	if full {
		v["createdAt"], v["lastUpdatedAt"] = ts(s.CreatedAt), ts(s.UpdatedAt)
	}
	return v
}

func (h *Handler) createAccessLog(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		ResourceIdentifier string `json:"resourceIdentifier"`
		DestinationArn     string `json:"destinationArn"`
		LogType            string `json:"serviceNetworkLogType"`
		creation
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if req.ResourceIdentifier == "" {
		return 0, nil, invalidf("resourceIdentifier", "required")
	}
	kind, _, err := sinkOf(req.DestinationArn)
	if err != nil {
		return 0, nil, err
	}
	switch req.LogType {
	case "", "SERVICE":
	case "RESOURCE":
		return 0, nil, invalidf("serviceNetworkLogType", "RESOURCE logs (resource configurations) are not supported; SERVICE is")
	default:
		return 0, nil, invalidf("serviceNetworkLogType", "must be SERVICE or RESOURCE, not %q", req.LogType)
	}
	if err := checkTags(req.Tags); err != nil {
		return 0, nil, err
	}
	out, err := h.mutate(ctx, c, func(a *account) (any, error) {
		id := identifier(req.ResourceIdentifier)
		resARN := ""
		switch {
		case a.Networks[id] != nil:
			resARN = a.Networks[id].ARN
			if req.LogType == "" {
				req.LogType = "SERVICE"
			}
		case a.Services[id] != nil:
			resARN = a.Services[id].ARN
			if req.LogType != "" {
				return nil, invalidf("serviceNetworkLogType", "only for a service network")
			}
		default:
			return nil, h.elsewhere(ctx, c.owner, "RESOURCE", id, func(o *account) bool { return o.Networks[id] != nil || o.Services[id] != nil })
		}
		subID, err := create(a, c, accessLogScope, req.ClientToken, func() (string, error) {
			if err := checkDestination(a, id, "", kind); err != nil {
				return "", err
			}
			return addNew(&a.AccessLogs, resourceAccessLog, maxAccessLogs*(maxNetworks+maxServices), "als-", func(sid string) *accessLogSub {
				return &accessLogSub{meta: newMeta(sid, "", arn(c.region, c.owner, "accesslogsubscription/"+sid), req.Tags),
					ResourceID: id, ResourceARN: resARN, DestinationARN: req.DestinationArn, LogType: req.LogType}
			})
		})
		if err != nil {
			return nil, err
		}
		s, err := madeBy(a.AccessLogs, resourceAccessLog, subID)
		if err != nil {
			return nil, err
		}
		return accessLogView(s, false), nil
	})
	return http.StatusCreated, out, err
}

func (h *Handler) getAccessLog(ctx context.Context, c *call) (int, any, error) {
	return accessLogs.get(ctx, h, c, func(_ *account, s *accessLogSub) map[string]any { return accessLogView(s, true) })
}

func (h *Handler) listAccessLogs(ctx context.Context, c *call) (int, any, error) {
	res := identifier(c.r.URL.Query().Get("resourceIdentifier"))
	if res == "" {
		return 0, nil, invalidf("resourceIdentifier", "required")
	}
	return accessLogs.list(ctx, h, c, func(_ *account, s *accessLogSub) map[string]any {
		if s.ResourceID != res {
			return nil
		}
		return accessLogView(s, true)
	})
}

func (h *Handler) updateAccessLog(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		DestinationArn string `json:"destinationArn"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	kind, _, err := sinkOf(req.DestinationArn)
	if err != nil {
		return 0, nil, err
	}
	out, err := accessLogs.change(ctx, h, c, func(a *account, s *accessLogSub) (any, error) {
		if err := checkDestination(a, s.ResourceID, s.ID, kind); err != nil {
			return nil, err
		}
		s.DestinationARN, s.UpdatedAt = req.DestinationArn, time.Now().UTC()
		v := accessLogView(s, false)
		delete(v, "serviceNetworkLogType")
		return v, nil
	})
	return http.StatusOK, out, err
}

func (h *Handler) deleteAccessLog(ctx context.Context, c *call) (int, any, error) {
	_, err := accessLogs.change(ctx, h, c, func(a *account, s *accessLogSub) (any, error) {
		delete(a.AccessLogs, s.ID)
		return nil, nil
	})
	return http.StatusNoContent, nil, err
}
