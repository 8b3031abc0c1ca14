package backend

import (
	"fmt"
	"net/http"
	"strconv"

	"sigs.k8s.io/gateway-api/conformance/echo-basic/udpechoserver"
)

// startGeneric runs an image this package does not know: an HTTP echo
// (echo-basic's handler) on each declared TCP port and a UDP echo on each
// declared UDP port. A container with no ports runs nothing and is still
// considered started, as a real one that only computes would be.
func startGeneric(in *Instance, c Container) error {
	pc := c.podContext()
	for _, p := range c.Ports {
		port := strconv.Itoa(int(p.Port))
		switch p.Protocol {
		case "", "TCP":
			s := &echoServer{c: c, ctx: pc, httpPort: port, attempts: map[string]int{}}
			c.printf("Starting server, listening on port %s (http)\n", port)
			if err := serveHTTP(in, c, port, &http.Server{Handler: s.handler()}, nil); err != nil {
				return fmt.Errorf("http on port %s: %w", port, err)
			}
		case "UDP":
			err := serveUDP(in, c, port, udpechoserver.Context{
				Namespace: pc.Namespace, Ingress: pc.Ingress, Service: pc.Service, Pod: pc.Pod,
			})
			if err != nil {
				return fmt.Errorf("udp on port %s: %w", port, err)
			}
		default:
			return fmt.Errorf("port %s: protocol %s is not emulated", port, p.Protocol)
		}
	}
	return nil
}
