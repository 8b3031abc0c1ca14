package kubernetes

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"trellis.dev/trellis/internal/model"
)

// exportHostnames are the hostnames of a Headless export's ready endpoints
// (a StatefulSet's pods), each with its addresses, from the Service's
// slices: what makes "<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local"
// reach that one pod. Only ready endpoints are named, as the MCS API
// names them. An endpoint whose hostname is not an RFC 1123 label, the
// second endpoint of a hostname already taken by another address, and
// hostnames beyond model.MaxExportHostnames are left out; skipped says
// which and why, for the export's Valid condition (at most a few named).
func exportHostnames(eps []*discoveryv1.EndpointSlice) (hostnames []model.ExportHostname, skipped []string) {
	byName := map[string]*model.ExportHostname{}
	skip := func(format string, args ...any) {
		skipped = append(skipped, fmt.Sprintf(format, args...))
	}
	for _, es := range eps {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for i, ep := range es.Endpoints {
			if ep.Hostname == nil || !deref(ep.Conditions.Ready, true) || len(ep.Addresses) == 0 {
				continue
			}
			h := *ep.Hostname
			if errs := validation.IsDNS1123Label(h); len(errs) > 0 {
				skip("EndpointSlice %s endpoints[%d].hostname %q is not an RFC 1123 label", es.Name, i, truncate(h, 70))
				continue
			}
			addr, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || addr.Zone() != "" {
				continue // not a target either (translate.TargetSet)
			}
			a := addr.Unmap().String()
			eh := byName[h]
			switch {
			case eh == nil:
				if len(byName) >= model.MaxExportHostnames {
					skip("EndpointSlice %s endpoints[%d].hostname %q: more than %d hostnames", es.Name, i, h, model.MaxExportHostnames)
					continue
				}
				byName[h] = &model.ExportHostname{Hostname: h, Addresses: []string{a}}
			case slices.Contains(eh.Addresses, a):
			case len(eh.Addresses) >= model.MaxHostnameAddresses || sameFamily(eh.Addresses, addr):
				// Two endpoints of one family claim the name: which pod it
				// means is unclear, so it keeps the first only.
				skip("EndpointSlice %s endpoints[%d].hostname %q is already the name of %s", es.Name, i, h, strings.Join(eh.Addresses, ","))
			default:
				eh.Addresses = append(eh.Addresses, a)
			}
		}
	}
	for _, eh := range byName {
		slices.Sort(eh.Addresses)
		hostnames = append(hostnames, *eh)
	}
	slices.SortFunc(hostnames, func(x, y model.ExportHostname) int { return strings.Compare(x.Hostname, y.Hostname) })
	return hostnames, skipped
}

// sameFamily reports whether one of addrs is of a's IP family.
func sameFamily(addrs []string, a netip.Addr) bool {
	for _, s := range addrs {
		if netip.MustParseAddr(s).Is4() == a.Is4() {
			return true
		}
	}
	return false
}

// truncate cuts s to at most n bytes, for messages quoting what a user
// wrote.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// skippedNote is what the export's Valid condition says of the hostnames
// left out: the first few, and how many in all.
func skippedNote(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	const shown = 3
	note := "; left out of the per-pod names: " + strings.Join(skipped[:min(shown, len(skipped))], "; ")
	if len(skipped) > shown {
		note += fmt.Sprintf(" (and %d more)", len(skipped)-shown)
	}
	return note
}
