// Package inspect renders control-plane objects for people: a table per
// kind, or the objects as YAML or JSON; and the clusters' status. Certificate private keys are never
// rendered. It reads nothing and talks to nothing; `trellis get` feeds it.
package inspect

import (
	"cmp"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// Redacted stands in for a certificate's private key.
const Redacted = model.RedactedKey

// Formats are the output formats of Write.
var Formats = []string{"table", "yaml", "json"}

// Write renders objs, all of kind k, in format (one of Formats).
func Write(w io.Writer, format string, k model.Kind, objs []model.Object) error {
	objs = redact(objs)
	if format == "table" {
		return table(w, k, objs)
	}
	return encode(w, format, objs)
}

// encode writes v as YAML or JSON, by format; any other format is an
// error.
func encode(w io.Writer, format string, v any) error {
	switch format {
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	return fmt.Errorf("output format %q: want one of %s", format, strings.Join(Formats, ", "))
}

// redact returns objs with every certificate's key replaced, copying the
// certificates rather than changing the caller's.
func redact(objs []model.Object) []model.Object {
	out := slices.Clone(objs)
	for i, o := range out {
		if c, ok := o.(*model.Certificate); ok && c.KeyPEM != "" {
			cp := *c
			cp.KeyPEM = Redacted
			out[i] = &cp
		}
	}
	return out
}

func table(w io.Writer, k model.Kind, objs []model.Object) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }
	switch k {
	case model.KindServiceNetwork:
		row("NAME", "OWNER", "MODE", "DOMAIN", "ADDRESSES", "REVISION")
	case model.KindService:
		row("NAME", "OWNER", "NETWORK", "HOSTNAMES", "LISTENERS", "RULES", "REVISION")
	case model.KindTargetGroup:
		row("NAME", "OWNER", "PROTOCOL", "TARGETS", "REVISION")
	case model.KindCertificate:
		row("NAME", "OWNER", "NAMES", "NOT AFTER", "REVISION")
	case model.KindWorkloadSet:
		row("NAME", "OWNER", "NAMESPACE", "WORKLOADS", "REVISION")
	case model.KindServiceExport:
		row("NAME", "CLUSTER", "SERVICE", "TYPE", "PORTS", "ENDPOINTS", "EXPORTED", "REVISION")
	case model.KindPeer:
		row("NAME", "CLUSTER", "ADDRESS", "REVISION")
	case model.KindCluster:
		row("NAME", "ADMITTED", "POD NETWORK", "REVISION")
	default:
		return fmt.Errorf("kind %q has no table", k)
	}
	for _, o := range objs {
		m := o.ObjectMeta()
		rev := fmt.Sprint(m.Revision)
		switch o := o.(type) {
		case *model.ServiceNetwork:
			row(m.Name, m.Owner, string(o.Mode), dash(o.Domain), dash(strings.Join(o.Addresses, ",")), rev)
		case *model.Service:
			row(m.Name, m.Owner, o.Network, dash(strings.Join(o.Hostnames(), ",")), listeners(o.Listeners), fmt.Sprint(len(o.Rules)), rev)
		case *model.TargetGroup:
			row(m.Name, m.Owner, string(o.Protocol)+"/"+string(o.ProtocolVersion), targets(o), rev)
		case *model.Certificate:
			names, notAfter := certSummary(o.CertPEM)
			row(m.Name, m.Owner, names, notAfter, rev)
		case *model.WorkloadSet:
			row(m.Name, m.Owner, o.Namespace, fmt.Sprint(len(o.Workloads)), rev)
		case *model.ServiceExport:
			ports, endpoints := make([]string, 0, len(o.Ports)), 0
			for _, p := range o.Ports {
				ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
				endpoints += len(p.Targets)
			}
			row(m.Name, m.Owner, o.Namespace+"/"+o.Service, string(o.Type), dash(strings.Join(ports, ",")), fmt.Sprint(endpoints),
				o.ExportedAt.UTC().Format(time.RFC3339), rev)
		case *model.Peer:
			row(m.Name, m.Owner, o.Address, rev)
		case *model.Cluster:
			row(m.Name, o.Added.UTC().Format(time.RFC3339), cmp.Or(o.PodNetwork, "-"), rev)
		}
	}
	return tw.Flush()
}

// listeners summarizes listeners as "8080/HTTP,443/HTTPS(api.example.com)".
func listeners(ls []model.Listener) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		s := fmt.Sprintf("%d/%s", l.Port, l.Protocol)
		if l.Hostname != "" {
			s += "(" + l.Hostname + ")"
		}
		parts = append(parts, s)
	}
	return dash(strings.Join(parts, ","))
}

// targets summarizes a group's targets: "3 (2 Active, 1 Draining)".
func targets(g *model.TargetGroup) string {
	if len(g.Targets) == 0 {
		return "0"
	}
	count := map[model.TargetState]int{}
	for _, t := range g.Targets {
		count[t.State]++
	}
	states := make([]string, 0, len(count))
	for _, s := range slices.Sorted(maps.Keys(count)) {
		states = append(states, fmt.Sprintf("%d %s", count[s], s))
	}
	return fmt.Sprintf("%d (%s)", len(g.Targets), strings.Join(states, ", "))
}

// certSummary returns the leaf's DNS names and expiry, or "-" for what
// cannot be read.
func certSummary(certPEM string) (names, notAfter string) {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return "-", "-"
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "-", "-"
	}
	return dash(strings.Join(leaf.DNSNames, ",")), leaf.NotAfter.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteClusters renders the admitted clusters' status (GET /v1/clusters)
// in format (one of Formats): in a table, one row a cluster with its lease
// (alive, lapsed, or held: unrenewed but kept alive because most leases
// lapsed at once; and how long ago it was renewed), its peers (reached
// by other clusters' proxies / published), the median RTT they measured,
// its last sync, ages as of now, and its pod network ("-": its own).
func WriteClusters(w io.Writer, format string, clusters []api.Cluster, now time.Time) error {
	if format != "table" {
		return encode(w, format, clusters)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADMITTED\tLEASE\tPEERS\tRTT\tLAST SYNC\tPOD NETWORK")
	for _, c := range clusters {
		lease := "lapsed"
		if c.Lease.Alive {
			lease = "alive"
		}
		if c.Lease.Held {
			lease = "held"
		}
		if c.Lease.AgeMillis < 0 {
			lease += " (never renewed)"
		} else {
			lease += " (" + age(time.Duration(c.Lease.AgeMillis)*time.Millisecond) + ")"
		}
		rtt := "-"
		if c.RTTMicros > 0 {
			rtt = (time.Duration(c.RTTMicros) * time.Microsecond).String()
		}
		sync := "never"
		if !c.LastSync.IsZero() {
			sync = age(now.Sub(c.LastSync))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", c.Name, age(now.Sub(c.Added)), lease, c.PeersReached, c.PeersPublished, rtt, sync, cmp.Or(c.PodNetwork, "-"))
	}
	return tw.Flush()
}

// age renders a duration as a short age: "800ms ago", "12s ago", "5m ago",
// "3h ago", "2d ago".
func age(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String() + " ago"
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
