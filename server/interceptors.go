package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The interceptor chain, outermost first: recover, the standard gRPC
// metrics (grpc_server_*), observe (log + credgw_grpc_* metrics),
// deadline (streams: the Watch limit and the download deadline, streams.go),
// authorize, admission (new work waits under load), map errors. Request and response messages are never
// logged: they carry challenges, signatures, tokens and passwords.

func (s *Server) unaryInterceptors() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		s.recoverUnary, s.metrics.grpc.UnaryServerInterceptor(), s.observeUnary, s.deadlineUnary, s.authorizeUnary, s.limitUnary, s.admitUnary, s.errorsUnary,
	}
}

func (s *Server) streamInterceptors() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		s.recoverStream, s.metrics.grpc.StreamServerInterceptor(), s.observeStream, s.watchStream, s.deadlineStream, s.authorizeStream, s.limitStream, s.errorsStream,
	}
}

func (s *Server) panicked(method string, p any) error {
	s.log.Error("panic in handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error; the incident is logged")
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, s.panicked(info.FullMethod, p)
		}
	}()
	return h(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.panicked(info.FullMethod, p)
		}
	}()
	return h(srv, ss)
}

func (s *Server) observe(ctx context.Context, method string, start time.Time, err error) {
	code := status.Code(err)
	d := time.Since(start)
	s.metrics.observe(method, code, d)
	attrs := []any{"method", method, "code", code.String(), "duration_ms", float64(d.Microseconds()) / 1000}
	if p, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	if c, ok := callerFrom(ctx); ok {
		attrs = append(attrs, "role", c.role)
	}
	if err != nil {
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	level := slog.LevelInfo
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	s.log.Log(ctx, level, "rpc", attrs...)
}

func (s *Server) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx = withCallerSlot(ctx)
	resp, err := h(ctx, req)
	s.observe(ctx, info.FullMethod, start, err)
	return resp, err
}

func (s *Server) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	ctx := withCallerSlot(ss.Context())
	err := h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	s.observe(ctx, info.FullMethod, start, err)
	return err
}

// deadlineUnary gives every unary call a deadline (limits.rpc_timeout)
// unless the client set a shorter one.
func (s *Server) deadlineUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > s.cfg.Limits.RPCTimeout.Duration {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Limits.RPCTimeout.Duration)
		defer cancel()
	}
	return h(ctx, req)
}

func (s *Server) errorsUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, s.mapError(ctx, info.FullMethod, err)
}

func (s *Server) errorsStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return s.mapError(ss.Context(), info.FullMethod, h(srv, ss))
}

// mapError turns a domain error into a status; an internal one is logged
// with its cause (the client sees only that it is logged). Domain errors
// never carry secrets.
func (s *Server) mapError(ctx context.Context, method string, err error) error {
	st := toStatus(err)
	if err != nil && status.Code(st) == codes.Internal && status.Code(err) != codes.Internal {
		s.log.ErrorContext(ctx, "internal error", "method", method, "cause", err.Error())
	}
	if errors.Is(err, store.ErrUnavailable) {
		s.log.WarnContext(ctx, "database unavailable", "method", method, "cause", err.Error())
	}
	if errors.Is(err, pkcs11.ErrKeyChanged) {
		s.log.ErrorContext(ctx, "HSM key changed: refusing to use it", "method", method, "cause", err.Error())
	}
	return st
}

// wrappedStream carries a replaced context.
type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }
