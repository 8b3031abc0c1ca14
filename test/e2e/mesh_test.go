package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/netns"
)

// The multi-cluster harness: one control plane and three real
// kube-apiservers, each with its own trellis controller and proxy in its
// own network namespace, joined to the control plane by one-time tokens,
// on a LAN (192.0.2.0/24) that carries only the control plane's API and
// the proxies' peer hop. Starting it takes a cluster's start three times
// over (10-20 s each on a loaded machine), so a test starts it once.

// Addresses inside every cluster's namespace.
const (
	// meshProxyIP is where each cluster's proxy binds: the address every
	// service name and every clusterset name resolves to, and the IP of
	// the cluster's ClusterSetIP ServiceImports (--clusterset-ip).
	meshProxyIP = "198.18.0.2"
	// meshDNS is where each cluster's proxy serves DNS.
	meshDNS = meshProxyIP + ":53"
)

// meshOptions choose what startMesh runs.
type meshOptions struct {
	// etcd runs two servers on one etcd instead of one server on its own
	// store.
	etcd bool
}

// mesh is the running control plane and clusters.
type mesh struct {
	lan *netns.LAN
	// cp is the control plane's namespace, at 192.0.2.1.
	cp  *netns.NS
	dir string
	// admin is the administrator token; api the flags that reach the
	// control plane (servers and CA).
	admin string
	api   []string
	// server is the first server (on 192.0.2.1:7070); serverArgs gives the
	// flags to start another on listen.
	server     *proc
	serverArgs func(listen string) []string
	clusters   []*meshCluster
}

// meshCluster is one cluster: its apiserver, controller and proxy.
type meshCluster struct {
	name string
	kube *kube.Cluster
	kc   client.Client
	// lan is the cluster's LAN address, where its proxy takes peer hops.
	lan               string
	controller, proxy *proc
}

// startMesh starts the control plane and clusters a, b and c, and returns
// once every controller has joined and every proxy has published its
// peer address.
func startMesh(t *testing.T, opts meshOptions) *mesh {
	t.Helper()
	m := &mesh{lan: netns.NewLAN(t), dir: t.TempDir(), admin: "admin-token"}
	adminFile := filepath.Join(m.dir, "admins")
	if err := os.WriteFile(adminFile, []byte(m.admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(m.dir, "data")
	caFile := filepath.Join(m.dir, "ca.crt")
	m.serverArgs = func(listen string) []string {
		return []string{"server", "--listen", listen, "--data", data, "--tokens", "unused-token=unused", "--ca-cert-out", caFile,
			"--admin-tokens-file", adminFile, "--tls-hosts", "192.0.2.1", "--heartbeat", "1s"}
	}
	serverURL := "https://192.0.2.1:7070"
	if opts.etcd {
		e := kube.StartEtcd(t)
		m.cp = e.NS
		m.serverArgs = func(listen string) []string {
			return []string{"server", "--listen", listen, "--etcd-endpoints", e.Endpoint, "--etcd-prefix", "/mc/",
				"--tokens", "unused-token=unused", "--ca-cert-out", caFile,
				"--admin-tokens-file", adminFile, "--tls-hosts", "192.0.2.1", "--heartbeat", "1s"}
		}
		serverURL += ",https://192.0.2.1:7071"
	} else {
		m.cp = netns.New(t)
	}
	m.lan.Attach(t, m.cp, "192.0.2.1")
	m.server = start(t, m.cp, "server", m.serverArgs("192.0.2.1:7070")...)
	m.server.waitOutput(t, 10*time.Second, "API on https://192.0.2.1:7070")
	if opts.etcd {
		// The second server shares the first's store, and so its CA.
		other := start(t, m.cp, "server-2", m.serverArgs("192.0.2.1:7071")...)
		other.waitOutput(t, 10*time.Second, "API on https://192.0.2.1:7071")
	}
	m.api = []string{"--server", serverURL, "--ca-file", caFile}

	for i, name := range []string{"a", "b", "c"} {
		c := &meshCluster{name: name, kube: kube.Start(t, kube.Options{}), lan: fmt.Sprintf("192.0.2.%d", 10+i)}
		c.kc = c.kube.Client(t)
		m.lan.Attach(t, c.kube.NS, c.lan)
		m.clusters = append(m.clusters, c)
	}
	for _, c := range m.clusters {
		c.controller = start(t, c.kube.NS, c.name+"-controller", append([]string{"controller", "--kubeconfig", c.kube.Kubeconfig,
			"--identity-dir", filepath.Join(m.dir, c.name+"-controller"), "--join-token-file", m.joinToken(t, c, "controller"),
			"--metrics-address", "0", "--health-address", "0", "--clusterset-ip", meshProxyIP}, m.api...)...)
		c.controller.waitOutput(t, 30*time.Second, "joined the control plane")
		c.proxy = start(t, c.kube.NS, c.name+"-proxy", append([]string{"proxy", "--bind", meshProxyIP, "--admin-listen", "",
			"--identity-dir", filepath.Join(m.dir, c.name+"-proxy"), "--join-token-file", m.joinToken(t, c, "proxy"),
			"--peer-listen", c.lan + ":15443", "--dns-listen", meshDNS}, m.api...)...)
		c.proxy.waitOutput(t, 30*time.Second, "peer address published")
	}
	return m
}

// joinToken admits c (again) and writes a one-time join token for one of
// its components to a file, whose path it returns.
func (m *mesh) joinToken(t *testing.T, c *meshCluster, component string) string {
	t.Helper()
	tok := strings.TrimSpace(m.trellis(t, "cluster", "add", c.name))
	if tok == "" {
		t.Fatal("cluster add printed no token")
	}
	f := filepath.Join(m.dir, c.name+"-"+component+".token")
	if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// trellis runs a trellis command against the control plane as the
// administrator and returns its output.
func (m *mesh) trellis(t *testing.T, args ...string) string {
	t.Helper()
	return trellisOutput(t, m.cp, append(append(args, "--token", m.admin), m.api...)...)
}

// lookup asks the cluster's proxy's nameserver for name's records of type
// qtype, over UDP from inside the cluster's namespace.
func (c *meshCluster) lookup(name string, qtype uint16) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := c.kube.NS.DialContext(ctx, "udp", meshDNS)
	if err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: conn}
	defer co.Close()
	co.SetDeadline(time.Now().Add(3 * time.Second))
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// resolve returns the addresses of the A records the cluster's nameserver
// answers for name, or the error or rcode that stood in the way.
func (c *meshCluster) resolve(name string) ([]string, error) {
	r, err := c.lookup(name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, nil
}
