package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
)

// grpcEcho implements the suite's GrpcEcho service: Echo and EchoTwo answer
// with what they saw; EchoThree is left unimplemented on purpose.
type grpcEcho struct {
	pb.UnimplementedGrpcEchoServer
	c       Container
	service string // the service's full name
	tls     bool
	ctx     *pb.Context
}

// startGRPCEcho serves GrpcEcho (and reflection) in plain text on HTTP_PORT
// (3000) and, when TLS_SERVER_CERT and TLS_SERVER_PRIV_KEY are set, over TLS
// on HTTPS_PORT (8443).
func startGRPCEcho(in *Instance, c Container) error {
	svc := pb.File_grpcecho_proto.Services().ByName("GrpcEcho")
	if svc == nil {
		return errors.New("grpc: service GrpcEcho missing from the suite's descriptor")
	}
	pc := c.podContext()
	base := grpcEcho{
		c:       c,
		service: string(svc.FullName()),
		ctx:     &pb.Context{Namespace: pc.Namespace, Ingress: pc.Ingress, ServiceName: pc.Service, Pod: pc.Pod},
	}
	ports, err := c.ports("HTTP_PORT", "3000", "HTTPS_PORT", "8443")
	if err != nil {
		return err
	}
	httpPort, httpsPort := ports[0], ports[1]

	plain := base
	if err := serveGRPC(in, c, httpPort, grpc.NewServer(), &plain); err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	c.printf("plaintext server listening at %s\n", c.addr(httpPort))

	cfg, err := serverTLS(c, "TLS_SERVER_CERT", "TLS_SERVER_PRIV_KEY")
	if err != nil {
		return fmt.Errorf("grpc tls: %w", err)
	}
	if cfg == nil {
		return nil
	}
	secure := base
	secure.tls = true
	if err := serveGRPC(in, c, httpsPort, grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cfg.Certificates[0]))), &secure); err != nil {
		return fmt.Errorf("grpc tls: %w", err)
	}
	c.printf("secure server listening at %s\n", c.addr(httpsPort))
	return nil
}

func serveGRPC(in *Instance, c Container, port string, srv *grpc.Server, echo *grpcEcho) error {
	pb.RegisterGrpcEchoServer(srv, echo)
	reflection.Register(srv)
	ln, err := c.Network.Listen("tcp", c.addr(port))
	if err != nil {
		return err
	}
	in.serve(func() { srv.Serve(ln) }, srv.Stop)
	return nil
}

// Echo answers with the request's method, metadata and pod context.
func (s *grpcEcho) Echo(ctx context.Context, in *pb.EchoRequest) (*pb.EchoResponse, error) {
	return s.echo(ctx, "Echo", in)
}

// EchoTwo behaves as Echo at a second method name.
func (s *grpcEcho) EchoTwo(ctx context.Context, in *pb.EchoRequest) (*pb.EchoResponse, error) {
	return s.echo(ctx, "EchoTwo", in)
}

func (s *grpcEcho) echo(ctx context.Context, method string, in *pb.EchoRequest) (*pb.EchoResponse, error) {
	conn := "plaintext"
	if s.tls {
		conn = "TLS"
	}
	s.c.printf("Received over %s: %v\n", conn, in)
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil, errors.New("failed to retrieve metadata from incoming request")
	}
	a := &pb.Assertions{
		FullyQualifiedMethod: fmt.Sprintf("/%s/%s", s.service, method),
		Headers:              []*pb.Header{},
		Context:              s.ctx,
	}
	for k, vs := range md {
		for _, v := range vs {
			if k == ":authority" {
				a.Authority = v
			}
			a.Headers = append(a.Headers, &pb.Header{Key: k, Value: v})
		}
	}
	if s.tls {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return nil, errors.New("failed to retrieve auth info from request")
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok {
			return nil, errors.New("failed to retrieve TLS info from request")
		}
		a.TlsAssertions = &pb.TLSAssertions{
			Version:            tlsVersion(info.State.Version),
			NegotiatedProtocol: info.State.NegotiatedProtocol,
			ServerName:         info.State.ServerName,
			CipherSuite:        tls.CipherSuiteName(info.State.CipherSuite),
			PeerCertificates:   encodeCerts(info.State.PeerCertificates),
		}
	}
	return &pb.EchoResponse{Assertions: a}, nil
}
