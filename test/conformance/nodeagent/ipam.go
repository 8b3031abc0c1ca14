package nodeagent

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ipam hands out Pod IPs from a prefix, round robin: a released address is
// only reused after the whole range has been handed out once more. A data
// plane that still holds stale endpoints then reaches nothing rather than
// another application's new Pod, which would make test failures confusing.
type ipam struct {
	prefix netip.Prefix
	skip   netip.Addr // the node's own address

	mu    sync.Mutex
	next  netip.Addr
	inUse map[netip.Addr]types.UID
	byPod map[types.UID]netip.Addr
}

func newIPAM(prefix netip.Prefix, node netip.Addr) (*ipam, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return nil, fmt.Errorf("pod CIDR %s: want an IPv4 prefix of /30 or larger", prefix)
	}
	return &ipam{
		prefix: prefix,
		skip:   node,
		next:   prefix.Addr().Next(),
		inUse:  map[netip.Addr]types.UID{},
		byPod:  map[types.UID]netip.Addr{},
	}, nil
}

// allocate returns the Pod's address. A Pod keeps its address for life; one
// that already reports an address in the range (the agent restarted) gets
// it back if it is free.
func (p *ipam) allocate(pod types.UID, reported string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ip, ok := p.byPod[pod]; ok {
		return ip, nil
	}
	if ip, err := netip.ParseAddr(reported); err == nil && p.usable(ip) && p.inUse[ip] == "" {
		p.take(ip, pod)
		return ip, nil
	}
	start := p.next
	for ip := start; ; {
		if p.usable(ip) && p.inUse[ip] == "" {
			p.take(ip, pod)
			p.next = p.after(ip)
			return ip, nil
		}
		if ip = p.after(ip); ip == start {
			return netip.Addr{}, errors.New("pod CIDR " + p.prefix.String() + " is exhausted")
		}
	}
}

// release frees the Pod's address, if it has one.
func (p *ipam) release(pod types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ip, ok := p.byPod[pod]; ok {
		delete(p.byPod, pod)
		delete(p.inUse, ip)
	}
}

func (p *ipam) take(ip netip.Addr, pod types.UID) {
	p.inUse[ip] = pod
	p.byPod[pod] = ip
}

// after is the address following ip, wrapping at the end of the prefix.
func (p *ipam) after(ip netip.Addr) netip.Addr {
	if n := ip.Next(); p.prefix.Contains(n) {
		return n
	}
	return p.prefix.Addr()
}

// usable excludes the network address, the node, and addresses whose last
// octet is 0 or 255 (some software treats those as network or broadcast
// addresses whatever the prefix).
func (p *ipam) usable(ip netip.Addr) bool {
	if !p.prefix.Contains(ip) || ip == p.prefix.Addr() || ip == p.skip {
		return false
	}
	last := ip.As4()[3]
	return last != 0 && last != 255
}
