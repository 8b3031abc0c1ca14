package main

import (
	"context"
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
		clusters, err := p.Admin(t).Clusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(clusters, func(c api.Cluster) bool { return c.Name == name })
		if i < 0 {
			t.Fatalf("cluster %s not listed", name)
		}
		return clusters[i].ExportNamespaces
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
	if !regexp.MustCompile(`(?m)^NAME\s+ADDED\s+EXPORT NAMESPACES$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^east\s+\S+\s+shop$`).MatchString(out) || !regexp.MustCompile(`(?m)^west\s+\S+\s+\*$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if out, err := run("cluster", "set", "east", "--export-namespaces", "Shop"); err == nil || !strings.Contains(err.Error(), "exportNamespaces[0]") {
		t.Errorf("set with an invalid namespace: %v\n%s", err, out)
	}
	if out, err := run("cluster", "set", "east"); err == nil || !strings.Contains(err.Error(), "--export-namespaces") {
		t.Errorf("set without a flag: %v\n%s", err, out)
	}
}
