package server

import (
	"context"
	"errors"
	"runtime"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// admittedMethods start new work: a sign-in's challenge and a new
// enrollment. They are held back under load; the calls that finish work
// already started (CompleteSession, Redeem, Confirm, renewals) and the
// portal's and administrators' calls never wait here.
//
// CompleteSession is not held back although it begins a session: its
// revocation check may wait on the network (OCSP, CRL), and a slot held
// across that wait would stall every sign-in behind one slow responder.
var admittedMethods = map[string]bool{
	"/credgw.v1.PIVAuth/BeginSession":        true,
	"/credgw.v1.Enrollment/CreateEnrollment": true,
}

// admission bounds how many new-work calls run at once (limits.new_work).
// When the gateway is saturated, the person at the device, whose package
// is being issued and downloaded, is served before new sign-ins and
// enrollments start: those wait for a slot, within their deadline.
type admission struct {
	slots   chan struct{} // nil: no limit
	waiting gauge
}

// gauge is the part of a prometheus.Gauge admission uses.
type gauge interface {
	Inc()
	Dec()
}

// newAdmission: n < 0 is no limit, 0 half the CPUs (at least one).
func newAdmission(n int, waiting gauge) *admission {
	a := &admission{waiting: waiting}
	if n == 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if n > 0 {
		a.slots = make(chan struct{}, n)
	}
	return a
}

// admit waits for a slot for method (if it takes one) and returns its
// release.
func (a *admission) admit(ctx context.Context, method string) (release func(), err error) {
	if a.slots == nil || !admittedMethods[method] {
		return func() {}, nil
	}
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	default:
	}
	a.waiting.Inc()
	defer a.waiting.Dec()
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, status.Error(codes.Canceled, "the call was cancelled while waiting for the gateway")
		}
		return nil, status.Error(codes.Unavailable,
			"the gateway is busy issuing credentials and could not start this call before its deadline; try again shortly")
	}
}

func (s *Server) admitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	release, err := s.admission.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	defer release()
	return h(ctx, req)
}
