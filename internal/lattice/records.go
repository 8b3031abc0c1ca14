package lattice

import (
	"context"
	"net/http"
	"time"
)

// meta is what every record has; it is inlined in the record's JSON.
type meta struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	ARN       string            `json:"arn"`
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt,omitzero"`
}

// newMeta is a new record's meta, created and updated now.
func newMeta(id, name, arn string, tags map[string]string) meta {
	now := time.Now().UTC()
	return meta{ID: id, Name: name, ARN: arn, Tags: tags, CreatedAt: now, UpdatedAt: now}
}

func (m *meta) core() *meta { return m }

// record is a pointer to one of the record types.
type record interface{ core() *meta }

// named returns the record of m whose ID or name is id.
func named[T record](m map[string]T, id string) (T, bool) {
	for _, r := range m {
		if r.core().ID == id || r.core().Name == id {
			return r, true
		}
	}
	var zero T
	return zero, false
}

// tagsByARN returns the tags of the record of m with ARN resourceARN,
// nil when none has it.
func tagsByARN[T record](m map[string]T, resourceARN string) *map[string]string {
	for _, r := range m {
		if r.core().ARN == resourceARN {
			return &r.core().Tags
		}
	}
	return nil
}

// guarded is what networks and services share: the auth type and the
// auth policy; it is inlined in their JSON.
type guarded struct {
	AuthType string  `json:"authType"`
	Policy   *policy `json:"policy,omitempty"`
	// ResourcePolicy is stored and returned only (resourcepolicy.go).
	ResourcePolicy string `json:"resourcePolicy,omitempty"`
}

func (g *guarded) guard() *guarded { return g }

// guardedRecord is a network or a service.
type guardedRecord interface {
	record
	guard() *guarded
}

// kind is one type of the records an account holds directly.
type kind[T record] struct {
	typ    string // the resource type errors name
	what   string // how a conflict names it
	max    int    // the quota per owner
	scope  string // the scope of creates' client tokens
	prefix string // of IDs
	path   string // of ARNs, before the ID
	of     func(a *account) *map[string]T
}

var (
	networks = kind[*network]{resourceNetwork, "service network", maxNetworks, networkTokenScope, "sn-", "servicenetwork/",
		func(a *account) *map[string]*network { return &a.Networks }}
	services = kind[*service]{resourceService, "service", maxServices, serviceTokenScope, "svc-", "service/",
		func(a *account) *map[string]*service { return &a.Services }}
	targetGroups = kind[*targetGroup]{resourceTargetGroup, "target group", maxTargetGroups, targetGroupScope, "tg-", "targetgroup/",
		func(a *account) *map[string]*targetGroup { return &a.TargetGroups }}
	associations = kind[*association]{typ: resourceAssociation,
		of: func(a *account) *map[string]*association { return &a.Associations }}
	accessLogs = kind[*accessLogSub]{typ: resourceAccessLog,
		of: func(a *account) *map[string]*accessLogSub { return &a.AccessLogs }}
)

// create answers a create of a record named name with a client token:
// the record the token made before, else a new one build makes of its
// meta, when the caller has none of that name and is under its quota.
func (k kind[T]) create(a *account, c *call, token, name string, tags map[string]string, build func(m meta) T) (T, error) {
	id, err := create(a, c, k.scope, token, func() (string, error) {
		if err := k.checkNew(a, name); err != nil {
			return "", err
		}
		return addNew(k.of(a), k.typ, k.max, k.prefix, func(id string) T {
			return build(newMeta(id, name, arn(c.region, c.owner, k.path+id), tags))
		})
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return (*k.of(a))[id], nil
}

// addNew adds the record build makes under a new ID with prefix to *m,
// unless *m holds max records (of resource type typ) already.
func addNew[T record](m *map[string]T, typ string, max int, prefix string, build func(id string) T) (string, error) {
	if len(*m) >= max {
		return "", quota(typ, max)
	}
	id := newID(prefix)
	put(m, build(id))
	return id, nil
}

// madeBy returns the record of m with ID id, which a create made now or
// before; its parent may since have lost it.
func madeBy[T record](m map[string]T, typ, id string) (T, error) {
	r, ok := m[id]
	if !ok {
		return r, notFound(typ, id)
	}
	return r, nil
}

// setAuthType answers UpdateServiceNetwork and UpdateService: the
// caller's record of kind k with the path's ID gets authType.
func setAuthType[T guardedRecord](ctx context.Context, h *Handler, c *call, k kind[T], authType string) (int, any, error) {
	if authType == "" {
		return 0, nil, invalidf("authType", "required")
	}
	if err := checkAuthType("authType", &authType); err != nil {
		return 0, nil, err
	}
	out, err := k.change(ctx, h, c, func(a *account, r T) (any, error) {
		m := r.core()
		r.guard().AuthType, m.UpdatedAt = authType, time.Now().UTC()
		return map[string]any{"id": m.ID, "name": m.Name, "arn": m.ARN, "authType": authType}, nil
	})
	return http.StatusOK, out, err
}

// find finds the record of any owner whose ID, name or ARN is id.
func (k kind[T]) find(ctx context.Context, h *Handler, id string) (*account, T, error) {
	var zero T
	all, err := h.load(ctx)
	if err != nil {
		return nil, zero, err
	}
	id = identifier(id)
	for _, a := range all {
		if r, ok := named(*k.of(a), id); ok {
			return a, r, nil
		}
	}
	return nil, zero, notFound(k.typ, id)
}

// own returns the caller's record whose ID or ARN is id, or the error
// for one it does not have.
func (k kind[T]) own(ctx context.Context, h *Handler, c *call, a *account, id string) (T, error) {
	id = identifier(id)
	if r, ok := (*k.of(a))[id]; ok {
		return r, nil
	}
	var zero T
	return zero, h.elsewhere(ctx, c.owner, k.typ, id, func(o *account) bool { _, ok := (*k.of(o))[id]; return ok })
}

// change runs fn on the caller's record with the path's ID in one
// transaction of the caller's account (Handler.mutate), answering what fn
// returns; the error for a record the caller does not have.
func (k kind[T]) change(ctx context.Context, h *Handler, c *call, fn func(a *account, r T) (any, error)) (any, error) {
	return h.mutate(ctx, c, func(a *account) (any, error) {
		r, err := k.own(ctx, h, c, a, c.r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return fn(a, r)
	})
}

// checkNew is the error for a new record named name: a conflict when the
// caller has one of that name, a quota error when it has its maximum.
func (k kind[T]) checkNew(a *account, name string) error {
	for _, r := range *k.of(a) {
		if r.core().Name == name {
			return conflict(k.typ, r.core().ID, "a %s named %s already exists", k.what, name)
		}
	}
	if len(*k.of(a)) >= k.max {
		return quota(k.typ, k.max)
	}
	return nil
}

// put adds r to *m by its ID, making the map if need be.
func put[T record](m *map[string]T, r T) {
	if *m == nil {
		*m = map[string]T{}
	}
	(*m)[r.core().ID] = r
}

// get answers a Get operation with view's item for the record of any
// owner whose ID, name or ARN the path's id is.
func (k kind[T]) get(ctx context.Context, h *Handler, c *call, view func(a *account, r T) map[string]any) (int, any, error) {
	a, r, err := k.find(ctx, h, c.r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, view(a, r), nil
}

// remove answers a Delete operation: the caller's record with the path's
// ID goes, unless check (when not nil) refuses it.
func (k kind[T]) remove(ctx context.Context, h *Handler, c *call, check func(a *account, r T) error) (int, any, error) {
	out, err := k.change(ctx, h, c, func(a *account, r T) (any, error) {
		if check != nil {
			if err := check(a, r); err != nil {
				return nil, err
			}
		}
		m := r.core()
		delete(*k.of(a), m.ID)
		return map[string]any{"id": m.ID, "arn": m.ARN, "status": statusDeleting}, nil
	})
	return http.StatusOK, out, err
}

// list answers a List operation with the page of view's items for every
// owner's records; view returns nil for a record the filters leave out.
func (k kind[T]) list(ctx context.Context, h *Handler, c *call, view func(a *account, r T) map[string]any) (int, any, error) {
	all, err := h.load(ctx)
	if err != nil {
		return 0, nil, err
	}
	var items []map[string]any
	for _, a := range all {
		for _, r := range *k.of(a) {
			if v := view(a, r); v != nil {
				items = append(items, v)
			}
		}
	}
	return pageOf(c, items)
}

// create answers a create with a client token: the ID the token made
// before, else the ID add makes, remembered under the token.
func create(a *account, c *call, scope, token string, add func() (string, error)) (string, error) {
	id, err := idempotent(a, scope, token, c.body)
	if err != nil || id != "" {
		return id, err
	}
	if id, err = add(); err != nil {
		return "", err
	}
	remember(a, scope, token, c.body, id)
	return id, nil
}
