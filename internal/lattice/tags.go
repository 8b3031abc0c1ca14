package lattice

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"slices"
)

// tagsOf returns the tags of the caller's object with ARN resourceARN,
// nil when it has none of that ARN.
func tagsOf(a *account, resourceARN string) *map[string]string {
	if t := cmp.Or(tagsByARN(a.Networks, resourceARN), tagsByARN(a.TargetGroups, resourceARN),
		tagsByARN(a.Associations, resourceARN), tagsByARN(a.VPCAssociations, resourceARN), tagsByARN(a.AccessLogs, resourceARN)); t != nil {
		return t
	}
	for _, s := range a.Services {
		if s.ARN == resourceARN {
			return &s.Tags
		}
		for _, l := range s.Listeners {
			if l.ARN == resourceARN {
				return &l.Tags
			}
			if t := tagsByARN(l.Rules, resourceARN); t != nil {
				return t
			}
		}
	}
	return nil
}

func (h *Handler) listTags(ctx context.Context, c *call) (int, any, error) {
	all, err := h.load(ctx)
	if err != nil {
		return 0, nil, err
	}
	res := c.r.PathValue("arn")
	for _, a := range all {
		if t := tagsOf(a, res); t != nil {
			tags := *t
			if tags == nil {
				tags = map[string]string{}
			}
			return http.StatusOK, map[string]any{"tags": tags}, nil
		}
	}
	return 0, nil, notFound("RESOURCE", res)
}

func (h *Handler) ownTags(ctx context.Context, c *call, a *account) (*map[string]string, error) {
	res := c.r.PathValue("arn")
	if t := tagsOf(a, res); t != nil {
		return t, nil
	}
	return nil, h.elsewhere(ctx, c.owner, "RESOURCE", res, func(o *account) bool { return tagsOf(o, res) != nil })
}

func (h *Handler) tagResource(ctx context.Context, c *call) (int, any, error) {
	var req struct {
		Tags map[string]string `json:"tags"`
	}
	if err := c.decode(&req); err != nil {
		return 0, nil, err
	}
	if len(req.Tags) == 0 {
		return 0, nil, invalidf("tags", "required")
	}
	return h.changeTags(ctx, c, func(tags map[string]string) (map[string]string, error) {
		merged := map[string]string{}
		maps.Copy(merged, tags)
		maps.Copy(merged, req.Tags)
		return merged, checkTags(merged)
	})
}

func (h *Handler) untagResource(ctx context.Context, c *call) (int, any, error) {
	keys := c.r.URL.Query()["tagKeys"]
	if len(keys) == 0 {
		return 0, nil, invalidf("tagKeys", "required")
	}
	return h.changeTags(ctx, c, func(tags map[string]string) (map[string]string, error) {
		kept := map[string]string{}
		for k, v := range tags {
			if !slices.Contains(keys, k) {
				kept[k] = v
			}
		}
		if len(kept) == 0 {
			kept = nil
		}
		return kept, nil
	})
}

// changeTags answers TagResource and UntagResource: the tags of the
// caller's object with the path's ARN become what change makes of them.
func (h *Handler) changeTags(ctx context.Context, c *call, change func(tags map[string]string) (map[string]string, error)) (int, any, error) {
	_, err := h.mutate(ctx, c, func(a *account) (any, error) {
		t, err := h.ownTags(ctx, c, a)
		if err != nil {
			return nil, err
		}
		changed, err := change(*t)
		if err != nil {
			return nil, err
		}
		*t = changed
		return nil, nil
	})
	return http.StatusOK, map[string]any{}, err
}
