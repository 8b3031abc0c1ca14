package mcs

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func export(cluster string, age int, ports ...model.ExportPort) *model.ServiceExport {
	return &model.ServiceExport{
		Meta:      model.Meta{Name: model.ExportName(cluster, "shop", "cart"), Owner: cluster},
		Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP,
		ExportedAt: t0.Add(time.Duration(age) * time.Minute), Ports: ports,
		SessionAffinity: "None",
	}
}

func port(name, proto string, n int32) model.ExportPort {
	return model.ExportPort{Name: name, Protocol: proto, Port: n,
		Targets: []model.Target{{Address: "10.0.0.1", Port: 8080, State: model.TargetActive}}}
}

func bare(p model.ExportPort) model.ExportPort { p.Targets = nil; return p }

func TestMergeAgreeing(t *testing.T) {
	a := export("east", 0, port("http", "TCP", 80))
	b := export("west", 1, port("http", "TCP", 80))
	im := Merge([]*model.ServiceExport{b, a})
	if len(im.Conflicts) != 0 {
		t.Errorf("conflicts: %+v", im.Conflicts)
	}
	if want := []model.ExportPort{bare(port("http", "TCP", 80))}; !reflect.DeepEqual(im.Ports, want) {
		t.Errorf("ports %+v, want %+v", im.Ports, want)
	}
	if !reflect.DeepEqual(im.Clusters, []string{"east", "west"}) || im.Type != model.ExportClusterSetIP || im.SessionAffinity != "None" {
		t.Errorf("import %+v", im)
	}
}

// The conformance suite's "union of the constituent service ports and raise
// a conflict": a second cluster exports one more port.
func TestMergeUnionOfPortsRaisesAConflict(t *testing.T) {
	a := export("east", 0, port("http", "TCP", 80))
	b := export("west", 1, port("http", "TCP", 80), port("stcp", "SCTP", 142))
	im := Merge([]*model.ServiceExport{a, b})
	want := []model.ExportPort{bare(port("http", "TCP", 80)), bare(port("stcp", "SCTP", 142))}
	if !reflect.DeepEqual(im.Ports, want) {
		t.Errorf("ports %+v, want %+v", im.Ports, want)
	}
	if im.Reasons() != ReasonPortConflict || !strings.Contains(im.Message(), "1/2 clusters disagree") {
		t.Errorf("conflict %q: %q", im.Reasons(), im.Message())
	}
}

// "with conflicting ports": the same port name with another number. The
// oldest export's port wins, whichever order the exports come in.
func TestMergeConflictingPortsOldestWins(t *testing.T) {
	a := export("east", 5, port("http", "TCP", 81))
	b := export("west", 0, port("http", "TCP", 80))
	for _, order := range [][]*model.ServiceExport{{a, b}, {b, a}} {
		im := Merge(order)
		if want := []model.ExportPort{bare(port("http", "TCP", 80))}; !reflect.DeepEqual(im.Ports, want) {
			t.Errorf("ports %+v, want west's (oldest) %+v", im.Ports, want)
		}
		if im.Reasons() != ReasonPortConflict || !strings.Contains(im.Message(), "west") {
			t.Errorf("conflict %q: %q", im.Reasons(), im.Message())
		}
	}
	// The same number and protocol under another name is the same port.
	c := export("north", 9, port("web", "TCP", 80))
	if im := Merge([]*model.ServiceExport{a, b, c}); len(im.Ports) != 1 || im.Ports[0].Name != "http" {
		t.Errorf("renamed port: %+v", im.Ports)
	}
}

func TestMergeOldestWinsEveryProperty(t *testing.T) {
	old := export("west", 0, port("http", "TCP", 80))
	old.ExportedLabels = map[string]string{"tier": "gold"}
	young := export("east", 3, port("http", "TCP", 80))
	young.Type = model.ExportHeadless
	young.SessionAffinity = "ClientIP"
	young.SessionAffinityTimeout = 60
	young.InternalTrafficPolicy = "Local"
	young.TrafficDistribution = "PreferClose"
	young.ExportedLabels = map[string]string{"tier": "silver"}
	young.ExportedAnnotations = map[string]string{"a": "b"}
	im := Merge([]*model.ServiceExport{young, old})
	if im.Type != model.ExportClusterSetIP || im.SessionAffinity != "None" || im.SessionAffinityTimeout != 0 ||
		im.InternalTrafficPolicy != "" || im.TrafficDistribution != "" || im.Labels["tier"] != "gold" || len(im.Annotations) != 0 {
		t.Errorf("import took a younger export's property: %+v", im)
	}
	want := "TypeConflict,SessionAffinityConflict,SessionAffinityConfigConflict,LabelsConflict,AnnotationsConflict,InternalTrafficPolicyConflict,TrafficDistributionConflict"
	if im.Reasons() != want {
		t.Errorf("reasons %q\nwant    %q", im.Reasons(), want)
	}
	for _, c := range im.Conflicts {
		if !strings.Contains(c.Message, "from oldest export in west, 1/2 clusters disagree") || c.Field == "" {
			t.Errorf("conflict %+v", c)
		}
	}
}

// Every controller must reach the same result from the same exports, in
// whatever order its cache lists them; equal ages are broken by cluster name.
func TestMergeIsDeterministic(t *testing.T) {
	var es []*model.ServiceExport
	for i, c := range []string{"a", "b", "c", "d", "e"} {
		e := export(c, i%2, port("http", "TCP", int32(80+i%3)), port("", "UDP", 53))
		e.Type = []model.ExportType{model.ExportClusterSetIP, model.ExportHeadless}[i%2]
		es = append(es, e)
	}
	want := Merge(es)
	for range 50 {
		rand.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		if got := Merge(es); !reflect.DeepEqual(got, want) {
			t.Fatalf("order changed the result:\n%+v\n%+v", got, want)
		}
	}
	if want.Type != model.ExportClusterSetIP || !strings.Contains(want.Message(), "oldest export in a,") {
		t.Errorf("tie not broken by cluster name: %+v", want)
	}
}

func TestGroup(t *testing.T) {
	a, b := export("east", 0), export("west", 0)
	c := export("east", 0)
	c.Service = "pay"
	g := Group([]*model.ServiceExport{a, b, c})
	if len(g) != 2 || len(g[[2]string{"shop", "cart"}]) != 2 || len(g[[2]string{"shop", "pay"}]) != 1 {
		t.Errorf("groups: %v", g)
	}
}

// An export the control plane has not stamped yet (a controller's own,
// before the control plane holds it) is younger than every stamped one,
// whatever its cluster's name.
func TestMergeUnstampedIsYoungest(t *testing.T) {
	stamped := export("west", 5, port("http", "TCP", 80))
	fresh := export("east", 0, port("http", "TCP", 8080))
	fresh.ExportedAt = time.Time{}
	for _, order := range [][]*model.ServiceExport{{stamped, fresh}, {fresh, stamped}} {
		im := Merge(order)
		if want := []model.ExportPort{bare(port("http", "TCP", 80))}; !reflect.DeepEqual(im.Ports, want) {
			t.Errorf("ports %+v, want west's %+v", im.Ports, want)
		}
		if !strings.Contains(im.Message(), "with west's where they conflict") {
			t.Errorf("conflict message %q does not name west", im.Message())
		}
	}
}

// Served leaves out the exports of a cluster whose admission does not list
// their namespace; clusters without a Cluster object and those allowing
// every namespace keep theirs.
func TestServedFollowsExportNamespaces(t *testing.T) {
	o := &model.Objects{
		Clusters: []model.Cluster{
			{Meta: model.Meta{Name: "east"}, ExportNamespaces: []string{"web"}},
			{Meta: model.Meta{Name: "west"}, ExportNamespaces: []string{model.AllNamespaces}},
			{Meta: model.Meta{Name: "north"}},
		},
		Exports: []model.ServiceExport{*export("east", 0), *export("west", 1), *export("north", 2), *export("south", 3)},
	}
	served, refused := Served(o)
	var got []string
	for _, e := range served {
		got = append(got, e.Owner)
	}
	if want := []string{"west", "north", "south"}; !reflect.DeepEqual(got, want) {
		t.Errorf("served %v, want %v", got, want)
	}
	if len(refused) != 1 || refused[0].Owner != "east" {
		t.Errorf("refused %+v, want east's shop/cart", refused)
	}
}
