package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// admittedMethods start new work: a sign-in (its challenge and its
// completion) and a new enrollment. They are held back under load; the
// calls that finish work already started (Redeem, Confirm, renewals) and
// the portal's and administrators' calls never wait here.
//
// A call gives its slot back while it waits on the network (the OCSP and
// CRL fetches of CompleteSession's revocation check, see slotTransport),
// so one slow responder does not stall the gateway's sign-ins.
var admittedMethods = map[string]bool{
	"/credgw.v1.PIVAuth/BeginSession":        true,
	"/credgw.v1.PIVAuth/CompleteSession":     true,
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

// acquire waits for a slot, within ctx.
func (a *admission) acquire(ctx context.Context) error {
	select {
	case a.slots <- struct{}{}:
		return nil
	default:
	}
	a.waiting.Inc()
	defer a.waiting.Dec()
	select {
	case a.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return status.Error(codes.Canceled, "the call was cancelled while waiting for the gateway")
		}
		return status.Error(codes.Unavailable,
			"the gateway is busy issuing credentials and could not start this call before its deadline; try again shortly")
	}
}

// admit waits for a slot for method (if it takes one). The returned
// context carries the slot (for slotTransport); release gives it back.
func (a *admission) admit(ctx context.Context, method string) (context.Context, func(), error) {
	if a.slots == nil || !admittedMethods[method] {
		return ctx, func() {}, nil
	}
	if err := a.acquire(ctx); err != nil {
		return ctx, nil, err
	}
	s := &slot{a: a, held: true}
	return context.WithValue(ctx, slotKey{}, s), s.release, nil
}

type slotKey struct{}

// slot is one admitted call's hold on the admission.
type slot struct {
	a    *admission
	mu   sync.Mutex
	held bool
	away int  // network waits under way
	done bool // the call has ended: nothing is taken again
}

// yield gives the slot back for a network wait.
func (s *slot) yield() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.away++
	if s.away == 1 && s.held {
		<-s.a.slots
		s.held = false
	}
}

// back takes a slot again once the last network wait is over.
func (s *slot) back(ctx context.Context) error {
	s.mu.Lock()
	s.away--
	need := s.away == 0 && !s.held && !s.done
	s.mu.Unlock()
	if !need {
		return nil
	}
	if err := s.a.acquire(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.away > 0 || s.held || s.done { // another wait began meanwhile, a parallel back took it, or the call ended
		<-s.a.slots
		return nil
	}
	s.held = true
	return nil
}

// release ends the call's hold.
func (s *slot) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.held {
		<-s.a.slots
		s.held = false
	}
}

// slotTransport gives an admitted call's slot back while its request is
// on the network: from the request until its response body is closed.
type slotTransport struct{ base http.RoundTripper }

func (t slotTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	s, _ := req.Context().Value(slotKey{}).(*slot)
	if s == nil {
		return t.base.RoundTrip(req)
	}
	s.yield()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, errors.Join(err, s.back(req.Context()))
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, s: s, ctx: req.Context()}
	return resp, nil
}

type slotBody struct {
	io.ReadCloser
	s    *slot
	ctx  context.Context
	once sync.Once
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { err = errors.Join(err, b.s.back(b.ctx)) })
	return err
}

// yieldingClient is c (nil: a default client) with slotTransport.
func yieldingClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{}
	}
	out := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = slotTransport{base: base}
	return &out
}

func (s *Server) admitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, release, err := s.admission.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	defer release()
	return h(ctx, req)
}
