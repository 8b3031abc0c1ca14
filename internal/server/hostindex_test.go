package server

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/test/teststore"
)

// serviceListings is a store that counts the listings of the services.
type serviceListings struct {
	store.Store
	n atomic.Int64
}

func (l *serviceListings) List(ctx context.Context, prefix string) ([]store.KeyValue, int64, error) {
	if prefix == "/" || prefix == model.KindPrefix(model.KindService) {
		l.n.Add(1)
	}
	return l.Store.List(ctx, prefix)
}

// indexedHosts is what ix answers: each host name's services, sorted.
func indexedHosts(ix *hostnameIndex) map[string][]string {
	out := map[string][]string{}
	for _, m := range []map[string]map[string]*model.Service{ix.exact, ix.wildcards} {
		for h, svcs := range m {
			out[h] = slices.Sorted(maps.Keys(svcs))
		}
	}
	return out
}

// TestHostnameIndexKeptAcrossWrites: through random writes of services
// (two clusters, host names from a small pool, some refused), deletions and
// writes of other keys between them, the host-name index a write leaves
// marked current holds, while the store is at that revision, exactly what
// an index built from the stored services holds; and writes that find the
// store unchanged since do not list the services.
func TestHostnameIndexKeptAcrossWrites(t *testing.T) {
	st := teststore.Bolt(t)
	ls := &serviceListings{Store: st}
	s := New(ls, Config{})
	ctx := context.Background()
	if _, err := s.Commit(ctx, "east", []model.Object{&model.ServiceNetwork{Meta: model.Meta{Name: "a-net"}, Mode: model.ModeServiceNetwork,
		Domain: "a-net.trellis.internal", AllowedClusters: []string{"west"}}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "west", []model.Object{&model.ServiceNetwork{Meta: model.Meta{Name: "b-net"}, Mode: model.ModeServiceNetwork,
		Domain: "b-net.trellis.internal"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	service := func(name, network string, hosts ...string) *model.Service {
		return &model.Service{Meta: model.Meta{Name: name}, Network: network, CustomDomains: hosts,
			Listeners: []model.Listener{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}},
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{
				Backends: []model.WeightedTargetGroup{{TargetGroup: name, Weight: 1}}}}}}}
	}
	hosts := []string{"shop.example", "www.shop.example", "*.shop.example", "api.example", "*.example"}
	rng := rand.New(rand.NewPCG(15, 1))
	commits, refused, checked := 0, 0, 0
	for step := range 300 {
		cluster := []string{"east", "west"}[rng.IntN(2)]
		name := fmt.Sprintf("%s-%d", cluster, rng.IntN(8))
		switch op := rng.IntN(10); {
		case op < 6:
			network := "a-net"
			if cluster == "west" && rng.IntN(2) == 0 {
				network = "b-net"
			}
			var hs []string
			for _, h := range hosts {
				if rng.IntN(4) == 0 {
					hs = append(hs, h)
				}
			}
			commits++
			if _, err := s.Commit(ctx, cluster, []model.Object{service(name, network, hs...)}, nil, nil); err != nil {
				if !strings.Contains(err.Error(), "does not allow") {
					t.Fatalf("step %d: %v", step, err)
				}
				refused++
			}
		case op < 8:
			// A deletion, alone or with a put (then the write's checks
			// read, and its commit updates, the index).
			var puts []model.Object
			if rng.IntN(2) == 0 {
				puts = append(puts, service(fmt.Sprintf("%s-%d", cluster, 8+rng.IntN(4)), "a-net"))
			}
			commits++
			if _, err := s.Commit(ctx, cluster, puts, []string{model.Key(model.KindService, name)}, nil); err != nil &&
				!strings.Contains(err.Error(), "owned by") {
				t.Fatalf("step %d: delete: %v", step, err)
			}
		case op == 8:
			// A write of no service (a target group): the index stays.
			commits++
			tg := &model.TargetGroup{Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, Port: 80}
			if _, err := s.Commit(ctx, cluster, []model.Object{tg}, nil, nil); err != nil {
				t.Fatalf("step %d: target group: %v", step, err)
			}
		default:
			// Another writer (a health report, a lease): the store moves on.
			if _, err := st.Txn(ctx, store.Put("/health-test", []byte(fmt.Sprint(step)))); err != nil {
				t.Fatal(err)
			}
		}
		// The index claims to hold the stored services while the store
		// is at hostnamesRev (another writer moves the store on).
		kvs, rev, err := st.List(ctx, model.KindPrefix(model.KindService))
		if err != nil {
			t.Fatal(err)
		}
		if s.hostnamesRev == 0 || rev != s.hostnamesRev {
			continue
		}
		checked++
		fresh := newHostnameIndex()
		for _, kv := range kvs {
			if err := fresh.refresh(strings.TrimPrefix(kv.Key, model.KindPrefix(model.KindService)), kv); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := indexedHosts(s.hostnames), indexedHosts(fresh); !maps.EqualFunc(got, want, slices.Equal[[]string]) {
			t.Fatalf("step %d: index\n%v\nwant\n%v", step, got, want)
		}
		if got, want := slices.Sorted(maps.Keys(s.hostnames.services)), slices.Sorted(maps.Keys(fresh.services)); !slices.Equal(got, want) {
			t.Fatalf("step %d: services %v, want %v", step, got, want)
		}
	}
	if refused == 0 || checked < 50 {
		t.Fatalf("%d refused, %d checked: the sequence does not exercise the index", refused, checked)
	}
	if n := ls.n.Load(); n > int64(commits)/2 {
		t.Errorf("%d listings of the services for %d writes", n, commits)
	}
	t.Logf("%d writes (%d refused), %d listings of the services, %d checks", commits, refused, ls.n.Load(), checked)
}
