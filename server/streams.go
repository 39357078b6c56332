package server

import (
	"context"
	"errors"
	"sync"
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

// reflectionMethods are server reflection's streams, in both versions
// (grpcurl asks v1, then v1alpha).
var reflectionMethods = map[string]bool{
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

// deadlineStream gives Redeem and Rekey a deadline (limits.stream_timeout)
// and cuts the connection that carries one when it passes. A package is
// smaller than the stream's flow-control window, so the handler finishes
// at once even for a peer that reads nothing; what stays is the data and
// the stream in the transport, which only a reset or a closed connection
// frees, and grpc-go can reset a stream only for a deadline the client
// sent. The reference agent opens one connection per redemption and
// closes it, so an honest device is done long before.
//
// Reflection streams get limits.rpc_timeout (reflectionDeadline).
func (s *Server) deadlineStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if reflectionMethods[info.FullMethod] {
		return s.reflectionDeadline(srv, ss, h)
	}
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

// reflectionDeadline ends a reflection stream at limits.rpc_timeout with
// DeadlineExceeded. A reflection conversation is a few questions, each
// answered like a unary call, and grpcurl closes it within a second; a
// stream held longer only holds a goroutine. The reflection service
// waits in Recv without looking at its context, so the wait gives up
// instead (deadlineRecv); the service returns, and grpc-go ends the
// stream, which frees the receive left behind.
//
// A peer that asks and reads nothing keeps the service in Send until its
// connection ends; max_watch_streams bounds how many (watchStream).
func (s *Server) reflectionDeadline(srv any, ss grpc.ServerStream, h grpc.StreamHandler) error {
	d := s.cfg.Limits.RPCTimeout.Duration
	ctx, cancel := context.WithTimeout(ss.Context(), d)
	defer cancel()
	return h(srv, &deadlineRecv{wrappedStream: wrappedStream{ServerStream: ss, ctx: ctx},
		expired: status.Errorf(codes.DeadlineExceeded, "a reflection stream lasts at most %s; open a new one to ask more", d)})
}

// deadlineRecv is a stream whose RecvMsg returns expired when its context
// passes its deadline, even while no message comes.
type deadlineRecv struct {
	wrappedStream
	expired error
}

func (r *deadlineRecv) RecvMsg(m any) error {
	got := make(chan error, 1)
	go func() { got <- r.ServerStream.RecvMsg(m) }()
	select {
	case err := <-got:
		return err
	case <-r.ctx.Done():
		if !errors.Is(r.ctx.Err(), context.DeadlineExceeded) {
			// The call ended (the client went away): so does the receive.
			return <-got
		}
		return r.expired
	}
}

// streamLimit bounds the streams of one kind open at once
// (limits.max_watch_streams). Health/Watch and server reflection are
// open to anyone and last as long as their caller wants, a goroutine
// each; load balancers' health checks use Check. Each kind has a count
// of its own, so health watches cannot shut grpcurl out, nor the other
// way round.
type streamLimit struct {
	max  int64 // < 0: no limit
	open atomic.Int64
	// perSource bounds the streams of one source (sourceKey;
	// limits.max_watch_streams_per_source), < 0: no bound. Without it one
	// client could take every slot.
	perSource int

	mu       sync.Mutex
	bySource map[string]int // open streams of each source
}

// take counts a stream of src, or says which limit refuses it (""
// admits it).
func (l *streamLimit) take(src string) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perSource >= 0 && l.bySource[src] >= l.perSource {
		return "source"
	}
	if l.open.Load() >= l.max {
		return "all"
	}
	if l.bySource == nil {
		l.bySource = map[string]int{}
	}
	l.bySource[src]++
	l.open.Add(1)
	return ""
}

func (l *streamLimit) give(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
	l.open.Add(-1)
}

// watchStream holds Health/Watch and reflection streams within their
// limits; one beyond gets ResourceExhausted that says what to do instead.
func (s *Server) watchStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	var l *streamLimit
	var kind, instead string
	switch {
	case info.FullMethod == watchMethod:
		l, kind, instead = &s.watches, "health watches", "use Check, or watch again later"
	case reflectionMethods[info.FullMethod]:
		l, kind, instead = &s.reflections, "reflection streams", "each ends within "+s.cfg.Limits.RPCTimeout.Duration.String()+", try again then"
	default:
		return h(srv, ss)
	}
	if l.max < 0 {
		return h(srv, ss)
	}
	src := ""
	if p, ok := peer.FromContext(ss.Context()); ok && p.Addr != nil {
		src = sourceKey(p.Addr, s.cfg.Limits.SourcePrefixV6)
	}
	switch l.take(src) {
	case "source":
		return status.Errorf(codes.ResourceExhausted, "%d %s are open from one address, the most one address may hold; end one of them first",
			l.perSource, kind)
	case "all":
		return status.Errorf(codes.ResourceExhausted, "%d %s are open, the most this gateway serves; %s", l.max, kind, instead)
	}
	defer l.give(src)
	return h(srv, ss)
}
