package server

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Streams that a slow or idle client could hold open without end.

// deadlineMethods are the download streams that get limits.stream_timeout.
var deadlineMethods = map[string]bool{
	"/credgw.v1.Redemption/Redeem": true,
	"/credgw.v1.Renewal/Rekey":     true,
}

const watchMethod = "/grpc.health.v1.Health/Watch"

// deadlineStream gives Redeem and Rekey a deadline (limits.stream_timeout)
// and cuts the connection that carries one when it passes. A package is
// smaller than the stream's flow-control window, so the handler finishes
// at once even for a peer that reads nothing; what stays is the data and
// the stream in the transport, which only a reset or a closed connection
// frees, and grpc-go can reset a stream only for a deadline the client
// sent. The reference agent opens one connection per redemption and
// closes it, so an honest device is done long before.
func (s *Server) deadlineStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !deadlineMethods[info.FullMethod] {
		return h(srv, ss)
	}
	d := s.cfg.Limits.StreamTimeout.Duration
	ctx, cancel := context.WithTimeout(ss.Context(), d)
	defer cancel()
	if p, ok := peer.FromContext(ctx); ok && s.grpcConns != nil {
		s.grpcConns.cutAfter(p.Addr, d)
	}
	return h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
}

// watchLimit bounds the Health/Watch streams open at once
// (limits.max_watch_streams). Watch is open to anyone and lasts as long
// as its caller wants, a goroutine each; load balancers' health checks
// use Check.
type watchLimit struct {
	max  int64 // < 0: no limit
	open atomic.Int64
}

func (s *Server) watchStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	w := &s.watches
	if info.FullMethod != watchMethod || w.max < 0 {
		return h(srv, ss)
	}
	if w.open.Add(1) > w.max {
		w.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted,
			"%d health watches are open, the most this gateway serves; use Check, or watch again later", w.max)
	}
	defer w.open.Add(-1)
	return h(srv, ss)
}
