package translate_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// object is one Kubernetes object of the random test's world.
type object interface {
	runtime.Object
	metav1.Object
}

// pool is the objects of some golden inputs, by kind/namespace/name; one
// key defined differently by several inputs has a variant each.
type pool struct {
	keys     []string
	variants map[string][]object
	// services are the Services' names, for relabelling EndpointSlices.
	services []string
}

// loadCases reads every golden input's objects.
func loadCases(t *testing.T) [][]object {
	t.Helper()
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("golden inputs: %v", err)
	}
	var cases [][]object
	for _, path := range inputs {
		cases = append(cases, inputObjects(parseFile(t, path)))
	}
	return cases
}

// newPool makes the pool of the objects of cases.
func newPool(cases ...[]object) *pool {
	p := &pool{variants: map[string][]object{}}
	for _, objs := range cases {
		for _, o := range objs {
			k := objectKey(o)
			if _, ok := p.variants[k]; !ok {
				p.keys = append(p.keys, k)
			}
			p.variants[k] = append(p.variants[k], o)
			if _, ok := o.(*corev1.Service); ok && !slices.Contains(p.services, o.GetName()) {
				p.services = append(p.services, o.GetName())
			}
		}
	}
	slices.Sort(p.keys)
	if len(p.services) == 0 {
		p.services = []string{"none"}
	}
	return p
}

func objectKey(o object) string {
	return fmt.Sprintf("%T/%s/%s", o, o.GetNamespace(), o.GetName())
}

// inputObjects returns pointers to every object of in.
func inputObjects(in *translate.Input) []object {
	var out []object
	add := func(o object) { out = append(out, o) }
	for i := range in.GatewayClasses {
		add(&in.GatewayClasses[i])
	}
	for i := range in.Gateways {
		add(&in.Gateways[i])
	}
	for i := range in.HTTPRoutes {
		add(&in.HTTPRoutes[i])
	}
	for i := range in.GRPCRoutes {
		add(&in.GRPCRoutes[i])
	}
	for i := range in.TLSRoutes {
		add(&in.TLSRoutes[i])
	}
	for i := range in.ReferenceGrants {
		add(&in.ReferenceGrants[i])
	}
	for i := range in.AuthPolicies {
		add(&in.AuthPolicies[i])
	}
	for i := range in.TargetGroupPolicies {
		add(&in.TargetGroupPolicies[i])
	}
	for i := range in.Services {
		add(&in.Services[i])
	}
	for i := range in.EndpointSlices {
		add(&in.EndpointSlices[i])
	}
	for i := range in.ServiceImports {
		add(&in.ServiceImports[i])
	}
	for i := range in.Secrets {
		add(&in.Secrets[i])
	}
	for i := range in.Pods {
		add(&in.Pods[i])
	}
	for i := range in.Namespaces {
		add(&in.Namespaces[i])
	}
	return out
}

// buildInput makes an Input of objs, in the order given.
func buildInput(objs []object) *translate.Input {
	in := &translate.Input{Cluster: "local"}
	for _, o := range objs {
		switch o := o.(type) {
		case *gatewayv1.GatewayClass:
			in.GatewayClasses = append(in.GatewayClasses, *o)
		case *gatewayv1.Gateway:
			in.Gateways = append(in.Gateways, *o)
		case *gatewayv1.HTTPRoute:
			in.HTTPRoutes = append(in.HTTPRoutes, *o)
		case *gatewayv1.GRPCRoute:
			in.GRPCRoutes = append(in.GRPCRoutes, *o)
		case *gatewayv1.TLSRoute:
			in.TLSRoutes = append(in.TLSRoutes, *o)
		case *gatewayv1.ReferenceGrant:
			in.ReferenceGrants = append(in.ReferenceGrants, *o)
		case *v1alpha1.AuthPolicy:
			in.AuthPolicies = append(in.AuthPolicies, *o)
		case *v1alpha1.TargetGroupPolicy:
			in.TargetGroupPolicies = append(in.TargetGroupPolicies, *o)
		case *corev1.Service:
			in.Services = append(in.Services, *o)
		case *discoveryv1.EndpointSlice:
			in.EndpointSlices = append(in.EndpointSlices, *o)
		case *mcsv1beta1.ServiceImport:
			in.ServiceImports = append(in.ServiceImports, *o)
		case *corev1.Secret:
			in.Secrets = append(in.Secrets, *o)
		case *corev1.Pod:
			in.Pods = append(in.Pods, *o)
		case *corev1.Namespace:
			in.Namespaces = append(in.Namespaces, *o)
		default:
			panic(fmt.Sprintf("unexpected %T", o))
		}
	}
	return in
}

// mutate changes o in a way its kind's translation notices (or, for kinds
// without one here, only a label, which it does not).
func mutate(r *rand.Rand, p *pool, o object) {
	hostnames := []gatewayv1.Hostname{"a.example.com", "*.example.com", "b.example.org", "Bad_Host", "web.example.com"}
	switch o := o.(type) {
	case *gatewayv1.HTTPRoute:
		switch r.IntN(3) {
		case 0:
			o.Spec.Hostnames = nil
			for _, h := range hostnames {
				if r.IntN(3) == 0 {
					o.Spec.Hostnames = append(o.Spec.Hostnames, h)
				}
			}
		case 1:
			for i := range o.Spec.Rules {
				for j := range o.Spec.Rules[i].BackendRefs {
					b := &o.Spec.Rules[i].BackendRefs[j]
					b.Name = gatewayv1.ObjectName(p.services[r.IntN(len(p.services))])
					port := gatewayv1.PortNumber([]int{80, 8080, 9000}[r.IntN(3)])
					b.Port = &port
				}
			}
		default:
			for i := range o.Spec.ParentRefs {
				if r.IntN(2) == 0 {
					o.Spec.ParentRefs[i].SectionName = nil
				}
			}
		}
	case *discoveryv1.EndpointSlice:
		if r.IntN(2) == 0 {
			o.Labels[discoveryv1.LabelServiceName] = p.services[r.IntN(len(p.services))]
		} else if len(o.Endpoints) > 0 {
			o.Endpoints = o.Endpoints[1:]
		}
	case *corev1.Service:
		if r.IntN(2) == 0 && len(o.Spec.Ports) > 0 {
			o.Spec.Ports = o.Spec.Ports[:len(o.Spec.Ports)-1]
		} else {
			o.Spec.Type = corev1.ServiceTypeExternalName
		}
	case *v1alpha1.TargetGroupPolicy:
		// Retargeted, made valid or invalid (an interval of 3), or
		// older or younger: each moves which policy a Service takes.
		switch r.IntN(4) {
		case 0:
			if len(o.Spec.TargetRefs) > 0 {
				o.Spec.TargetRefs[r.IntN(len(o.Spec.TargetRefs))].Name = gatewayv1.ObjectName(p.services[r.IntN(len(p.services))])
			}
		case 1:
			o.Spec.HealthCheck = &v1alpha1.HealthCheckPolicy{IntervalSeconds: ptr(int32(3 + r.IntN(300)))}
		case 2:
			o.Spec.HealthCheck = &v1alpha1.HealthCheckPolicy{IntervalSeconds: ptr(int32(3))}
		default:
			o.CreationTimestamp = metav1.NewTime(time.Date(2025, 1, 1+r.IntN(60), 0, 0, 0, 0, time.UTC))
		}
	case *v1alpha1.AuthPolicy:
		// Retargeted onto a Gateway or route of the pool (which another
		// policy may hold), made older or younger, or its document made
		// valid or invalid.
		switch r.IntN(3) {
		case 0:
			var targets []string
			for _, k := range p.keys {
				if strings.HasPrefix(k, "*v1.Gateway/") || strings.HasPrefix(k, "*v1.HTTPRoute/") || strings.HasPrefix(k, "*v1.GRPCRoute/") {
					targets = append(targets, k)
				}
			}
			if len(targets) > 0 && len(o.Spec.TargetRefs) > 0 {
				parts := strings.Split(targets[r.IntN(len(targets))], "/") // *v1.Kind, namespace, name
				tr := &o.Spec.TargetRefs[r.IntN(len(o.Spec.TargetRefs))]
				tr.Group, tr.Kind, tr.Name = gatewayv1.GroupName, gatewayv1.Kind(strings.TrimPrefix(parts[0], "*v1.")), gatewayv1.ObjectName(parts[2])
			}
		case 1:
			o.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1+r.IntN(6), 0, 0, 0, 0, time.UTC))
		default:
			o.Spec.Policy.Raw = []byte([]string{`{"Statement":[{"Effect":"Maybe"}]}`, `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`}[r.IntN(2)])
		}
	case *gatewayv1.ReferenceGrant:
		for i := range o.Spec.To {
			if o.Spec.To[i].Name == nil {
				o.Spec.To[i].Name = ptr(gatewayv1.ObjectName("nothing"))
			} else {
				o.Spec.To[i].Name = nil
			}
		}
	default:
		l := o.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l["mutated"] = strconv.Itoa(r.IntN(100))
		o.SetLabels(l)
	}
}

func ptr[T any](v T) *T { return &v }

// TestIncrementalMatchesTranslate applies random sequences of changes to a
// world made of every golden input's objects (adding, modifying and
// deleting objects of every kind, including those whose effect crosses
// objects: a ReferenceGrant that makes a backend resolvable, a Gateway
// whose routes detach, two routes or Services that claim one name) and
// checks after every step that Incremental's output is Translate's, and
// that every object its Changed leaves out is the one of the output last
// acknowledged.
func TestIncrementalMatchesTranslate(t *testing.T) {
	cases := loadCases(t)
	seeds, steps := 200, 60
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 1 {
				// The output's lists patched by merging, as after a
				// change of thousands of routes, rather than in place.
				defer translate.SetPatchInPlace(0)()
			}
			r := rand.New(rand.NewPCG(uint64(seed), 15))
			// A world of the objects of one to three golden inputs, so
			// that objects that act on each other meet often; the whole
			// pool every tenth seed.
			var p *pool
			if seed%10 == 9 {
				p = newPool(cases...)
			} else {
				picked := make([][]object, 1+r.IntN(3))
				for i := range picked {
					picked[i] = cases[r.IntN(len(cases))]
				}
				p = newPool(picked...)
			}
			version := 0
			state := map[string]object{}
			put := func(k string, o object) {
				version++
				o = o.DeepCopyObject().(object)
				o.SetResourceVersion(strconv.Itoa(version))
				state[k] = o
			}
			for _, k := range p.keys {
				if r.IntN(2) == 0 {
					vs := p.variants[k]
					put(k, vs[r.IntN(len(vs))])
				}
			}
			var x translate.Incremental
			var acked, last *translate.Output
			full := false // a change since the last acknowledgement translated everything
			for step := range steps {
				var what string
				if step > 0 {
					// One change, as an event brings, or (a step in four)
					// several at once, as a reconcile after a burst does.
					n := 1
					if r.IntN(4) == 0 {
						n += 1 + r.IntN(5)
					}
					whats := make([]string, n)
					for i := range whats {
						whats[i] = change(r, p, state, put)
					}
					what = strings.Join(whats, ", ")
				}
				objs := make([]object, 0, len(state))
				for _, k := range p.keys {
					if o, ok := state[k]; ok {
						objs = append(objs, o)
					}
				}
				// In a stable order (as providers give it) or any.
				if r.IntN(2) == 0 {
					r.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
				}
				in := buildInput(objs)
				got := x.Translate(in)
				want := translate.Translate(in)
				changed, retranslated, remade := got.Changed, got.Retranslated, got.RetranslatedPolicies
				got.Changed, got.Retranslated, got.RetranslatedPolicies = nil, nil, nil
				if changed != nil && last != nil {
					checkRetranslated(t, step, what, last, want, retranslated)
					checkPoliciesRemade(t, step, what, last, want, remade)
				}
				last = want
				if !reflect.DeepEqual(got, want) {
					g, _ := json.MarshalIndent(got, "", " ")
					w, _ := json.MarshalIndent(want, "", " ")
					t.Fatalf("step %d (%s): incremental output differs from a full translation:\n%s", step, what, diffLines(string(g), string(w)))
				}
				if acked != nil && changed != nil {
					checkChanged(t, step, what, acked, want, changed)
				}
				full = full || step == 0 || fullChange(what)
				if changed == nil && !full {
					t.Errorf("step %d (%s): Changed is nil after changes that translate only part", step, what)
				}
				if r.IntN(4) != 0 {
					x.Acknowledge()
					acked, full = want, false
				}
			}
		})
	}
}

// fullChange reports whether a step's change may make Incremental
// translate everything, so that Changed is unknown.
func fullChange(what string) bool {
	for _, kind := range []string{".GatewayClass/", ".Gateway/", ".Secret/", ".Namespace/", ".ReferenceGrant/"} {
		if strings.Contains(what, kind) {
			return true
		}
	}
	return false
}

// change makes one random change to state and describes it.
func change(r *rand.Rand, p *pool, state map[string]object, put func(string, object)) string {
	k := p.keys[r.IntN(len(p.keys))]
	cur, present := state[k]
	vs := p.variants[k]
	switch {
	case !present:
		put(k, vs[r.IntN(len(vs))])
		return "add " + k
	case r.IntN(3) == 0:
		delete(state, k)
		return "delete " + k
	case len(vs) > 1 && r.IntN(2) == 0:
		put(k, vs[r.IntN(len(vs))])
		return "replace " + k
	}
	o := cur.DeepCopyObject().(object)
	mutate(r, p, o)
	put(k, o)
	return "modify " + k
}

// checkChanged checks that every object of out whose key changed leaves
// out is in acked, unchanged, and that every object of acked it leaves out
// is still in out.
func checkChanged(t *testing.T, step int, what string, acked, out *translate.Output, changed map[string]bool) {
	t.Helper()
	index := func(o *translate.Output) map[string]model.Object {
		m := map[string]model.Object{}
		for _, obj := range o.Each() {
			m[model.Key(obj.ObjectKind(), obj.ObjectMeta().Name)] = obj
		}
		return m
	}
	before, now := index(acked), index(out)
	for k, obj := range now {
		if changed[k] {
			continue
		}
		if prev, ok := before[k]; !ok || !reflect.DeepEqual(prev, obj) {
			t.Errorf("step %d (%s): %s changed but is not in Changed", step, what, k)
		}
	}
	for k := range before {
		if _, ok := now[k]; !ok && !changed[k] {
			t.Errorf("step %d (%s): %s is gone but not in Changed", step, what, k)
		}
	}
}

// diffLines shows the first lines where a and b differ, with context.
func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		if i >= len(al) || i >= len(bl) || al[i] != bl[i] {
			from := max(0, i-8)
			return fmt.Sprintf("incremental:\n%s\nfull:\n%s", strings.Join(al[from:min(len(al), i+8)], "\n"), strings.Join(bl[from:min(len(bl), i+8)], "\n"))
		}
	}
	return "(no difference in JSON)"
}

// checkRetranslated checks that every route whose status in now differs
// from the one in last (the previous call's output) is among the routes
// the Incremental says it translated again.
func checkRetranslated(t *testing.T, step int, what string, last, now *translate.Output, retranslated []model.SourceRef) {
	t.Helper()
	type key struct{ kind, namespace, name string }
	before := map[key]translate.RouteStatus{}
	for _, st := range last.Status.Routes {
		before[key{st.Kind, st.Namespace, st.Name}] = st
	}
	again := map[key]bool{}
	for _, s := range retranslated {
		again[key{s.Kind, s.Namespace, s.Name}] = true
	}
	for _, st := range now.Status.Routes {
		k := key{st.Kind, st.Namespace, st.Name}
		if b, ok := before[k]; (!ok || !reflect.DeepEqual(b, st)) && !again[k] {
			t.Fatalf("step %d (%s): the status of %v changed, but it is not among the routes translated again %v", step, what, k, retranslated)
		}
	}
}

// TestIncrementalTranslatesWhatReadsAChange checks that a change to one
// route, Service or EndpointSlice among 100 translates again the routes
// that read it and no other (what makes a change cost what it changes),
// and that the output is still a full translation's.
func TestIncrementalTranslatesWhatReadsAChange(t *testing.T) {
	in := benchInput(100)
	version := 1
	bump := func(m *metav1.ObjectMeta) {
		version++
		m.ResourceVersion = strconv.Itoa(version)
	}
	for i := range in.HTTPRoutes {
		bump(&in.HTTPRoutes[i].ObjectMeta)
		bump(&in.Services[i].ObjectMeta)
		bump(&in.EndpointSlices[i].ObjectMeta)
	}
	bump(&in.GatewayClasses[0].ObjectMeta)
	bump(&in.Gateways[0].ObjectMeta)
	var x translate.Incremental
	x.Translate(in)
	x.Acknowledge()
	step := func(what string, change func(), want []string, changed ...string) {
		t.Helper()
		change()
		out := x.Translate(in)
		x.Acknowledge()
		var got []string
		for _, s := range out.Retranslated {
			got = append(got, s.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: translated again %v, want %v", what, got, want)
		}
		for _, k := range changed {
			if !out.Changed[k] {
				t.Errorf("%s: Changed %v lacks %s", what, out.Changed, k)
			}
		}
		out.Changed, out.Retranslated, out.RetranslatedPolicies = nil, nil, nil
		if full := translate.Translate(in); !reflect.DeepEqual(out, full) {
			g, _ := json.MarshalIndent(out, "", " ")
			w, _ := json.MarshalIndent(full, "", " ")
			t.Fatalf("%s: incremental output differs from a full translation:\n%s", what, diffLines(string(g), string(w)))
		}
	}
	step("a route's hostname", func() {
		r := &in.HTTPRoutes[50]
		r.Spec.Hostnames = []gatewayv1.Hostname{"new.example.com"}
		bump(&r.ObjectMeta)
	}, []string{"r-50"}, model.Key(model.KindService, "r-50-default.web-default"))
	step("a Service's port", func() {
		s := &in.Services[7]
		s.Spec.Ports = []corev1.ServicePort{{Port: 81}}
		bump(&s.ObjectMeta)
	}, []string{"r-7"}, model.Key(model.KindTargetGroup, "svc-7-default-80"))
	step("an EndpointSlice's endpoints", func() {
		es := &in.EndpointSlices[8]
		es.Endpoints = es.Endpoints[1:]
		bump(&es.ObjectMeta)
	}, []string{"r-8"}, model.Key(model.KindTargetGroup, "svc-8-default-80"))
	step("an EndpointSlice moved to another Service", func() {
		es := &in.EndpointSlices[9]
		es.Labels = map[string]string{discoveryv1.LabelServiceName: "svc-10"}
		bump(&es.ObjectMeta)
	}, []string{"r-10", "r-9"}, model.Key(model.KindTargetGroup, "svc-9-default-80"), model.Key(model.KindTargetGroup, "svc-10-default-80"))
	step("a route deleted", func() {
		in.HTTPRoutes = slices.Delete(in.HTTPRoutes, 20, 21)
	}, nil, model.Key(model.KindService, "r-20-default.web-default"), model.Key(model.KindTargetGroup, "svc-20-default-80"))
	step("two routes changed at once", func() {
		for _, i := range []int{30, 3} {
			r := &in.HTTPRoutes[i]
			r.Spec.Hostnames = []gatewayv1.Hostname{"twice.example.com"}
			bump(&r.ObjectMeta)
		}
	}, []string{"r-3", "r-31"})
	step("a third of the routes deleted", func() {
		in.HTTPRoutes = slices.DeleteFunc(in.HTTPRoutes, func(r gatewayv1.HTTPRoute) bool {
			i, _ := strconv.Atoi(strings.TrimPrefix(r.Name, "r-"))
			return i%3 == 0
		})
	}, nil, model.Key(model.KindService, "r-12-default.web-default"), model.Key(model.KindTargetGroup, "svc-12-default-80"))
	step("nothing", func() {}, nil)
}

// TestIncrementalSharedTargetGroup checks that when the route that made a
// target group many routes share goes, the next route makes it and the
// others, which find the same target group, are not translated again.
func TestIncrementalSharedTargetGroup(t *testing.T) {
	in, x := benchIncremental(100, func(in *translate.Input, i int) {
		in.HTTPRoutes[i].Spec.Rules[0].BackendRefs[0].Name = "svc-0" // all to one Service
	})
	// Routes are met by name: r-0, r-1, r-10, r-11, ...
	in.HTTPRoutes = in.HTTPRoutes[1:]
	out := x.Translate(in)
	var got []string
	for _, s := range out.Retranslated {
		got = append(got, s.Name)
	}
	if want := []string{"r-1"}; !slices.Equal(got, want) {
		t.Errorf("translated again %v, want %v", got, want)
	}
	out.Changed, out.Retranslated, out.RetranslatedPolicies = nil, nil, nil
	if full := translate.Translate(in); !reflect.DeepEqual(out, full) {
		g, _ := json.MarshalIndent(out, "", " ")
		w, _ := json.MarshalIndent(full, "", " ")
		t.Fatalf("incremental output differs from a full translation:\n%s", diffLines(string(g), string(w)))
	}
	if len(out.TargetGroups) != 1 || len(out.Services) != 99 {
		t.Errorf("%d target groups and %d services; want 1 and 99", len(out.TargetGroups), len(out.Services))
	}
}

// TestIncrementalTargetGroupPolicy changes, retargets and deletes a
// TargetGroupPolicy and sees the target groups' health checks follow,
// translating again only the routes that use the Services it targeted
// before or after, and agreeing with a full translation every time.
func TestIncrementalTargetGroupPolicy(t *testing.T) {
	in, x := benchIncremental(50, nil)
	policy := func(rv, target string, interval int32) v1alpha1.TargetGroupPolicy {
		p := v1alpha1.TargetGroupPolicy{Spec: v1alpha1.TargetGroupPolicySpec{
			TargetRefs:  []gatewayv1.LocalPolicyTargetReference{{Kind: "Service", Name: gatewayv1.ObjectName(target)}},
			HealthCheck: &v1alpha1.HealthCheckPolicy{IntervalSeconds: &interval, Path: ptr("/ready")},
		}}
		p.Name, p.Namespace, p.ResourceVersion = "checks", in.Services[0].Namespace, rv
		return p
	}
	interval := func(out *translate.Output, svc string) int32 {
		t.Helper()
		for _, tg := range out.TargetGroups {
			if tg.Source != nil && tg.Source.Name == svc {
				return tg.HealthCheck.IntervalSeconds
			}
		}
		t.Fatalf("no target group of Service %s", svc)
		return 0
	}
	step := func(what string, wantRetranslated int, want map[string]int32) {
		t.Helper()
		out := x.Translate(in)
		x.Acknowledge()
		if len(out.Retranslated) != wantRetranslated {
			t.Errorf("%s: translated %d routes again, want %d: %v", what, len(out.Retranslated), wantRetranslated, out.Retranslated)
		}
		if len(out.RetranslatedPolicies) != 1 || out.RetranslatedPolicies[0].Name != "checks" {
			t.Errorf("%s: policies whose status was made again: %v, want checks alone", what, out.RetranslatedPolicies)
		}
		for svc, w := range want {
			if got := interval(out, svc); got != w {
				t.Errorf("%s: Service %s's target group checks every %d s, want %d", what, svc, got, w)
			}
		}
		out.Changed, out.Retranslated, out.RetranslatedPolicies = nil, nil, nil
		if full := translate.Translate(in); !reflect.DeepEqual(out, full) {
			g, _ := json.MarshalIndent(out, "", " ")
			w, _ := json.MarshalIndent(full, "", " ")
			t.Fatalf("%s: incremental output differs from a full translation:\n%s", what, diffLines(string(g), string(w)))
		}
	}
	// Another policy, on a Service of its own, which no step touches.
	other := policy("1", "svc-9", 15)
	other.Name = "other"
	in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{other}
	x.Translate(in)
	x.Acknowledge()
	in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{other, policy("1", "svc-3", 10)}
	step("policy added", 1, map[string]int32{"svc-3": 10, "svc-4": 0, "svc-9": 15})
	in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{other, policy("2", "svc-3", 20)}
	step("interval changed", 1, map[string]int32{"svc-3": 20})
	in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{other, policy("3", "svc-4", 20)}
	step("retargeted", 2, map[string]int32{"svc-3": 0, "svc-4": 20})
	in.TargetGroupPolicies = []v1alpha1.TargetGroupPolicy{other}
	step("deleted", 1, map[string]int32{"svc-4": 0, "svc-9": 15})
}

// TestIncrementalAuthPolicyStatus puts an AuthPolicy on each of 20 routes
// and checks that RetranslatedPolicies names the policies whose status
// differs from the last call's, whatever changed: a route moved off the
// Gateway or deleted (the policy unchanged), a policy retargeted onto a
// route that has a younger policy (which becomes Conflicted, unchanged
// itself), a policy's document made invalid; and nothing when a change
// leaves every policy's status as it was.
func TestIncrementalAuthPolicyStatus(t *testing.T) {
	const n = 20
	in, x := benchIncremental(n, func(in *translate.Input, i int) {
		p := v1alpha1.AuthPolicy{Spec: v1alpha1.AuthPolicySpec{
			TargetRefs: []gatewayv1.LocalPolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: gatewayv1.ObjectName(in.HTTPRoutes[i].Name)}},
			Policy:     apiextensionsv1.JSON{Raw: []byte(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`)},
		}}
		p.Namespace, p.Name, p.ResourceVersion, p.Generation = "default", fmt.Sprintf("p-%d", i), "1", 1
		in.AuthPolicies = append(in.AuthPolicies, p)
	})
	step := func(what string, want ...string) {
		t.Helper()
		out := x.Translate(in)
		x.Acknowledge()
		var got []string
		for _, p := range out.RetranslatedPolicies {
			if p.Kind != "AuthPolicy" {
				t.Errorf("%s: %v among the AuthPolicies made again", what, p)
			}
			got = append(got, p.Name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: AuthPolicies whose status differs: %v, want %v", what, got, want)
		}
		out.Changed, out.Retranslated, out.RetranslatedPolicies = nil, nil, nil
		if full := translate.Translate(in); !reflect.DeepEqual(out, full) {
			g, _ := json.MarshalIndent(out, "", " ")
			w, _ := json.MarshalIndent(full, "", " ")
			t.Fatalf("%s: incremental output differs from a full translation:\n%s", what, diffLines(string(g), string(w)))
		}
	}
	// wantReason checks policy name's reason in a full translation.
	wantReason := func(name, want string) {
		t.Helper()
		for _, st := range translate.Translate(in).Status.Policies {
			if st.Name == name {
				if got := st.Ancestors[0].Conditions[0].Reason; got != want {
					t.Errorf("%s is %s, want %s", name, got, want)
				}
				return
			}
		}
		t.Fatalf("no status of policy %s", name)
	}
	route := func(i int, rv string, f func(*gatewayv1.HTTPRoute)) {
		r := in.HTTPRoutes[i]
		r.ResourceVersion = rv
		r.Spec.ParentRefs = slices.Clone(r.Spec.ParentRefs)
		f(&r)
		in.HTTPRoutes[i] = r
	}
	policy := func(i int, rv string, f func(*v1alpha1.AuthPolicy)) {
		p := in.AuthPolicies[i]
		p.ResourceVersion = rv
		p.Generation++
		p.Spec.TargetRefs = slices.Clone(p.Spec.TargetRefs)
		f(&p)
		in.AuthPolicies[i] = p
	}

	route(4, "2", func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = []gatewayv1.Hostname{"moved.example.com"} })
	step("a hostname changed")
	route(3, "2", func(r *gatewayv1.HTTPRoute) { r.Spec.ParentRefs[0].Name = "elsewhere" })
	step("a route moved off the Gateway", "p-3")
	wantReason("p-3", "TargetNotFound")
	in.HTTPRoutes = slices.Delete(in.HTTPRoutes, 5, 6)
	step("a route deleted", "p-5")
	policy(7, "2", func(p *v1alpha1.AuthPolicy) { p.Spec.TargetRefs[0].Name = "r-8" })
	step("a policy retargeted onto another's route", "p-7", "p-8")
	wantReason("p-8", "Conflicted")
	policy(9, "2", func(p *v1alpha1.AuthPolicy) { p.Spec.Policy.Raw = []byte(`{"Statement":[{"Effect":"Maybe"}]}`) })
	step("a policy's document made invalid", "p-9")
	wantReason("p-9", "Invalid")
	policy(9, "3", func(p *v1alpha1.AuthPolicy) {
		p.Spec.Policy.Raw = []byte(`{"Statement":[{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}`)
	})
	step("the document fixed", "p-9")
	wantReason("p-9", "Accepted")
	in.AuthPolicies = slices.Delete(in.AuthPolicies, 7, 8)
	step("the retargeted policy deleted", "p-8")
	route(3, "3", func(r *gatewayv1.HTTPRoute) { r.Spec.ParentRefs[0].Name = "web" })
	step("the route back on the Gateway", "p-3")
}
