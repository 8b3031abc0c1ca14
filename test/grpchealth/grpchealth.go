// Package grpchealth serves gRPC's own health service as a real gRPC
// backend for tests: it answers unary calls, returns error statuses and
// streams status changes. Test support only; nothing in the product
// imports it.
package grpchealth

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Serve serves the health service on ln until the test ends, with service
// "inventory" SERVING, and returns it, to change the status it streams.
func Serve(t testing.TB, ln net.Listener) *health.Server {
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("inventory", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return hs
}
