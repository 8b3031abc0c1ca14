package translate_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// authWorld is a small world for AuthPolicies to fight over: three
// Gateways (one edge, two service networks) that come and go, HTTPRoutes
// and GRPCRoutes that move between them (a GRPCRoute named as an HTTPRoute
// loses its service names to it), and policies that target any of them,
// things that do not exist, or the wrong group or kind, with documents
// valid or not and creation times that tie.
type authWorld struct {
	r       *rand.Rand
	version int
	objects map[string]object
}

var (
	authGateways = []string{"web", "hotel", "lobby"}
	authRoutes   = []string{"r-0", "r-1", "r-2", "r-3", "r-4", "r-5"}
	authPolicies = []string{"p-0", "p-1", "p-2", "p-3", "p-4", "p-5", "p-6", "p-7"}
)

// put stores o at a new resourceVersion.
func (w *authWorld) put(o object) {
	w.version++
	o.SetResourceVersion(strconv.Itoa(w.version))
	w.objects[objectKey(o)] = o
}

func (w *authWorld) gateway(name string) *gatewayv1.Gateway {
	class, port := "mesh", gatewayv1.PortNumber(80)
	if name == "web" {
		class = "edge"
	}
	return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: gatewayv1.ObjectName(class),
		Listeners:        []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: port}},
	}}
}

// parents is one to two parentRefs among the Gateways and one that is
// never there.
func (w *authWorld) parents() []gatewayv1.ParentReference {
	names := append(slices.Clone(authGateways), "nowhere")
	var out []gatewayv1.ParentReference
	for range 1 + w.r.IntN(2) {
		out = append(out, gatewayv1.ParentReference{Name: gatewayv1.ObjectName(names[w.r.IntN(len(names))])})
	}
	return out
}

func (w *authWorld) backend() gatewayv1.BackendObjectReference {
	port := gatewayv1.PortNumber(80)
	return gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(fmt.Sprintf("svc-%d", w.r.IntN(3))), Port: &port}
}

func (w *authWorld) httpRoute(name string) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: w.parents()},
		Hostnames:       []gatewayv1.Hostname{gatewayv1.Hostname(fmt.Sprintf("%s-%d.example.com", name, w.r.IntN(3)))},
		Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: w.backend()}}}}},
	}}
}

func (w *authWorld) grpcRoute(name string) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gatewayv1.GRPCRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: w.parents()},
		Rules:           []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: w.backend()}}}}},
	}}
}

// target is a random targetRef: mostly a Gateway or route of the world
// (there or not), sometimes one that cannot be (another group or kind).
func (w *authWorld) target() gatewayv1.LocalPolicyTargetReference {
	ref := func(group, kind, name string) gatewayv1.LocalPolicyTargetReference {
		return gatewayv1.LocalPolicyTargetReference{Group: gatewayv1.Group(group), Kind: gatewayv1.Kind(kind), Name: gatewayv1.ObjectName(name)}
	}
	switch n := w.r.IntN(20); {
	case n < 4:
		return ref(gatewayv1.GroupName, "Gateway", append(slices.Clone(authGateways), "missing")[w.r.IntN(4)])
	case n < 14:
		return ref(gatewayv1.GroupName, "HTTPRoute", authRoutes[w.r.IntN(len(authRoutes))])
	case n < 18:
		return ref(gatewayv1.GroupName, "GRPCRoute", authRoutes[w.r.IntN(2)])
	case n < 19:
		return ref("", "Service", "svc-0")
	}
	return ref(gatewayv1.GroupName, "Service", "svc-1")
}

func (w *authWorld) policy(name string) *v1alpha1.AuthPolicy {
	p := &v1alpha1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	w.editPolicy(p, -1)
	return p
}

// editPolicy changes what of p: its targets (what < 0: everything), its
// document, its creation time (ties are common) or only its generation.
func (w *authWorld) editPolicy(p *v1alpha1.AuthPolicy, what int) {
	p.Generation++
	if what < 0 || what == 0 {
		p.Spec.TargetRefs = nil
		for range 1 + w.r.IntN(3) { // a target twice now and then
			p.Spec.TargetRefs = append(p.Spec.TargetRefs, w.target())
		}
	}
	if what < 0 || what == 1 {
		docs := []string{
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`,
			`{"Statement":[{"Sid":"v%d","Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}`,
			`{"Statement":[{"Effect":"Maybe"}]}`,
		}
		doc := docs[w.r.IntN(len(docs))]
		if strings.Contains(doc, "%d") {
			doc = fmt.Sprintf(doc, w.r.IntN(100))
		}
		p.Spec.Policy = apiextensionsv1.JSON{Raw: []byte(doc)}
	}
	if what < 0 || what == 2 {
		p.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1+w.r.IntN(4), 0, 0, 0, 0, time.UTC))
	}
}

// step makes one random change and describes it.
func (w *authWorld) step() string {
	pick := func(names []string) string { return names[w.r.IntN(len(names))] }
	switch n := w.r.IntN(40); {
	case n < 18: // a policy added, removed, retargeted, rewritten, made older or younger
		name := pick(authPolicies)
		k := objectKey(&v1alpha1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
		cur, ok := w.objects[k]
		switch {
		case !ok:
			w.put(w.policy(name))
			return "add policy " + name
		case w.r.IntN(4) == 0:
			delete(w.objects, k)
			return "delete policy " + name
		}
		p := cur.DeepCopyObject().(*v1alpha1.AuthPolicy)
		what := w.r.IntN(4)
		w.editPolicy(p, what)
		w.put(p)
		return fmt.Sprintf("edit policy %s (%d)", name, what)
	case n < 34: // a route added, removed or changed (parents, hostname, backend)
		name := pick(authRoutes)
		var o object = w.httpRoute(name)
		if w.r.IntN(4) == 0 {
			name = pick(authRoutes[:2])
			o = w.grpcRoute(name)
		}
		if _, ok := w.objects[objectKey(o)]; ok && w.r.IntN(3) == 0 {
			delete(w.objects, objectKey(o))
			return fmt.Sprintf("delete %T %s", o, name)
		}
		w.put(o)
		return fmt.Sprintf("put %T %s", o, name)
	case n < 37: // a Service changed (its routes translate again)
		name := fmt.Sprintf("svc-%d", w.r.IntN(3))
		s := w.objects[objectKey(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})].DeepCopyObject().(*corev1.Service)
		s.Spec.Ports[0].Port = int32([]int{80, 81}[w.r.IntN(2)])
		w.put(s)
		return "edit Service " + name
	}
	name := pick(authGateways) // a Gateway gone or back: everything again
	k := objectKey(w.gateway(name))
	if _, ok := w.objects[k]; ok {
		delete(w.objects, k)
		return "delete Gateway " + name
	}
	w.put(w.gateway(name))
	return "add Gateway " + name
}

// input is the world's objects in key order, or shuffled.
func (w *authWorld) input(shuffle bool) *translate.Input {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range w.objects {
			if !yield(k) {
				return
			}
		}
	})
	objs := make([]object, 0, len(keys))
	for _, k := range keys {
		objs = append(objs, w.objects[k])
	}
	if w.r.IntN(10) == 0 {
		// Now and then two policies of one key, as a provider should not
		// give but may: attached in full, and after in part again.
		for _, o := range objs {
			if p, ok := o.(*v1alpha1.AuthPolicy); ok {
				dup := p.DeepCopy()
				w.editPolicy(dup, 0)
				objs = append(objs, dup)
				break
			}
		}
	}
	if shuffle {
		w.r.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
	}
	return buildInput(objs)
}

func newAuthWorld(seed uint64) *authWorld {
	w := &authWorld{r: rand.New(rand.NewPCG(seed, 713)), objects: map[string]object{}}
	w.put(&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: translate.EdgeController}})
	w.put(&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: translate.ServiceNetworkController}})
	for _, name := range authGateways {
		w.put(w.gateway(name))
	}
	port := int32(8080)
	for i := range 3 {
		name := fmt.Sprintf("svc-%d", i)
		w.put(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
		w.put(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}}}})
	}
	for _, name := range authRoutes[:4] {
		w.put(w.httpRoute(name))
	}
	for _, name := range authPolicies[:5] {
		w.put(w.policy(name))
	}
	return w
}

// TestIncrementalAuthPoliciesMatchTranslate applies random sequences of
// changes to AuthPolicies and what they attach to (policies added, edited,
// removed, retargeted, made older or younger so that another holds their
// target; routes added, removed and moved between Gateways, or losing
// their services to a route of another kind; Services changed; Gateways
// removed and added) and checks after every step that Incremental's
// output, policy statuses and auth included, is Translate's; that every
// policy whose status differs from the last call's is in
// RetranslatedPolicies; and that every service whose auth changed since
// the output last acknowledged is in Changed.
func TestIncrementalAuthPoliciesMatchTranslate(t *testing.T) {
	seeds, steps := 150, 60
	if testing.Short() {
		seeds = 30
	}
	patched := 0 // steps the Incremental patched rather than translated in full
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 1 {
				defer translate.SetPatchInPlace(0)()
			}
			w := newAuthWorld(uint64(seed))
			var x translate.Incremental
			var acked, last *translate.Output
			for step := range steps {
				what := "start"
				if step > 0 {
					whats := []string{w.step()}
					for w.r.IntN(4) == 0 {
						whats = append(whats, w.step())
					}
					what = strings.Join(whats, ", ")
				}
				in := w.input(w.r.IntN(3) == 0)
				got := x.Translate(in)
				want := translate.Translate(in)
				changed, remade := got.Changed, got.RetranslatedPolicies
				got.Changed, got.Retranslated, got.RetranslatedPolicies = nil, nil, nil
				if !reflect.DeepEqual(got, want) {
					g, _ := json.MarshalIndent(got, "", " ")
					wj, _ := json.MarshalIndent(want, "", " ")
					t.Fatalf("step %d (%s): incremental output differs from a full translation:\n%s", step, what, diffLines(string(g), string(wj)))
				}
				if changed != nil {
					patched++
					checkPoliciesRemade(t, step, what, last, want, remade)
					if acked != nil {
						checkChanged(t, step, what, acked, want, changed)
					}
				}
				last = want
				if w.r.IntN(4) != 0 {
					x.Acknowledge()
					acked = want
				}
			}
		})
	}
	if patched < seeds*steps/4 {
		t.Errorf("only %d of %d steps patched the last output: the test hardly tests Incremental", patched, seeds*steps)
	}
}

// checkPoliciesRemade checks that every AuthPolicy whose status in now
// differs from the one in last (the previous call's output) is named in
// remade.
func checkPoliciesRemade(t *testing.T, step int, what string, last, now *translate.Output, remade []model.SourceRef) {
	t.Helper()
	before := map[string]translate.PolicyStatus{}
	for _, st := range last.Status.Policies {
		before[st.Namespace+"/"+st.Name] = st
	}
	for _, st := range now.Status.Policies {
		b, ok := before[st.Namespace+"/"+st.Name]
		if ok && reflect.DeepEqual(b, st) {
			continue
		}
		if !slices.ContainsFunc(remade, func(r model.SourceRef) bool {
			return r.Kind == "AuthPolicy" && r.Namespace == st.Namespace && r.Name == st.Name
		}) {
			t.Fatalf("step %d (%s): the status of AuthPolicy %s/%s changed, but RetranslatedPolicies %v does not name it", step, what, st.Namespace, st.Name, remade)
		}
	}
}

// TestAuthPolicyManyTargetRefs gives a policy more targetRefs than the CRD
// allows (a file is not bounded): 40 missing routes, one of them twice,
// then a route that exists, twice. Each missing route is an ancestor of
// its own, once; the Gateway of the route the policy holds is Conflicted
// by the second targetRef, which finds the route taken by the policy
// itself; and the bound is reported.
func TestAuthPolicyManyTargetRefs(t *testing.T) {
	in := benchInput(2)
	p := v1alpha1.AuthPolicy{Spec: v1alpha1.AuthPolicySpec{Policy: apiextensionsv1.JSON{Raw: []byte(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`)}}}
	p.Namespace, p.Name = "default", "many"
	route := func(name string) gatewayv1.LocalPolicyTargetReference {
		return gatewayv1.LocalPolicyTargetReference{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: gatewayv1.ObjectName(name)}
	}
	for i := range 40 {
		p.Spec.TargetRefs = append(p.Spec.TargetRefs, route(fmt.Sprintf("x-%d", i)))
	}
	p.Spec.TargetRefs = append(p.Spec.TargetRefs, route("x-7"), route("r-1"), route("r-1"))
	in.AuthPolicies = append(in.AuthPolicies, p)
	out := translate.Translate(in)
	st := out.Status.Policies[0]
	if len(st.Ancestors) != 41 {
		t.Fatalf("%d ancestors, want 41 (40 missing routes and the Gateway)", len(st.Ancestors))
	}
	for _, a := range st.Ancestors {
		want := string(gatewayv1.PolicyReasonTargetNotFound)
		if a.AncestorRef.Name == "web" {
			want = string(gatewayv1.PolicyReasonConflicted)
		}
		if got := a.Conditions[0].Reason; got != want {
			t.Errorf("ancestor %s: %s, want %s", a.AncestorRef.Name, got, want)
		}
	}
	if !slices.ContainsFunc(out.Problems, func(pr translate.Problem) bool { return pr.Field == "spec.targetRefs" }) {
		t.Errorf("no problem names the bound of spec.targetRefs: %v", out.Problems)
	}
	if !slices.ContainsFunc(out.Services, func(s model.Service) bool {
		return s.Source.Name == "r-1" && s.Auth != nil && s.Auth.Source.Name == "many"
	}) {
		t.Error("the policy is not on route r-1's service")
	}
}
