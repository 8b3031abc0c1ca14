package file

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"trellis.dev/trellis/internal/translate"
)

// TestReadingsMatchLoad: through a random sequence of edits (a hostname
// changed, a Service's port changed, an empty file added or removed, an
// object moved to another file, a document added or removed), every
// reading's Input, whose lists the provider keeps and updates in place
// (inputLists), is the one Load makes of the directory afresh.
func TestReadingsMatchLoad(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { readingsMatchLoad(t, seed) })
	}
}

func readingsMatchLoad(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 15))
	dir := t.TempDir()
	const files, perFile = 4, 3
	// objs[f] are file f's objects (each a route, a Service and a slice)
	// by number, version[i] object i's version.
	objs := make([][]int, files)
	version := map[int]int{}
	object := func(i int) string {
		v := version[i]
		return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-%[1]d}
spec:
  parentRefs: [{name: web}]
  hostnames: [r-%[1]d-v%[2]d.example.com]
  rules: [{backendRefs: [{name: svc-%[1]d, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-%[1]d}
spec:
  ports: [{name: http, port: 80, targetPort: %[3]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-%[1]d-1
  labels: {kubernetes.io/service-name: svc-%[1]d}
addressType: IPv4
ports: [{name: http, port: %[3]d}]
endpoints: [{addresses: ["127.0.0.%[4]d"]}]
`, i, v, 9000+v%3, 1+i%250)
	}
	next := 0
	for f := range files {
		for range perFile {
			objs[f] = append(objs[f], next)
			next++
		}
	}
	write := func(f int) {
		var docs []string
		for _, i := range objs[f] {
			docs = append(docs, object(i))
		}
		path := filepath.Join(dir, fmt.Sprintf("f-%d.yaml", f))
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	for f := range files {
		write(f)
	}
	p := &Provider{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SettlePeriod: time.Nanosecond}
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		r, err := p.read(ctx, time.Now())
		if err != nil {
			t.Fatalf("%s: read: %v", step, err)
		}
		p.commit(r)
		want, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: Load: %v", step, err)
		}
		if !reflect.DeepEqual(&r.config.input, want) {
			t.Fatalf("%s: the reading's Input differs from Load's", step)
		}
	}
	check("start")
	for step := range 40 {
		f := rng.IntN(files)
		var what string
		switch op := rng.IntN(6); {
		case op < 3 && len(objs[f]) > 0: // the usual edit: the same objects
			i := objs[f][rng.IntN(len(objs[f]))]
			version[i]++
			what = fmt.Sprintf("object %d edited in file %d", i, f)
		case op == 3:
			path := filepath.Join(dir, "empty.yaml")
			if _, err := os.Stat(path); err == nil {
				os.Remove(path)
				what = "empty file removed"
			} else {
				os.WriteFile(path, []byte("# nothing\n"), 0o644)
				what = "empty file added"
			}
			check(fmt.Sprintf("step %d: %s", step, what))
			continue
		case op == 4 && len(objs[f]) > 1:
			to := (f + 1) % files
			objs[to] = append(objs[to], objs[f][0])
			objs[f] = objs[f][1:]
			write(to)
			what = fmt.Sprintf("object moved from file %d to %d", f, to)
		default:
			objs[f] = append(objs[f], next)
			next++
			what = fmt.Sprintf("object added to file %d", f)
		}
		write(f)
		check(fmt.Sprintf("step %d: %s", step, what))
	}
}

// TestSetEveryKind: every supported kind names its list of
// translate.Input, so that set replaces its objects.
func TestSetEveryKind(t *testing.T) {
	for key, k := range kinds {
		if k.kind != key.kind {
			t.Errorf("%s %s is read as kind %q", key.apiVersion, key.kind, k.kind)
		}
		var in translate.Input
		k.add(&in, k.new())
		obj := k.new()
		obj.(metav1.Object).SetName("replaced")
		k.set(&in, 0, obj)
		list := reflect.ValueOf(in).FieldByName(inputList(k.kind))
		if list.Len() != 1 {
			t.Fatalf("%s: %d objects in %s", k.kind, list.Len(), inputList(k.kind))
		}
		if name := list.Index(0).Addr().Interface().(metav1.Object).GetName(); name != "replaced" {
			t.Errorf("%s: set left %q", k.kind, name)
		}
	}
}
