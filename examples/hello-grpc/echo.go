package main

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// echo is grpc-go's TestService as an echo. Its generated code ships with
// grpc-go, so it needs no code generation, and it has every kind of call:
// unary, server streaming, client streaming and bidi (FullDuplexCall).
// Each call echoes its payload, or, when a size is asked for, answers that
// many zero bytes, as the gRPC interop tests expect; a response_status
// makes it fail with that code.
type echo struct {
	testpb.UnimplementedTestServiceServer
	id string
}

// maxPayload caps an asked-for size, as hello caps a POST body.
const maxPayload = 1 << 20

func (echo) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (e echo) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := echoStatus(in.GetResponseStatus()); err != nil {
		return nil, err
	}
	p, err := payload(in.GetPayload(), in.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: p, ServerId: e.id}, nil
}

func (echo) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	if err := respond(stream.Context(), in, stream.Send); err != nil {
		return err
	}
	return echoStatus(in.GetResponseStatus())
}

func (echo) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var n int
	for in, err := range messages(stream.Context(), stream.Recv) {
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(min(n, 1<<31-1))})
		}
		if err != nil {
			return err
		}
		n += len(in.GetPayload().GetBody())
	}
	return nil
}

func (echo) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for in, err := range messages(stream.Context(), stream.Recv) {
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := echoStatus(in.GetResponseStatus()); err != nil {
			return err
		}
		if err := respond(stream.Context(), in, stream.Send); err != nil {
			return err
		}
	}
	return nil
}

// respond sends one response per response parameter, each after its
// interval, or the payload back when there is none.
func respond(ctx context.Context, in *testpb.StreamingOutputCallRequest, send func(*testpb.StreamingOutputCallResponse) error) error {
	params := in.GetResponseParameters()
	if len(params) == 0 {
		params = []*testpb.ResponseParameters{{}}
	}
	for _, rp := range params {
		if us := rp.GetIntervalUs(); us > 0 {
			t := time.NewTimer(time.Duration(us) * time.Microsecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		p, err := payload(in.GetPayload(), rp.GetSize())
		if err != nil {
			return err
		}
		if err := send(&testpb.StreamingOutputCallResponse{Payload: p}); err != nil {
			return err
		}
	}
	return nil
}

func payload(in *testpb.Payload, size int32) (*testpb.Payload, error) {
	switch {
	case size <= 0:
		return &testpb.Payload{Type: in.GetType(), Body: in.GetBody()}, nil
	case size > maxPayload:
		return nil, status.Errorf(codes.InvalidArgument, "response size %d is over %d", size, maxPayload)
	}
	return &testpb.Payload{Body: make([]byte, size)}, nil
}

func echoStatus(s *testpb.EchoStatus) error {
	if s.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(s.GetCode()), s.GetMessage())
}

// messages yields what the client sends, up to its io.EOF or error, or
// until ctx ends, which it does at shutdown. Recv returns only when the
// client sends or the stream ends, so it runs on a goroutine of its own,
// which exits once the stream is over.
func messages[T any](ctx context.Context, recv func() (*T, error)) iter.Seq2[*T, error] {
	type received struct {
		m   *T
		err error
	}
	return func(yield func(*T, error) bool) {
		ch := make(chan received)
		go func() {
			for {
				m, err := recv()
				select {
				case ch <- received{m, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
		for {
			select {
			case r := <-ch:
				if !yield(r.m, r.err) || r.err != nil {
					return
				}
			case <-ctx.Done():
				yield(nil, status.FromContextError(ctx.Err()).Err())
				return
			}
		}
	}
}
