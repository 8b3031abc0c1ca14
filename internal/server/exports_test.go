package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// In these tests east is cluster A, the victim, and west is cluster B, a
// compromised cluster writing through the API with its real certificate.

// cartExport is cluster's export of namespace ns's Service cart on port,
// claiming to have been exported at at.
func cartExport(cluster, ns string, port int32, at time.Time) *model.ServiceExport {
	return &model.ServiceExport{
		Meta: model.Meta{Name: model.ExportName(cluster, ns, "cart")}, Namespace: ns, Service: "cart",
		Type: model.ExportClusterSetIP, ExportedAt: at,
		Ports: []model.ExportPort{{Name: "http", Protocol: "TCP", Port: port,
			Targets: []model.Target{{Address: "10.0.0.1", Port: 8080, Cluster: cluster, State: model.TargetActive}}}},
	}
}

// storedExports is what the control plane holds and serves, as every
// controller and proxy sees it: the exports and admissions it lists, with
// mcs.Served applied.
func storedExports(t *testing.T, c *client.Client) (served, refused []*model.ServiceExport) {
	t.Helper()
	var o model.Objects
	for _, k := range []model.Kind{model.KindServiceExport, model.KindCluster} {
		objs, _, err := c.List(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			o.Add(obj)
		}
	}
	return mcs.Served(&o)
}

// Forged seniority: west claims its export of east's shop/cart is from
// 1970, through every write call, to win the merge's conflicts. The
// control plane stamps when it first stored each export and keeps that
// stamp, so east's export stays the oldest and its port wins.
func TestForgedExportSeniorityIsIgnored(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, east := p.Join(t, "east")
	_, west := p.Join(t, "west")
	epoch := time.Unix(0, 0).UTC()

	a := cartExport("east", "shop", 80, time.Time{})
	before := time.Now()
	if err := east.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a.ExportedAt.Before(before.Add(-time.Second)) || a.ExportedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("east's export stamped %s, want about now (%s)", a.ExportedAt, before)
	}
	eastStamp := a.ExportedAt

	writes := map[string]func(e *model.ServiceExport) error{
		"put": func(e *model.ServiceExport) error { return west.Put(ctx, e) },
		"apply": func(e *model.ServiceExport) error {
			_, err := west.Apply(ctx, &model.Objects{Exports: []model.ServiceExport{*e}})
			return err
		},
		"txn": func(e *model.ServiceExport) error {
			_, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Exports: []model.ServiceExport{*e}}})
			return err
		},
	}
	var westStamp time.Time
	for _, how := range []string{"put", "apply", "txn"} {
		// Each write changes the port, so that the store's record changes.
		b := cartExport("west", "shop", 8000+int32(len(how)), epoch)
		if err := writes[how](b); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		got := &model.ServiceExport{Meta: model.Meta{Name: b.Name}}
		if err := west.Get(ctx, got); err != nil {
			t.Fatal(err)
		}
		if !got.ExportedAt.After(eastStamp) {
			t.Errorf("%s: west's export stored with exportedAt %s, not after east's %s", how, got.ExportedAt, eastStamp)
		}
		if !westStamp.IsZero() && !got.ExportedAt.Equal(westStamp) {
			t.Errorf("%s: west's stamp moved from %s to %s on an update", how, westStamp, got.ExportedAt)
		}
		westStamp = got.ExportedAt
		served, _ := storedExports(t, east)
		im := mcs.Merge(served)
		// Both name their port http: the older export's number stays.
		if len(im.Ports) != 1 || im.Ports[0].Port != 80 ||
			!strings.Contains(im.Message(), "with east's where they conflict") {
			t.Errorf("%s: merged ports %+v, conflicts %q; want east's (the oldest) to win", how, im.Ports, im.Message())
		}
	}

	// East's updates keep its stamp too, whatever it sends.
	a = cartExport("east", "shop", 80, epoch.Add(time.Hour))
	a.Ports[0].Targets[0].Address = "10.0.0.9"
	if err := east.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	if !a.ExportedAt.Equal(eastStamp) {
		t.Errorf("east's update stored exportedAt %s, want its first stamp %s", a.ExportedAt, eastStamp)
	}
	// An export deleted and written again is a new export: a new stamp.
	if err := west.Delete(ctx, &model.ServiceExport{Meta: model.Meta{Name: model.ExportName("west", "shop", "cart")}}); err != nil {
		t.Fatal(err)
	}
	b := cartExport("west", "shop", 8080, epoch)
	if err := west.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	if !b.ExportedAt.After(westStamp) {
		t.Errorf("west's export written again stamped %s, want after %s", b.ExportedAt, westStamp)
	}
}

// Joining any service: an administrator limits west to exporting from
// namespace web. West's writes of an export elsewhere are refused, naming
// the namespace and the cluster, however made; its export stored before
// the list narrowed stops being served; widening the list serves it again.
func TestExportNamespacesLimitACluster(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, east := p.Join(t, "east")
	_, west := p.Join(t, "west")
	if err := east.Put(ctx, cartExport("east", "shop", 80, time.Time{})); err != nil {
		t.Fatal(err)
	}
	if err := west.Put(ctx, cartExport("west", "shop", 80, time.Time{})); err != nil {
		t.Fatalf("west exporting before any limit: %v", err)
	}
	clusters, err := p.admin.Clusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		if !slices.Equal(c.ExportNamespaces, []string{model.AllNamespaces}) {
			t.Errorf("cluster %s admitted with export namespaces %v, want [*]", c.Name, c.ExportNamespaces)
		}
	}

	// Only an administrator narrows the list; a cluster cannot widen its
	// own admission.
	if _, err := west.SetCluster(ctx, "west", api.SetClusterRequest{ExportNamespaces: []string{"*"}}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west setting its own export namespaces: %v", err)
	}
	if err := west.Put(ctx, &model.Cluster{Meta: model.Meta{Name: "west", Owner: model.ControlPlaneOwner}, Added: time.Now(), ExportNamespaces: []string{"*"}}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west writing its own admission: %v", err)
	}
	set, err := p.admin.SetCluster(ctx, "west", api.SetClusterRequest{ExportNamespaces: []string{"web"}})
	if err != nil || !slices.Equal(set.ExportNamespaces, []string{"web"}) {
		t.Fatalf("set west's export namespaces: %+v, %v", set, err)
	}

	// West's export of shop/cart, stored before, is no longer served.
	served, refused := storedExports(t, east)
	if len(served) != 1 || served[0].Owner != "east" || len(refused) != 1 || refused[0].Owner != "west" {
		t.Errorf("after narrowing: served %d (first %+v), refused %d; want east's served and west's refused", len(served), served, len(refused))
	}

	// Every write of an export outside web is refused.
	outside := cartExport("west", "shop", 81, time.Time{})
	for how, write := range map[string]func() error{
		"put": func() error { return west.Put(ctx, outside) },
		"apply": func() error {
			_, err := west.Apply(ctx, &model.Objects{Exports: []model.ServiceExport{*outside}})
			return err
		},
		"txn": func() error {
			_, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Exports: []model.ServiceExport{*outside}}})
			return err
		},
	} {
		err := write()
		if apiStatus(err) != http.StatusForbidden || !strings.Contains(err.Error(), `namespace "shop"`) || !strings.Contains(err.Error(), `cluster "west"`) {
			t.Errorf("%s of an export outside west's namespaces: %v", how, err)
		}
		if f := fieldsOf(err); len(f) != 1 || !strings.HasSuffix(f[0], "namespace") {
			t.Errorf("%s: fields %v, want the export's namespace", how, f)
		}
	}
	// Inside web it may, and it may delete what it has outside.
	if err := west.Put(ctx, cartExport("west", "web", 80, time.Time{})); err != nil {
		t.Errorf("west exporting from web: %v", err)
	}
	// East, without a limit, still exports anywhere.
	if err := east.Put(ctx, cartExport("east", "web", 80, time.Time{})); err != nil {
		t.Errorf("east exporting from web: %v", err)
	}

	// Widening the list serves west's shop export again.
	if _, err := p.admin.SetCluster(ctx, "west", api.SetClusterRequest{ExportNamespaces: []string{"web", "shop"}}); err != nil {
		t.Fatal(err)
	}
	if _, refused := storedExports(t, east); len(refused) != 0 {
		t.Errorf("after widening, refused %+v", refused)
	}
	if err := west.Delete(ctx, &model.ServiceExport{Meta: model.Meta{Name: model.ExportName("west", "shop", "cart")}}); err != nil {
		t.Errorf("west deleting its shop export: %v", err)
	}
}

// Bad export namespaces get a 422 naming the field; a cluster not admitted
// a 404; admission with a list sets it, and admitting again with one
// replaces it.
func TestExportNamespacesAdministration(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	many := make([]string, model.MaxExportNamespaces+1)
	for i := range many {
		many[i] = "ns-" + strings.Repeat("a", i%40) + "x"
	}
	for _, bad := range []struct {
		list  []string
		field string
	}{
		{[]string{"Shop"}, "exportNamespaces[0]"},
		{[]string{"shop", "*"}, "exportNamespaces[1]"},
		{[]string{"shop", "shop"}, "exportNamespaces[1]"},
		{[]string{""}, "exportNamespaces[0]"},
		{many, "exportNamespaces"},
	} {
		_, err := p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "north", ExportNamespaces: bad.list})
		if apiStatus(err) != http.StatusUnprocessableEntity || !slices.Contains(fieldsOf(err), bad.field) {
			t.Errorf("add with %q: %v (fields %v), want 422 naming %s", bad.list, err, fieldsOf(err), bad.field)
		}
		if _, err := p.admin.SetCluster(ctx, "north", api.SetClusterRequest{ExportNamespaces: bad.list}); apiStatus(err) != http.StatusUnprocessableEntity {
			t.Errorf("set with %q: %v, want 422", bad.list, err)
		}
	}
	if _, err := p.admin.SetCluster(ctx, "north", api.SetClusterRequest{}); apiStatus(err) != http.StatusUnprocessableEntity || !slices.Contains(fieldsOf(err), "exportNamespaces") {
		t.Errorf("set without a list: %v", err)
	}
	if _, err := p.admin.SetCluster(ctx, "north", api.SetClusterRequest{ExportNamespaces: []string{"web"}}); apiStatus(err) != http.StatusNotFound {
		t.Errorf("set of a cluster not admitted: %v", err)
	}

	exports := func() []string {
		t.Helper()
		c := &model.Cluster{Meta: model.Meta{Name: "north"}}
		if err := p.east.Get(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c.ExportNamespaces
	}
	if _, err := p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "north", ExportNamespaces: []string{"shop", "web"}}); err != nil {
		t.Fatal(err)
	}
	if got := exports(); !slices.Equal(got, []string{"shop", "web"}) {
		t.Errorf("admitted with %v, want [shop web]", got)
	}
	// Admitting again for a new token keeps the list unless one is given.
	if _, err := p.admin.AddCluster(ctx, "north", 0); err != nil {
		t.Fatal(err)
	}
	if got := exports(); !slices.Equal(got, []string{"shop", "web"}) {
		t.Errorf("after a second add without a list: %v", got)
	}
	if _, err := p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "north", ExportNamespaces: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	if got := exports(); !slices.Equal(got, []string{"*"}) {
		t.Errorf("after a second add with [*]: %v", got)
	}
}
