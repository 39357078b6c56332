package server

import (
	"context"
	"crypto/x509"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestBucketsAndOutstanding: a bucket gives its burst, then refuses with
// the wait for the next token, and refills with time; one key does not
// drain another; outstanding challenges are capped, freed by completion
// and by expiry.
func TestBucketsAndOutstanding(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	b := newBuckets(Rate{PerSecond: 2, Burst: 3}, clock)
	for i := range 3 {
		if _, ok := b.take("card"); !ok {
			t.Fatalf("token %d of the burst refused", i+1)
		}
	}
	wait, ok := b.take("card")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("past the burst: ok %v, wait %s; want a refusal with at most 0.5 s to wait", ok, wait)
	}
	if _, ok := b.take("other card"); !ok {
		t.Fatal("one card's bucket drained another's")
	}
	now = now.Add(500 * time.Millisecond)
	if _, ok := b.take("card"); !ok {
		t.Fatal("no token after the refill time")
	}

	o := &outstanding{max: 2, ttl: time.Minute, now: clock, by: map[string][]time.Time{}}
	for i := range 2 {
		if _, ok := o.open("card"); !ok {
			t.Fatalf("challenge %d refused", i+1)
		}
	}
	if wait, ok := o.open("card"); ok || wait != time.Minute {
		t.Fatalf("a third outstanding challenge: ok %v, wait %s", ok, wait)
	}
	o.close("card")
	if _, ok := o.open("card"); !ok {
		t.Fatal("a completed challenge still counts")
	}
	now = now.Add(time.Minute)
	for i := range 2 {
		if _, ok := o.open("card"); !ok {
			t.Fatalf("after expiry, challenge %d refused", i+1)
		}
	}
}

// TestFailedBeginFreesItsSlot: a BeginSession that issued no challenge
// (admission turned it away under load, the store failed) leaves none
// outstanding. Before, each such answer held one of the card's slots
// until the challenge time ran out: 16 "try again shortly" answers under
// load, and the card was refused once the load had gone.
func TestFailedBeginFreesItsSlot(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{SignInPerCard: Rate{PerSecond: 100, Burst: 100}, SignInPerAddress: Rate{PerSecond: 100, Burst: 100},
		EnrollPerCard: DefaultEnrollPerCard, OutstandingChallenges: 2}, time.Minute, func() time.Time { return now })}
	ctx := context.WithValue(context.Background(), callerKey{}, &callerSlot{c: &caller{role: rolePIV, cert: &x509.Certificate{Raw: []byte("card")}}})
	info := &grpc.UnaryServerInfo{FullMethod: "/credgw.v1.PIVAuth/BeginSession"}
	busy := func(context.Context, any) (any, error) {
		return nil, status.Error(codes.Unavailable, "try again shortly")
	}
	for i := range 5 {
		if _, err := s.limitUnary(ctx, nil, info, busy); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d under load: %v", i+1, err)
		}
	}
	issued := func(context.Context, any) (any, error) { return "challenge", nil }
	for i := range 2 {
		if _, err := s.limitUnary(ctx, nil, info, issued); err != nil {
			t.Fatalf("challenge %d once the load has gone: %v", i+1, err)
		}
	}
	if _, err := s.limitUnary(ctx, nil, info, issued); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a third outstanding challenge: %v, want ResourceExhausted", err)
	}
}

// TestSignInAddressKeyedBySourcePrefix: the per-address sign-in buckets
// group IPv6 callers by limits.source_prefix_v6, as the connection limits
// do: one /64 cannot rotate addresses for fresh buckets (the portal's
// address bucket is what stops minting certificates for fresh per-card
// buckets). IPv4, and IPv4-mapped IPv6, stay one address each.
func TestSignInAddressKeyedBySourcePrefix(t *testing.T) {
	key := func(addr string) string {
		ap := netip.MustParseAddrPort(addr)
		ctx := context.WithValue(context.Background(), callerKey{}, &callerSlot{c: &caller{role: rolePIV, cert: &x509.Certificate{Raw: []byte("card")}}})
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(ap)})
		_, k, ok := callerKeys(ctx, 64)
		if !ok {
			t.Fatal("a PIV caller without keys")
		}
		if pk := sourceKeyOf(addr, 64); pk != k {
			t.Errorf("%s: the portal's key %q, the gRPC one %q", addr, pk, k)
		}
		return k
	}
	if a, b := key("[2001:db8:1:2::1]:5000"), key("[2001:db8:1:2::14]:6000"); a != b {
		t.Errorf("one /64 gave two keys: %q and %q", a, b)
	}
	if a, b := key("[2001:db8:1:2::1]:5000"), key("[2001:db8:1:3::1]:5000"); a == b {
		t.Errorf("two /64s gave one key %q", a)
	}
	if a, b := key("192.0.2.1:5000"), key("[::ffff:192.0.2.1]:5000"); a != b || a != "192.0.2.1" {
		t.Errorf("IPv4 %q and IPv4-mapped %q", a, b)
	}
	if a, b := key("192.0.2.1:5000"), key("192.0.2.2:5000"); a == b {
		t.Errorf("two IPv4 addresses gave one key %q", a)
	}
}

// TestRefusedSignInSpendsNothing: a BeginSession refused by one limit
// spends no token of the others. Before, a card's token was taken first
// and kept when the address's bucket then refused the call: sign-ins
// refused at a crowded address (a NAT, a proxy without the client's
// address) used up the card's budget for its next sign-in elsewhere.
func TestRefusedSignInSpendsNothing(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { // a millisecond passes at every look, as on a real clock
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
	slow := 1e-6 // no refill within the test
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{
		SignInPerCard: Rate{PerSecond: slow, Burst: 3}, SignInPerAddress: Rate{PerSecond: slow, Burst: 2},
		EnrollPerCard: DefaultEnrollPerCard, OutstandingChallenges: 1}, time.Minute, clock)}
	info := &grpc.UnaryServerInfo{FullMethod: "/credgw.v1.PIVAuth/BeginSession"}
	call := func(card, addr string) error {
		ctx := context.WithValue(context.Background(), callerKey{}, &callerSlot{c: &caller{role: rolePIV, cert: &x509.Certificate{Raw: []byte(card)}}})
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))})
		_, err := s.limitUnary(ctx, nil, info, func(context.Context, any) (any, error) { return "challenge", nil })
		return err
	}
	// The address 192.0.2.1 spends its 2 tokens on two cards.
	for _, card := range []string{"a", "b"} {
		if err := call(card, "192.0.2.1:1000"); err != nil {
			t.Fatalf("card %s: %v", card, err)
		}
	}
	// Card c is refused there (the address), three times: c keeps its 3.
	for range 3 {
		if err := call("c", "192.0.2.1:1000"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "address") {
			t.Fatalf("card c at a spent address: %v, want ResourceExhausted for the address", err)
		}
	}
	// Card a has one challenge outstanding (the maximum): refused at a
	// fresh address, twice, spending nothing there.
	for range 2 {
		if err := call("a", "192.0.2.2:1000"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "outstanding") {
			t.Fatalf("card a with a challenge outstanding: %v", err)
		}
	}
	// 192.0.2.2 still has both its tokens, and card c all of its own.
	if err := call("c", "192.0.2.2:1000"); err != nil {
		t.Fatalf("card c at a fresh address: %v (the refusals spent its tokens)", err)
	}
	if err := call("d", "192.0.2.2:1000"); err != nil {
		t.Fatalf("the second token of 192.0.2.2: %v (card a's refusals spent it)", err)
	}
}

// TestTurnedAwayCallsSpendNothing: a BeginSession or CreateEnrollment that
// admission turned away under load did no work, and gives back the card's
// and the address's tokens: after the load, the person's retries find
// their budget as it was (before, each "busy, try again" answer spent a
// token, and a person retrying through a busy minute was refused after).
func TestTurnedAwayCallsSpendNothing(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
	slow := 1e-6
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{
		SignInPerCard: Rate{PerSecond: slow, Burst: 2}, SignInPerAddress: Rate{PerSecond: slow, Burst: 2},
		EnrollPerCard: Rate{PerSecond: slow, Burst: 1}, OutstandingChallenges: 5}, time.Minute, clock)}
	ctx := context.WithValue(context.Background(), callerKey{}, &callerSlot{c: &caller{role: rolePIV, cert: &x509.Certificate{Raw: []byte("card")}}})
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.9:1000"))})
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	busy := func(context.Context, any) (any, error) { return nil, waitError(expired) }
	done := func(context.Context, any) (any, error) { return "ok", nil }
	for _, m := range []struct {
		method string
		burst  int
	}{{"/credgw.v1.PIVAuth/BeginSession", 2}, {"/credgw.v1.Enrollment/CreateEnrollment", 1}} {
		info := &grpc.UnaryServerInfo{FullMethod: m.method}
		for i := range 5 {
			if _, err := s.limitUnary(ctx, nil, info, busy); status.Code(err) != codes.Unavailable {
				t.Fatalf("%s turned away, call %d: %v, want Unavailable", m.method, i+1, err)
			}
		}
		for i := range m.burst {
			if _, err := s.limitUnary(ctx, nil, info, done); err != nil {
				t.Fatalf("%s once the load has gone, call %d: %v (the turned-away calls spent the budget)", m.method, i+1, err)
			}
		}
	}
}

// TestDeviceFailuresNotOverdrawn: the failures of an address were checked
// before a call and counted after it, so every call in flight passed the
// check: 200 concurrent failing calls against a budget of 3 all ran. A
// token is now taken before the call and given back if it did not fail.
func TestDeviceFailuresNotOverdrawn(t *testing.T) {
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{SignInPerCard: DefaultSignInPerCard, SignInPerAddress: DefaultSignInPerAddress,
		EnrollPerCard: DefaultEnrollPerCard, DeviceFailuresPerAddress: Rate{PerSecond: 1e-6, Burst: 3}, OutstandingChallenges: 1}, time.Minute, time.Now)}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.7:1000"))})
	info := &grpc.StreamServerInfo{FullMethod: "/credgw.v1.Redemption/Redeem", IsServerStream: true}
	var ran atomic.Int32
	// Every call is either running (held until all have arrived) or
	// refused before the first one ends.
	arrived, release := make(chan struct{}, 200), make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.limitStream(nil, &ctxStream{ctx: ctx}, info, func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(nil); err != nil {
					return err
				}
				ran.Add(1)
				arrived <- struct{}{}
				<-release
				return status.Error(codes.Unauthenticated, "no such code")
			})
			if status.Code(err) == codes.ResourceExhausted {
				arrived <- struct{}{}
			}
		}()
	}
	for range 200 {
		<-arrived
	}
	close(release)
	wg.Wait()
	if n := ran.Load(); n > 3 {
		t.Fatalf("%d failing calls ran against a budget of 3", n)
	}
}

// ctxStream is a ServerStream with only a context.
type ctxStream struct {
	grpc.ServerStream
	ctx  context.Context
	recv func() error
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// RecvMsg is the request arriving at once (or, with recv set, when recv
// says).
func (c *ctxStream) RecvMsg(any) error {
	if c.recv != nil {
		return c.recv()
	}
	return nil
}

// TestDeviceSuccessesSpendNothing: a Redeem that succeeds gives its token
// back whole, however long it ran and whatever was taken meanwhile: a NAT
// of honest devices redeeming all day keeps its budget.
func TestDeviceSuccessesSpendNothing(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { // a second passes at every look: redemptions that take a while
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{SignInPerCard: DefaultSignInPerCard, SignInPerAddress: DefaultSignInPerAddress,
		EnrollPerCard: DefaultEnrollPerCard, DeviceFailuresPerAddress: Rate{PerSecond: 1e-6, Burst: 2}, OutstandingChallenges: 1}, time.Minute, clock)}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.8:1000"))})
	info := &grpc.StreamServerInfo{FullMethod: "/credgw.v1.Renewal/Rekey", IsServerStream: true}
	call := func(inner func() error) error {
		return s.limitStream(nil, &ctxStream{ctx: ctx}, info, func(_ any, ss grpc.ServerStream) error {
			if err := ss.RecvMsg(nil); err != nil {
				return err
			}
			return inner()
		})
	}
	ok := func() error { return nil }
	// One success runs while another starts and ends: both give back.
	for range 50 {
		if err := call(func() error { return call(ok) }); err != nil {
			t.Fatal(err)
		}
	}
	// Both tokens are there for two failures, and none for a third.
	fail := func() error { return status.Error(codes.PermissionDenied, "wrong password") }
	for i := range 2 {
		if err := call(fail); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("failure %d after 100 successes: %v (the successes spent the budget)", i+1, err)
		}
	}
	if err := call(ok); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("after the budget's failures: %v, want ResourceExhausted", err)
	}
}

// TestDeviceStreamsWithoutRequestHoldNothing: the token was taken as a
// stream opened, before its request came, and held while it stayed open:
// a neighbour opening streams and sending nothing held every token of
// the address (for the stream deadline, 10 minutes) without one failure.
// It is taken when the request is received.
func TestDeviceStreamsWithoutRequestHoldNothing(t *testing.T) {
	s := &Server{cfg: &Config{}, limits: newLimiter(RatesConfig{SignInPerCard: DefaultSignInPerCard, SignInPerAddress: DefaultSignInPerAddress,
		EnrollPerCard: DefaultEnrollPerCard, DeviceFailuresPerAddress: Rate{PerSecond: 1e-6, Burst: 3}, OutstandingChallenges: 1}, time.Minute, time.Now)}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.9:1000"))})
	info := &grpc.StreamServerInfo{FullMethod: "/credgw.v1.Redemption/Redeem", IsServerStream: true}
	handler := func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(nil); err != nil {
			return err
		}
		return nil
	}
	never, waiting := make(chan struct{}), make(chan struct{}, 10)
	var wg sync.WaitGroup
	for range 10 { // streams that send no request until they are cancelled
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.limitStream(nil, &ctxStream{ctx: ctx, recv: func() error {
				waiting <- struct{}{}
				<-never
				return status.Error(codes.Canceled, "context canceled")
			}}, info, handler)
		}()
	}
	for range 10 {
		<-waiting
	}
	if err := s.limitStream(nil, &ctxStream{ctx: ctx}, info, handler); err != nil {
		t.Fatalf("a redemption while 10 streams without a request are open: %v", err)
	}
	close(never)
	wg.Wait()
	if err := s.limitStream(nil, &ctxStream{ctx: ctx}, info, handler); err != nil {
		t.Fatalf("a redemption after the empty streams ended: %v", err)
	}
}
