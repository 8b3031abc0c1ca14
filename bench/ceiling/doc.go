// Package ceiling holds two deliberately minimal HTTP/1.1 forwarders that
// bench/proxies.sh runs beside Trellis, nginx and HAProxy (with
// BENCH_CEILING=1) to show what this machine allows a Go proxy at all:
//
//   - goroutine: a goroutine per client connection, pooled target
//     connections, one header added — the architecture of Trellis's fast
//     path with none of its features (no routing, no limits, no metrics);
//   - epoll: one epoll loop per thread on SO_REUSEPORT sockets, each client
//     connection paired with its own target connection — nginx's
//     architecture, with nothing but forwarding.
//
// goroutine serves net/http/pprof on GOMINIMAL_DEBUG=ADDR when set, for
// runtime traces beside Trellis's (bench/gotrace-waits).
//
// They assume well-behaved peers (a request head in one read, responses
// with Content-Length) and are measuring instruments, not proxies: nothing
// else may import or run them.
package ceiling
