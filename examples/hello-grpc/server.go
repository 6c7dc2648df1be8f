package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// server answers gRPC calls and plain HTTP requests on one port.
type server struct {
	grpc    *grpc.Server
	health  *health.Server
	http    http.Handler
	service string
}

// newServer serves the health service for "" and service, and the echo.
// Every call's response headers name the color and the instance; every
// stream ends with UNAVAILABLE once shutdown ends.
func newServer(service, color, version, id string, shutdown context.Context) *server {
	s := &server{health: health.NewServer(), service: service}
	who := metadata.Pairs("x-switchyard-color", color, "x-switchyard-instance", id)
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, who)
			return next(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			_ = ss.SetHeader(who)
			return endOnShutdown(srv, ss, shutdown, next)
		}),
	)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	testpb.RegisterTestServiceServer(s.grpc, echo{id: id})
	reflection.Register(s.grpc)
	s.setServing(true)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Switchyard-Color", color)
		_ = json.NewEncoder(w).Encode(map[string]string{"service": service, "color": color, "instance": id, "version": version})
	})
	s.http = mux
	return s
}

// ServeHTTP sends gRPC calls to the gRPC server and the rest to the
// plain handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isGRPC(r) {
		s.grpc.ServeHTTP(w, r)
		return
	}
	s.http.ServeHTTP(w, r)
}

// isGRPC tells gRPC calls from plain HTTP requests on the shared port.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// setServing sets the health of both names; after the health server's
// Shutdown it stays NOT_SERVING.
func (s *server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(s.service, st)
}

// shutdownStream is a stream whose context also ends at shutdown.
type shutdownStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s shutdownStream) Context() context.Context { return s.ctx }

// endOnShutdown runs a stream's handler with a context that also ends at
// shutdown. Through ServeHTTP, grpc.Server's GracefulStop cannot end a
// stream cleanly (it closes the transport under it), and http.Server's
// Shutdown waits for streams without ending them; so each streaming
// handler watches its context and returns, and the client gets
// UNAVAILABLE with its trailers: retry, on another instance.
func endOnShutdown(srv any, ss grpc.ServerStream, shutdown context.Context, next grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(shutdown, cancel)
	defer stop()
	err := next(srv, shutdownStream{ServerStream: ss, ctx: ctx})
	if err != nil && shutdown.Err() != nil && ss.Context().Err() == nil {
		return status.Error(codes.Unavailable, "server shutting down; call again to reach another instance")
	}
	return err
}
