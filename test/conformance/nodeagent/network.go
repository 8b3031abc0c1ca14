package nodeagent

import (
	"context"
	"net"

	"trellis.dev/trellis/test/conformance/backend"
	"trellis.dev/trellis/test/netns"
)

// InNamespace is the Network of a test network namespace: the agent's
// sockets are created there (on the namespace's thread) while the agent
// itself runs in the test process.
func InNamespace(ns *netns.NS) backend.Network { return nsNetwork{ns} }

type nsNetwork struct{ ns *netns.NS }

func (n nsNetwork) Listen(network, addr string) (net.Listener, error) {
	return n.ns.Listen(network, addr)
}

func (n nsNetwork) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	var err error
	if doErr := n.ns.Do(context.Background(), func() { pc, err = net.ListenPacket(network, addr) }); doErr != nil {
		return nil, doErr
	}
	return pc, err
}
