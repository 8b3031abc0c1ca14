package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// grpcCmd calls grpc.testing.BenchmarkService through a proxy as fast as
// -w workers can (closed loop): unary UnaryCall, or one StreamingCall per
// worker with a message sent and its answer awaited in turn.
func grpcCmd(args []string) error {
	fs := flag.NewFlagSet("grpc", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port of the proxy (h2c)")
	authority := fs.String("authority", "grpc.example.com", ":authority the routes match")
	stream := fs.Bool("stream", false, "messages on one stream per worker instead of unary calls")
	conns := fs.Int("c", 4, "HTTP/2 connections")
	workers := fs.Int("w", 64, "calls (or streams) in flight, spread over the connections")
	size := fs.Int("size", 64, "payload bytes each way")
	duration := fs.Duration("d", 5*time.Second, "how long")
	_ = fs.Parse(args)
	if *addr == "" || *conns < 1 || *conns > 1000 || *workers < 1 || *workers > 100_000 || *size < 0 || *size > 1<<20 || *duration <= 0 {
		return errors.New("-addr is required; -c 1..1000, -w 1..100000, -size 0..1MiB, -d positive")
	}
	clients := make([]testpb.BenchmarkServiceClient, *conns)
	for i := range clients {
		cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(*authority))
		if err != nil {
			return err
		}
		defer cc.Close()
		clients[i] = testpb.NewBenchmarkServiceClient(cc)
	}
	req := &testpb.SimpleRequest{ResponseSize: int32(*size), Payload: &testpb.Payload{Body: make([]byte, *size)}}
	// One call first on each connection, so that dialling is not measured.
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.UnaryCall(ctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("first call: %w", err)
		}
	}
	res := closedLoop(*workers, *duration, func(w int, deadline time.Time, r *recorder) {
		c := clients[w%len(clients)]
		if *stream {
			streamWorker(c, req, deadline, r)
			return
		}
		for time.Now().Before(deadline) {
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.UnaryCall(ctx, req)
			cancel()
			if err != nil {
				r.fail(err)
				continue
			}
			r.lat = append(r.lat, time.Since(t0))
		}
	})
	res.mode = "grpc-unary"
	if *stream {
		res.mode = "grpc-stream"
	}
	res.print()
	return nil
}

func streamWorker(c testpb.BenchmarkServiceClient, req *testpb.SimpleRequest, deadline time.Time, r *recorder) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(10*time.Second))
	defer cancel()
	s, err := c.StreamingCall(ctx)
	if err != nil {
		r.fail(err)
		return
	}
	for time.Now().Before(deadline) {
		t0 := time.Now()
		if err := s.Send(req); err != nil {
			r.fail(err)
			return
		}
		if _, err := s.Recv(); err != nil {
			r.fail(err)
			return
		}
		r.lat = append(r.lat, time.Since(t0))
	}
	s.CloseSend()
	s.Recv() // io.EOF once the server ends the stream
}

func grpcServerCmd(args []string) error {
	fs := flag.NewFlagSet("grpc-server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve h2c gRPC on")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("serving on", ln.Addr())
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, benchServer{})
	return s.Serve(ln)
}

// benchServer answers each request with a payload of the size it asks for.
type benchServer struct {
	testpb.UnimplementedBenchmarkServiceServer
}

// maxResponse bounds the payload a request may ask for.
const maxResponse = 1 << 20

func reply(req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if req.ResponseSize < 0 || req.ResponseSize > maxResponse {
		return nil, status.Errorf(codes.InvalidArgument, "response_size %d: want 0..%d", req.ResponseSize, maxResponse)
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.ResponseSize)}}, nil
}

func (benchServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return reply(req)
}

func (benchServer) StreamingCall(s testpb.BenchmarkService_StreamingCallServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil // the client closed its side (or went away)
		}
		resp, err := reply(req)
		if err != nil {
			return err
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}
