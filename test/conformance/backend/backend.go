// Package backend runs, inside the test process, the containers that the
// Gateway API conformance suite deploys. There is no container runtime on the
// machines this project tests on, so the node agent (package nodeagent) hands
// each container to Run, which starts in-process servers that answer the way
// the real image does:
//
//   - registry.k8s.io/gateway-api/echo-basic: the HTTP echo server (HTTP, h2c,
//     HTTPS with optional client-certificate verification, WebSocket, the
//     /status, /health and /retry endpoints), or, chosen by environment
//     variable as the image does, the gRPC echo service (GRPC_ECHO_SERVER),
//     the TCP echo server (TCP_ECHO_SERVER) or the UDP echo server
//     (UDP_ECHO_SERVER);
//   - registry.k8s.io/coredns/coredns: a DNS stand-in that answers the zones
//     its Corefile gives to the whoami plugin and never forwards anything;
//   - any other image: an HTTP echo on each declared TCP containerPort and a
//     UDP echo on each declared UDP containerPort.
//
// The response formats are the ones the suite's helpers parse (package
// sigs.k8s.io/gateway-api/conformance/utils/...); the gRPC, TCP and UDP
// message types are the suite's own. Servers bind the pod's IP only, and
// write what the image would print to stdout to the container's log.
//
// The package owns no Kubernetes logic: it never talks to the API server.
package backend

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// Container is one container to run, already resolved the way the kubelet
// would resolve it: environment values are final and every file the
// container can read through its volume mounts is in Files.
type Container struct {
	// Image selects the emulation (see the package documentation).
	Image string
	// Args are the container's arguments (its command is not used).
	Args []string
	// Env holds the container's environment.
	Env map[string]string
	// Files maps absolute paths inside the container to their content.
	Files map[string][]byte
	// Ports are the container's declared ports; only images without an
	// emulation of their own use them.
	Ports []Port
	// IP is the pod's address; every server binds it.
	IP netip.Addr
	// Stdout receives what the image prints. It must be safe for
	// concurrent use. Nil discards the output.
	Stdout io.Writer
	// Network opens the sockets; nil means the test process's own network
	// namespace (Host).
	Network Network
}

// Port is a declared container port.
type Port struct {
	Port     int32
	Protocol string // "TCP" (the default when empty) or "UDP"
}

// Network opens sockets. It lets the node agent place servers inside a
// network namespace that the test process is not in.
type Network interface {
	Listen(network, addr string) (net.Listener, error)
	ListenPacket(network, addr string) (net.PacketConn, error)
}

// Host is the network namespace of the test process itself.
var Host Network = hostNetwork{}

type hostNetwork struct{}

func (hostNetwork) Listen(network, addr string) (net.Listener, error) {
	return net.Listen(network, addr)
}

func (hostNetwork) ListenPacket(network, addr string) (net.PacketConn, error) {
	return net.ListenPacket(network, addr)
}

// Instance is a running container.
type Instance struct {
	stops []func()
	wg    sync.WaitGroup
	once  sync.Once
}

// Run starts the servers of c and returns once all of them are listening.
// When any of them cannot start, the others are stopped and the error says
// which one failed, so the caller can report it as the container's reason.
func Run(c Container) (*Instance, error) {
	if !c.IP.IsValid() {
		return nil, errors.New("container has no IP to bind")
	}
	if c.Network == nil {
		c.Network = Host
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	in := &Instance{}
	var err error
	switch kindOf(c.Image) {
	case echoBasic:
		switch {
		case c.Env["GRPC_ECHO_SERVER"] != "":
			err = startGRPCEcho(in, c)
		case c.Env["TCP_ECHO_SERVER"] != "":
			err = startTCPEcho(in, c)
		case c.Env["UDP_ECHO_SERVER"] != "":
			err = startUDPEcho(in, c)
		default:
			err = startHTTPEcho(in, c)
		}
	case coreDNS:
		err = startDNS(in, c)
	default:
		err = startGeneric(in, c)
	}
	if err != nil {
		in.Stop()
		return nil, err
	}
	return in, nil
}

// Stop closes every server and waits until their goroutines have returned.
// It is safe to call more than once.
func (in *Instance) Stop() {
	in.once.Do(func() {
		for i := len(in.stops) - 1; i >= 0; i-- {
			in.stops[i]()
		}
	})
	in.wg.Wait()
}

// serve runs serve on its own goroutine until stop makes it return.
func (in *Instance) serve(serve func(), stop func()) {
	in.stops = append(in.stops, stop)
	in.wg.Go(serve)
}

type kind int

const (
	generic kind = iota
	echoBasic
	coreDNS
)

// kindOf maps an image reference to its emulation by repository name, so
// any registry and tag of the same image is recognized.
func kindOf(image string) kind {
	repo := image
	if i := strings.LastIndex(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	switch {
	case repo == "echo-basic" || strings.HasSuffix(repo, "/echo-basic"):
		return echoBasic
	case repo == "coredns" || strings.HasSuffix(repo, "/coredns"):
		return coreDNS
	}
	return generic
}

// env returns the container's value of name, or def when it is unset or
// empty, as the image's os.Getenv checks do.
func (c Container) env(name, def string) string {
	if v := c.Env[name]; v != "" {
		return v
	}
	return def
}

// port returns the port named by an environment variable, checked to be a
// number.
func (c Container) port(name, def string) (string, error) {
	p := c.env(name, def)
	if _, err := strconv.ParseUint(p, 10, 16); err != nil {
		return "", fmt.Errorf("%s=%q is not a port number", name, p)
	}
	return p, nil
}

// ports is port of each name and default of namesAndDefaults (name,
// default, name, default...), in order.
func (c Container) ports(namesAndDefaults ...string) ([]string, error) {
	var out []string
	for i := 0; i+1 < len(namesAndDefaults); i += 2 {
		p, err := c.port(namesAndDefaults[i], namesAndDefaults[i+1])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// addr joins the pod IP and a port.
func (c Container) addr(port string) string {
	return net.JoinHostPort(c.IP.String(), port)
}

// readFile reads a file the container sees through its volume mounts.
func (c Container) readFile(path string) ([]byte, error) {
	b, ok := c.Files[path]
	if !ok {
		return nil, fmt.Errorf("open %s: no such file in the container's volumes", path)
	}
	return b, nil
}

// printf writes one line of the image's stdout.
func (c Container) printf(format string, args ...any) {
	fmt.Fprintf(c.Stdout, format, args...)
}

// podContext is the identity every echo response carries.
type podContext struct {
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
}

func (c Container) podContext() podContext {
	return podContext{
		Namespace: c.Env["NAMESPACE"],
		Ingress:   c.Env["INGRESS_NAME"],
		Service:   c.Env["SERVICE_NAME"],
		Pod:       c.Env["POD_NAME"],
	}
}
