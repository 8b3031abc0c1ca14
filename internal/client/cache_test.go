package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// TestCacheChangesLeaveDeliveredSnapshots applies random puts and deletes
// of services and target groups, a few a revision and now and then
// hundreds, and checks, after each revision, that the
// snapshot holds exactly the objects put and not deleted, sorted by name,
// and that every snapshot delivered before still holds what it held.
func TestCacheChangesLeaveDeliveredSnapshots(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 15))
	c := newCache()
	want := map[model.Kind]map[string]string{model.KindService: {}, model.KindTargetGroup: {}}
	type delivered struct {
		snap *model.Snapshot
		json string
	}
	var past []delivered
	for rev := int64(1); rev <= 300; rev++ {
		var changes []api.Change
		// Every 25th revision changes many objects, as a first revision
		// of a whole configuration does.
		n, names := 1+r.IntN(3), 20
		if rev%25 == 0 {
			n, names = 200+r.IntN(100), 400
		}
		for range n {
			kind := []model.Kind{model.KindService, model.KindTargetGroup}[r.IntN(2)]
			name := fmt.Sprint("o", r.IntN(names))
			if r.IntN(3) == 0 {
				changes = append(changes, api.Change{Op: api.OpDelete, Kind: kind, Name: name})
				delete(want[kind], name)
				continue
			}
			var obj model.Object = &model.Service{Meta: model.Meta{Name: name, Revision: rev}, Network: fmt.Sprint("n", rev)}
			if kind == model.KindTargetGroup {
				obj = &model.TargetGroup{Meta: model.Meta{Name: name, Revision: rev}, Port: int32(rev)}
			}
			b, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			changes = append(changes, api.Change{Op: api.OpPut, Kind: kind, Name: name, Object: b})
			want[kind][name] = fmt.Sprint(rev)
		}
		if err := c.apply(rev, changes); err != nil {
			t.Fatal(err)
		}
		snap := c.snapshot()
		got := map[model.Kind]map[string]string{model.KindService: {}, model.KindTargetGroup: {}}
		for _, s := range snap.Services {
			got[model.KindService][s.Name] = strings.TrimPrefix(s.Network, "n")
		}
		for _, tg := range snap.TargetGroups {
			got[model.KindTargetGroup][tg.Name] = fmt.Sprint(tg.Port)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("revision %d: snapshot holds %v, want %v", rev, got, want)
		}
		if !slices.IsSortedFunc(snap.Services, func(a, b model.Service) int { return strings.Compare(a.Name, b.Name) }) ||
			!slices.IsSortedFunc(snap.TargetGroups, func(a, b model.TargetGroup) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("revision %d: lists not sorted by name", rev)
		}
		b, _ := json.Marshal(snap)
		// The last few snapshots, and the one before each large
		// revision, are checked on.
		if len(past) > 8 && past[len(past)-9].snap.Revision%25 != 24 {
			past = slices.Delete(past, len(past)-9, len(past)-8)
		}
		past = append(past, delivered{snap, string(b)})
		for _, d := range past {
			if b, _ := json.Marshal(d.snap); string(b) != d.json {
				t.Fatalf("revision %d: snapshot of revision %d changed", rev, d.snap.Revision)
			}
		}
	}
	if err := c.apply(300, nil); err == nil {
		t.Error("a change to an older revision applied")
	}
	if err := c.apply(301, []api.Change{{Op: api.OpDelete, Kind: "Gadget", Name: "x"}}); err == nil || !strings.Contains(err.Error(), "Gadget") {
		t.Errorf("change of an unknown kind: %v", err)
	}
}

// TestLineReader reads lines shorter and longer than its buffer, a last
// line without a newline, and refuses one over its limit; a long line's
// buffer is let go at the next line.
func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 100)
	in := "a\n" + long + "\nb\n" + long + long + "\nc"
	lr := &lineReader{r: bufio.NewReaderSize(strings.NewReader(in), 16), max: 250}
	var got []string
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(line))
		if len(line) < 16 && lr.long != nil {
			t.Errorf("the buffer of a long line is kept at line %q", line)
		}
	}
	want := []string{"a\n", long + "\n", "b\n", long + long + "\n", "c"}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	lr = &lineReader{r: bufio.NewReaderSize(strings.NewReader(long+long+long+"\n"), 16), max: 250}
	if _, err := lr.next(); err == nil || !strings.Contains(err.Error(), "longer than 250") {
		t.Errorf("a line over the limit: %v", err)
	}
}

// FuzzLineReader checks that lineReader splits any stream as bytes.Split
// does, within its limit.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n"), 4)
	f.Add([]byte("\n\n\nxyz"), 2)
	f.Add(bytes.Repeat([]byte("0123456789"), 10), 16)
	f.Fuzz(func(t *testing.T, in []byte, size int) {
		size = 16 + size%64
		if size < 16 {
			size += 64
		}
		const max = 200
		lr := &lineReader{r: bufio.NewReaderSize(bytes.NewReader(in), size), max: max}
		var want [][]byte
		for _, l := range bytes.SplitAfter(in, []byte("\n")) {
			if len(l) > 0 {
				want = append(want, l)
			}
		}
		for i := 0; ; i++ {
			line, err := lr.next()
			if errors.Is(err, io.EOF) {
				if i != len(want) {
					t.Fatalf("%d lines, want %d", i, len(want))
				}
				return
			}
			if err != nil {
				if len(want[i]) <= max {
					t.Fatalf("line %d of %d bytes: %v", i, len(want[i]), err)
				}
				return
			}
			if !bytes.Equal(line, want[i]) {
				t.Fatalf("line %d %q, want %q", i, line, want[i])
			}
		}
	})
}

// BenchmarkCacheApplyOneChange is the follow's work for one changed
// service at 10,000 services and target groups: decode the change, apply
// it and make the snapshot.
func BenchmarkCacheApplyOneChange(b *testing.B) {
	const n = 10_000
	snap := &model.Snapshot{Revision: 1}
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		snap.Services = append(snap.Services, model.Service{Meta: model.Meta{Name: name, Revision: 1}, Network: "edge",
			CustomDomains: []string{name + ".example.com"}, Listeners: []model.Listener{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}}})
		snap.TargetGroups = append(snap.TargetGroups, model.TargetGroup{Meta: model.Meta{Name: name, Revision: 1}, Port: 9000,
			Targets: make([]model.Target, 10)})
	}
	c := newCache()
	c.reset(snap)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rev := int64(2 + i)
		name := fmt.Sprintf("svc-%05d", i*7919%n)
		obj, _ := json.Marshal(&model.Service{Meta: model.Meta{Name: name, Revision: rev}, Network: "edge", CustomDomains: []string{fmt.Sprint("moved-", rev, ".example.com")}})
		if err := c.apply(rev, []api.Change{{Op: api.OpPut, Kind: model.KindService, Name: name, Object: obj}}); err != nil {
			b.Fatal(err)
		}
		if s := c.snapshot(); len(s.Services) != n {
			b.Fatalf("%d services", len(s.Services))
		}
	}
}

// The cache file's saver writes in the background and, given revisions
// faster than it writes, leaves the newest on disk.
func TestCacheSaverLeavesTheNewest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.json")
	s := &cacheSaver{path: path, log: slog.New(slog.DiscardHandler)}
	for rev := int64(1); rev <= 50; rev++ {
		s.save(&model.Snapshot{Revision: rev, Objects: model.Objects{Services: []model.Service{{Meta: model.Meta{Name: fmt.Sprint("s", rev)}}}}})
	}
	s.saving.Wait()
	snap, err := loadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 50 || len(snap.Services) != 1 || snap.Services[0].Name != "s50" {
		t.Errorf("saved revision %d %v, want 50", snap.Revision, snap.Services)
	}
}

// BenchmarkCacheApplyFirstRevision is a first revision of 10,000 services
// and 10,000 target groups as one transaction, in no particular order.
func BenchmarkCacheApplyFirstRevision(b *testing.B) {
	const n = 10_000
	r := rand.New(rand.NewPCG(3, 15))
	var changes []api.Change
	for _, i := range r.Perm(n) {
		name := fmt.Sprintf("svc-%05d", i)
		svc, _ := json.Marshal(&model.Service{Meta: model.Meta{Name: name, Revision: 1}, Network: "edge", CustomDomains: []string{name + ".example.com"}})
		tg, _ := json.Marshal(&model.TargetGroup{Meta: model.Meta{Name: name, Revision: 1}, Port: 9000})
		changes = append(changes, api.Change{Op: api.OpPut, Kind: model.KindService, Name: name, Object: svc},
			api.Change{Op: api.OpPut, Kind: model.KindTargetGroup, Name: name, Object: tg})
	}
	b.ReportAllocs()
	for b.Loop() {
		c := newCache()
		if err := c.apply(1, changes); err != nil {
			b.Fatal(err)
		}
		if s := c.snapshot(); len(s.Services) != n {
			b.Fatalf("%d services", len(s.Services))
		}
	}
}
