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
// the portal's and administrators' calls never wait here. The value says
// whether the call goes ahead of the others in the queue: completing a
// sign-in whose challenge was issued comes before starting new ones.
//
// A call gives its slot back while it waits on the network (the OCSP and
// CRL answers of CompleteSession's revocation check, see networkWait and
// slotTransport),
// so one slow responder does not stall the gateway's sign-ins; it takes
// its slot again ahead of new calls.
//
// Priorities are strict: while completions or take-backs wait, new calls
// wait too. That cannot starve new calls for long, since every completion
// needs a sign-in begun before it. A redirect of an OCSP or CRL fetch
// takes the slot back between hops (net/http closes each hop's body).
var admittedMethods = map[string]priority{
	"/credgw.v1.PIVAuth/BeginSession":        low,
	"/credgw.v1.PIVAuth/CompleteSession":     high,
	"/credgw.v1.Enrollment/CreateEnrollment": low,
}

type priority int

const (
	low    priority = iota + 1 // new work
	high                       // completing a sign-in
	resume                     // a call taking its slot back after a network wait
)

// admission bounds how many new-work calls run at once (limits.new_work).
// When the gateway is saturated, the person at the device, whose package
// is being issued and downloaded, is served before new sign-ins and
// enrollments start: those wait for a slot, within their deadline, first
// come first served within two priorities.
type admission struct {
	limit   int // ≤ 0: no limit
	waiting gauge

	mu     sync.Mutex
	free   int
	queues [resume + 1][]chan struct{} // waiters by priority, oldest first
}

// gauge is the part of a prometheus.Gauge admission uses.
type gauge interface {
	Inc()
	Dec()
}

// newAdmission: n < 0 is no limit, 0 half the CPUs (at least one).
func newAdmission(n int, waiting gauge) *admission {
	if n == 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	return &admission{limit: n, free: max(n, 0), waiting: waiting}
}

// acquire waits for a slot, within ctx: after every waiter of its
// priority or above. (A slot is free only while no one waits.)
func (a *admission) acquire(ctx context.Context, p priority) error {
	a.mu.Lock()
	if a.free > 0 {
		a.free--
		a.mu.Unlock()
		return nil
	}
	grant := make(chan struct{}, 1)
	a.queues[p] = append(a.queues[p], grant)
	a.mu.Unlock()
	a.waiting.Inc()
	defer a.waiting.Dec()
	select {
	case <-grant:
		return nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	q := a.queues[p]
	for i, g := range q {
		if g == grant { // not granted: leave the queue
			a.queues[p] = append(q[:i:i], q[i+1:]...)
			a.mu.Unlock()
			return waitError(ctx)
		}
	}
	a.mu.Unlock()
	// Granted as the deadline came: pass the slot on.
	a.release()
	return waitError(ctx)
}

func waitError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return notAdmitted{status.New(codes.Canceled, "the call was cancelled while waiting for the gateway")}
	}
	return notAdmitted{status.New(codes.Unavailable,
		"the gateway is busy issuing credentials and could not start this call before its deadline; try again shortly")}
}

// notAdmitted is a call admission turned away: it did no work, so the
// rate limits give back what they took for it (limitUnary).
type notAdmitted struct{ st *status.Status }

func (e notAdmitted) Error() string              { return e.st.Err().Error() }
func (e notAdmitted) GRPCStatus() *status.Status { return e.st }

// release gives a slot to the oldest waiter of the highest priority, or
// back to the pool.
func (a *admission) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p := resume; p >= low; p-- {
		if q := a.queues[p]; len(q) > 0 {
			a.queues[p] = q[1:]
			q[0] <- struct{}{}
			return
		}
	}
	a.free++
}

// admit waits for a slot for method (if it takes one). The returned
// context carries the slot (for slotTransport); release gives it back.
func (a *admission) admit(ctx context.Context, method string) (context.Context, func(), error) {
	p := admittedMethods[method]
	if a.limit <= 0 || p == 0 {
		return ctx, func() {}, nil
	}
	if err := a.acquire(ctx, p); err != nil {
		return ctx, nil, err
	}
	s := &slot{a: a, ctx: ctx, held: true}
	return context.WithValue(ctx, slotKey{}, s), s.release, nil
}

type slotKey struct{}

// slot is one admitted call's hold on the admission.
type slot struct {
	a   *admission
	ctx context.Context // the call's: its deadline bounds every wait

	mu     sync.Mutex
	held   bool
	away   int           // network waits under way
	retake chan struct{} // while a back waits for the slot: closed when it is done
	done   bool          // the call has ended: nothing is taken again
}

// yield gives the slot back for a network wait.
func (s *slot) yield() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.away++
	if s.away == 1 && s.held {
		s.held = false
		s.a.release()
	}
}

// back takes the slot again, ahead of every other waiter, once the last
// network wait is over; within the call's deadline. If another back of
// the call is already waiting, it waits for that one.
func (s *slot) back() error {
	s.mu.Lock()
	s.away--
	if s.away > 0 || s.held || s.done {
		s.mu.Unlock()
		return nil
	}
	if wait := s.retake; wait != nil {
		s.mu.Unlock()
		s.a.waiting.Inc()
		defer s.a.waiting.Dec()
		select {
		case <-wait:
		case <-s.ctx.Done():
		}
		return nil
	}
	retake := make(chan struct{})
	s.retake = retake
	s.mu.Unlock()
	err := s.a.acquire(s.ctx, resume)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retake = nil
	close(retake)
	if err != nil {
		return err
	}
	if s.away > 0 || s.done { // another wait began meanwhile, or the call ended
		s.a.release()
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
		s.held = false
		s.a.release()
	}
}

// networkWait gives an admitted call's slot back while it waits for an
// OCSP or CRL answer (piv.Options.NetworkWait): the fetch may be another
// call's, shared, so the wait, not the request, is what yields. The
// returned function takes the slot back, ahead of new calls.
func networkWait(ctx context.Context) func() error {
	s, _ := ctx.Value(slotKey{}).(*slot)
	if s == nil {
		return func() error { return nil }
	}
	s.yield()
	return s.back
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
		if berr := s.back(); berr != nil {
			return nil, errors.Join(err, berr)
		}
		return nil, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, s: s}
	return resp, nil
}

type slotBody struct {
	io.ReadCloser
	s    *slot
	once sync.Once
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		if berr := b.s.back(); berr != nil {
			err = errors.Join(err, berr)
		}
	})
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
