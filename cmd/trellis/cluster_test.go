package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
)

// `trellis cluster add --export-namespaces` admits a cluster limited to
// those namespaces, `cluster set` changes them, `cluster list` shows them;
// a bad list is refused naming the entry.
func TestClusterExportNamespaces(t *testing.T) {
	p := plane.Start(t, server.Config{})
	ctx := context.Background()
	run := adminCLI(t, ctx, p)
	exports := func(name string) []string {
		t.Helper()
		return listedCluster(t, ctx, p, name).ExportNamespaces
	}

	if out, err := run("cluster", "add", "east", "--export-namespaces", "shop,web"); err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if out, err := run("cluster", "add", "west"); err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if got := exports("east"); !slices.Equal(got, []string{"shop", "web"}) {
		t.Errorf("east's export namespaces %v", got)
	}
	if got := exports("west"); !slices.Equal(got, []string{"*"}) {
		t.Errorf("west's export namespaces %v, want [*]", got)
	}
	if out, err := run("cluster", "set", "east", "--export-namespaces", "shop"); err != nil || !strings.Contains(out, "cluster east may export from shop") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if got := exports("east"); !slices.Equal(got, []string{"shop"}) {
		t.Errorf("east's export namespaces after set %v", got)
	}
	out, err := run("cluster", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^NAME\s+ADDED\s+EXPORT NAMESPACES\s+POD NETWORK$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^east\s+\S+\s+shop\s+-$`).MatchString(out) || !regexp.MustCompile(`(?m)^west\s+\S+\s+\*\s+-$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if out, err := run("cluster", "set", "east", "--export-namespaces", "Shop"); err == nil || !strings.Contains(err.Error(), "exportNamespaces[0]") {
		t.Errorf("set with an invalid namespace: %v\n%s", err, out)
	}
	if out, err := run("cluster", "set", "east"); err == nil || !strings.Contains(err.Error(), "--export-namespaces or --pod-network") {
		t.Errorf("set without a flag: %v\n%s", err, out)
	}
}

// `trellis cluster add --pod-network` admits a cluster into a pod network,
// `cluster set --pod-network` moves it (or, with an empty name, isolates it) keeping
// its export namespaces, and `cluster list` and `get clusters` show it; a
// name that is not a label is refused naming the field podNetwork.
func TestClusterPodNetwork(t *testing.T) {
	p := plane.Start(t, server.Config{})
	ctx := context.Background()
	run := adminCLI(t, ctx, p)
	cluster := func(name string) api.Cluster {
		t.Helper()
		return listedCluster(t, ctx, p, name)
	}

	if out, err := run("cluster", "add", "east", "--pod-network", "flat", "--export-namespaces", "shop"); err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if out, err := run("cluster", "add", "west"); err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if got := cluster("east"); got.PodNetwork != "flat" || !slices.Equal(got.ExportNamespaces, []string{"shop"}) {
		t.Errorf("east: pod network %q, export namespaces %v", got.PodNetwork, got.ExportNamespaces)
	}
	if got := cluster("west").PodNetwork; got != "" {
		t.Errorf("west's pod network %q, want none", got)
	}
	out, err := run("cluster", "set", "west", "--pod-network", "flat")
	if err != nil || !strings.Contains(out, "cluster west is in pod network flat") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if got := cluster("west"); got.PodNetwork != "flat" || !slices.Equal(got.ExportNamespaces, []string{"*"}) {
		t.Errorf("west after set: pod network %q, export namespaces %v", got.PodNetwork, got.ExportNamespaces)
	}
	out, err = run("cluster", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^east\s+\S+\s+shop\s+flat$`).MatchString(out) || !regexp.MustCompile(`(?m)^west\s+\S+\s+\*\s+flat$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	out, err = run("get", "clusters")
	if err != nil || !regexp.MustCompile(`(?m)^east\s.*\sflat$`).MatchString(out) {
		t.Errorf("get clusters: %v\n%s", err, out)
	}
	// An empty name isolates the cluster again; its namespaces stay.
	if out, err := run("cluster", "set", "east", "--pod-network", ""); err != nil || !strings.Contains(out, "cluster east is in its own, isolated pod network") {
		t.Fatalf("set to none: %v\n%s", err, out)
	}
	if got := cluster("east"); got.PodNetwork != "" || !slices.Equal(got.ExportNamespaces, []string{"shop"}) {
		t.Errorf("east after isolating: pod network %q, export namespaces %v", got.PodNetwork, got.ExportNamespaces)
	}
	for _, bad := range []string{"Flat", "flat.net", "-flat", strings.Repeat("a", 64)} {
		if out, err := run("cluster", "set", "east", "--pod-network", bad); err == nil || !strings.Contains(err.Error(), "podNetwork") {
			t.Errorf("set --pod-network %q: %v\n%s", bad, err, out)
		}
		if out, err := run("cluster", "add", "north", "--pod-network", bad); err == nil || !strings.Contains(err.Error(), "podNetwork") {
			t.Errorf("add --pod-network %q: %v\n%s", bad, err, out)
		}
	}
	pn := "flat"
	if _, err := p.Admin(t).SetCluster(ctx, "north", api.SetClusterRequest{PodNetwork: &pn}); !strings.Contains(fmt.Sprint(err), "not admitted") {
		t.Errorf("north after refused adds: %v, want not admitted", err)
	}
}

// listedCluster is cluster name as the control plane's admin lists it.
func listedCluster(t *testing.T, ctx context.Context, p *plane.Plane, name string) api.Cluster {
	t.Helper()
	clusters, err := p.Admin(t).Clusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(clusters, func(c api.Cluster) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("cluster %s not listed", name)
	}
	return clusters[i]
}
