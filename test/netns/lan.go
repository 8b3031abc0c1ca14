package netns

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os/exec"
	"testing"
)

// LANPrefix is the subnet of the namespaces' shared LAN (TEST-NET-1, RFC
// 5737: documentation addresses, routed nowhere). It exists only on the
// bridge and veth links a test makes between its own namespaces.
const LANPrefix = "192.0.2.0/24"

// LAN is an Ethernet segment joining namespaces of one test: a bridge in a
// namespace of its own, and a veth link from it to each attached namespace.
// It stands for the network between clusters: attached namespaces reach
// each other's LAN addresses, and nothing else of each other (each keeps
// LocalRange to itself, so two clusters may use the same addresses there).
type LAN struct {
	hub *NS
}

// NewLAN makes a LAN, removed with its namespaces when the test ends.
func NewLAN(t testing.TB) *LAN {
	t.Helper()
	hub := New(t)
	run(t, "ip", "-n", hub.Name, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", hub.Name, "link", "set", "br0", "up")
	return &LAN{hub: hub}
}

// Attach links ns to the LAN with address addr (in LANPrefix, such as
// "192.0.2.10"). Addresses must be unique on the LAN.
func (l *LAN) Attach(t testing.TB, ns *NS, addr string) {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil || !netip.MustParsePrefix(LANPrefix).Contains(a) {
		t.Fatalf("netns: LAN address %q is not in %s", addr, LANPrefix)
	}
	b := make([]byte, 3)
	rand.Read(b)
	// Interface names are at most 15 bytes; the hub end is named once,
	// the namespace's end is renamed to lan0 there.
	hubEnd, nsEnd := "v"+hex.EncodeToString(b)+"h", "v"+hex.EncodeToString(b)+"n"
	run(t, "ip", "-n", l.hub.Name, "link", "add", hubEnd, "type", "veth", "peer", "name", nsEnd)
	t.Cleanup(func() { exec.Command("ip", "-n", l.hub.Name, "link", "del", hubEnd).Run() })
	run(t, "ip", "-n", l.hub.Name, "link", "set", hubEnd, "master", "br0", "up")
	run(t, "ip", "-n", l.hub.Name, "link", "set", nsEnd, "netns", ns.Name)
	run(t, "ip", "-n", ns.Name, "link", "set", nsEnd, "name", "lan0")
	run(t, "ip", "-n", ns.Name, "addr", "add", addr+"/24", "dev", "lan0")
	run(t, "ip", "-n", ns.Name, "link", "set", "lan0", "up")
}
