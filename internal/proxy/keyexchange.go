package proxy

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

type keyExchangeGroup struct {
	name string
	id   tls.CurveID
}

// keyExchangeGroups are the key exchange groups Config.TLSKeyExchange may
// name, by the names ParseKeyExchange reads (crypto/tls's, and P256 for
// CurveP256 and so on).
var keyExchangeGroups = []keyExchangeGroup{
	{"X25519MLKEM768", tls.X25519MLKEM768},
	{"SecP256r1MLKEM768", tls.SecP256r1MLKEM768},
	{"SecP384r1MLKEM1024", tls.SecP384r1MLKEM1024},
	{"X25519", tls.X25519},
	{"P256", tls.CurveP256},
	{"P384", tls.CurveP384},
	{"P521", tls.CurveP521},
}

// ParseKeyExchange reads a comma-separated list of key exchange groups
// (case-insensitive), such as "X25519MLKEM768,X25519,P256", for
// Config.TLSKeyExchange. An empty list is Go's default. An unknown or
// repeated name is an error naming it.
func ParseKeyExchange(list string) ([]tls.CurveID, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var ids []tls.CurveID
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("empty key exchange group in %q", list)
		}
		i := slices.IndexFunc(keyExchangeGroups, func(g keyExchangeGroup) bool {
			return strings.EqualFold(g.name, name) || strings.EqualFold(g.id.String(), name)
		})
		if i < 0 {
			known := make([]string, len(keyExchangeGroups))
			for j, g := range keyExchangeGroups {
				known[j] = g.name
			}
			return nil, fmt.Errorf("unknown key exchange group %q (known: %s)", name, strings.Join(known, ", "))
		}
		id := keyExchangeGroups[i].id
		if slices.Contains(ids, id) {
			return nil, fmt.Errorf("key exchange group %q named twice", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
