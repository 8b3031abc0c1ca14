package backend

import (
	"encoding/json"
	"fmt"
	"net"

	"sigs.k8s.io/gateway-api/conformance/echo-basic/udpechoserver"
)

// startUDPEcho starts the UDP echo server on UDP_PORT (8080).
func startUDPEcho(in *Instance, c Container) error {
	port, err := c.port("UDP_PORT", "8080")
	if err != nil {
		return err
	}
	pc := c.podContext()
	if err := serveUDP(in, c, port, udpechoserver.Context{
		Namespace: pc.Namespace, Ingress: pc.Ingress, Service: pc.Service, Pod: pc.Pod,
	}); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	c.printf("UDP server listening on :%s with context: %+v\n", port, pc)
	return nil
}

// serveUDP answers every datagram on port with the suite's EchoResponse:
// the payload it got and the pod's identity.
func serveUDP(in *Instance, c Container, port string, ctx udpechoserver.Context) error {
	conn, err := c.Network.ListenPacket("udp", c.addr(port))
	if err != nil {
		return err
	}
	in.serve(func() {
		buf := make([]byte, 1024)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				return
			}
			c.printf("Received UDP %s from %s\n", buf[:n], from)
			reply, err := json.Marshal(udpechoserver.EchoResponse{Request: string(buf[:n]), Context: ctx})
			if err != nil {
				c.printf("Error marshaling UDP response: %v\n", err)
				continue
			}
			if _, err := conn.WriteTo(reply, from); err != nil {
				c.printf("Error writing UDP: %v\n", err)
			}
		}
	}, func() { conn.Close() })
	return nil
}
