package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgw/credgw/piv/session"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Rate limits for what anyone with a card can start: sign-in challenges
// (BeginSession) and enrollments (CreateEnrollment), per card certificate
// and per source address, as token buckets; and a cap on the challenges a
// card has outstanding. They apply to callers signed in by their card's
// TLS client certificate (the PIV role); the portal and administrators are
// configured clients and are not limited here (the portal limits its own
// sign-ins per card, through the same limiter). The buckets live in each
// replica's memory: with N replicas behind a balancer a card gets up to N
// times the rate (docs/config.md).

// Rate is a token bucket: PerSecond refills, Burst is its size.
type Rate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// RatesConfig is limits.rates.
type RatesConfig struct {
	SignInPerCard    Rate `yaml:"sign_in_per_card"`
	SignInPerAddress Rate `yaml:"sign_in_per_address"`
	EnrollPerCard    Rate `yaml:"enroll_per_card"`
	// DeviceFailuresPerAddress is spent by the failed Redeem and Rekey
	// calls of a source address; when it is empty the address's Redeem
	// and Rekey calls are refused until it refills.
	DeviceFailuresPerAddress Rate `yaml:"device_failures_per_address"`
	// OutstandingChallenges caps the challenges of one card not yet
	// completed or expired.
	OutstandingChallenges int `yaml:"outstanding_challenges"`
}

// Defaults of limits.rates: far above what a person does, far below what a
// loop does.
var (
	DefaultSignInPerCard    = Rate{PerSecond: 2, Burst: 30}
	DefaultSignInPerAddress = Rate{PerSecond: 200, Burst: 500}
	DefaultEnrollPerCard    = Rate{PerSecond: 1, Burst: 10}
	// A person mistypes a password a few times; a NAT of many devices
	// fails now and then; a loop trying codes fails every time.
	DefaultDeviceFailuresPerAddress = Rate{PerSecond: 1, Burst: 100}
	DefaultOutstandingChallenges    = 16
)

func (r *RatesConfig) applyDefaults() {
	def := func(r *Rate, d Rate) {
		if r.PerSecond == 0 {
			r.PerSecond = d.PerSecond
		}
		if r.Burst == 0 {
			r.Burst = d.Burst
		}
	}
	def(&r.SignInPerCard, DefaultSignInPerCard)
	def(&r.SignInPerAddress, DefaultSignInPerAddress)
	def(&r.EnrollPerCard, DefaultEnrollPerCard)
	def(&r.DeviceFailuresPerAddress, DefaultDeviceFailuresPerAddress)
	if r.OutstandingChallenges == 0 {
		r.OutstandingChallenges = DefaultOutstandingChallenges
	}
}

func (r RatesConfig) validate(bad func(string, ...any)) {
	for name, v := range map[string]Rate{"sign_in_per_card": r.SignInPerCard, "sign_in_per_address": r.SignInPerAddress,
		"enroll_per_card": r.EnrollPerCard, "device_failures_per_address": r.DeviceFailuresPerAddress} {
		if v.PerSecond <= 0 || v.Burst < 1 {
			bad("limits.rates.%s: per_second > 0 and burst ≥ 1", name)
		}
	}
	if r.OutstandingChallenges < 1 {
		bad("limits.rates.outstanding_challenges %d: at least 1", r.OutstandingChallenges)
	}
}

// buckets are token buckets by key.
type buckets struct {
	rate Rate
	now  func() time.Time

	mu   sync.Mutex
	by   map[string]*bucket
	seen int
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newBuckets(r Rate, now func() time.Time) *buckets {
	return &buckets{rate: r, now: now, by: map[string]*bucket{}}
}

// take takes a token for key, or says how long until one is there.
func (b *buckets) take(key string) (time.Duration, bool) {
	_, wait, ok := b.reserve(key)
	return wait, ok
}

// reserve is take that can give its token back (undo), for a call that
// another limit then refuses: a refused call spends nothing.
func (b *buckets) reserve(key string) (undo func(), wait time.Duration, ok bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.by[key]
	if !ok {
		b.prune(now)
		k = &bucket{lim: rate.NewLimiter(rate.Limit(b.rate.PerSecond), b.rate.Burst)}
		b.by[key] = k
	}
	k.last = now
	r := k.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d, false
	}
	// Cancelled as of the reservation's own time: CancelAt restores
	// nothing for a reservation whose time has passed, and a token
	// granted at once is due at now.
	return func() { r.CancelAt(now) }, 0, true
}

// prune drops buckets that have refilled (idle long enough), now and then,
// so that many callers do not grow the map without bound.
func (b *buckets) prune(now time.Time) {
	if b.seen++; b.seen%1024 != 0 {
		return
	}
	full := time.Duration(float64(b.rate.Burst)/b.rate.PerSecond*float64(time.Second)) + time.Minute
	for key, k := range b.by {
		if now.Sub(k.last) > full {
			delete(b.by, key)
		}
	}
}

// outstanding counts each card's challenges until they are completed or
// expire.
type outstanding struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	by map[string][]time.Time // expiry of each outstanding challenge
}

// open records a challenge for key, or says how long until one expires.
func (o *outstanding) open(key string) (time.Duration, bool) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	live := o.by[key][:0]
	for _, exp := range o.by[key] {
		if now.Before(exp) {
			live = append(live, exp)
		}
	}
	if len(live) >= o.max {
		o.by[key] = live
		return live[0].Sub(now), false
	}
	o.by[key] = append(live, now.Add(o.ttl))
	if len(o.by) > 100000 { // bounded: forget the oldest callers' counts
		for k, exps := range o.by {
			if len(exps) == 0 || !now.Before(exps[len(exps)-1]) {
				delete(o.by, k)
			}
		}
	}
	return 0, true
}

// close forgets one outstanding challenge of key (it was completed).
func (o *outstanding) close(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch exps := o.by[key]; len(exps) {
	case 0:
	case 1:
		delete(o.by, key)
	default:
		o.by[key] = exps[1:]
	}
}

// limiter applies limits.rates to the methods that start new work.
type limiter struct {
	signInCard, signInAddr, enrollCard *buckets
	deviceFailures                     *failureBuckets
	challenges                         *outstanding
}

func newLimiter(r RatesConfig, challengeTTL time.Duration, now func() time.Time) *limiter {
	return &limiter{
		signInCard: newBuckets(r.SignInPerCard, now), signInAddr: newBuckets(r.SignInPerAddress, now),
		enrollCard: newBuckets(r.EnrollPerCard, now), deviceFailures: newFailureBuckets(r.DeviceFailuresPerAddress, now),
		challenges: &outstanding{max: r.OutstandingChallenges, ttl: challengeTTL, now: now, by: map[string][]time.Time{}},
	}
}

// limited is ResourceExhausted with a RetryInfo.
func limited(what string, wait time.Duration) error {
	wait = max(wait, time.Second).Round(time.Second)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%s: too many requests; retry in %s", what, wait))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// callerKeys are the card's and the source address's keys of a PIV
// caller; ok is false for callers the limits do not apply to.
// The address is the source as the connection limits count it: IPv6 by
// its v6Bits prefix (limits.source_prefix_v6), so that one network cannot
// rotate addresses for fresh buckets.
func callerKeys(ctx context.Context, v6Bits int) (card, addr string, ok bool) {
	c, found := callerFrom(ctx)
	if !found || c.role != rolePIV {
		return "", "", false
	}
	sum := sha256.Sum256(c.cert.Raw)
	card = hex.EncodeToString(sum[:])
	if p, found := peer.FromContext(ctx); found {
		addr = sourceKey(p.Addr, v6Bits)
	}
	return card, addr, true
}

// sourceKeyOf is sourceKey of a "host:port" address (an HTTP request's
// RemoteAddr).
func sourceKeyOf(addr string, v6Bits int) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return sourceKey(net.TCPAddrFromAddrPort(ap), v6Bits)
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// deviceMethods are the calls a device makes with what the QR code and
// the password, or its derived certificate, prove, open to anyone who can
// connect: limits.rates.device_failures_per_address counts their failures
// by source address. Confirm is not among them: it needs a redemption id
// and the secret, and a device refused its confirmation because a
// neighbour behind its NAT tried codes would lose its package.
var deviceMethods = map[string]bool{
	"/credgw.v1.Redemption/Redeem": true,
	"/credgw.v1.Renewal/Rekey":     true,
}

// deviceFailure says whether a device call's outcome is the caller's
// failure: a code, secret, password or request that is not right. What
// the gateway could not do now (Unavailable, a deadline), a state the
// caller cannot know (FailedPrecondition: expired, redeemed) and a lock
// already counted elsewhere are not.
func deviceFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.NotFound, codes.InvalidArgument:
		return true
	}
	return false
}

// limitStream runs a Redeem or Rekey unless its source address has spent
// its failures: it takes a token before the call (so that calls in flight
// cannot overdraw the budget) and gives it back unless the call failed.
func (s *Server) limitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !deviceMethods[info.FullMethod] {
		return h(srv, ss)
	}
	var addr string
	if p, ok := peer.FromContext(ss.Context()); ok {
		addr = sourceKey(p.Addr, s.cfg.Limits.SourcePrefixV6)
	}
	// The token is taken when the request has come (the handler's first
	// RecvMsg): a stream opened and left without a request holds none.
	ls := &limitedStream{ServerStream: ss, b: s.limits.deviceFailures, addr: addr}
	err := h(srv, ls)
	if ls.took && !deviceFailure(err) {
		ls.b.giveBack(addr)
	}
	return err
}

// limitedStream takes a device-failure token of its address when its
// request is received.
type limitedStream struct {
	grpc.ServerStream
	b    *failureBuckets
	addr string
	took bool
}

func (l *limitedStream) RecvMsg(m any) error {
	if err := l.ServerStream.RecvMsg(m); err != nil || l.took {
		return err
	}
	wait, ok := l.b.take(l.addr)
	if !ok {
		return limited("failed (or too many concurrent) redemptions from this address", wait)
	}
	l.took = true
	return nil
}

// failureBuckets are token buckets by key whose token, taken before a
// call, is given back whole when the call turns out not to be a failure,
// however long it ran and whatever else was taken meanwhile (a
// rate.Reservation cancelled late restores less). An idle address has no
// bucket: it is full.
type failureBuckets struct {
	rate Rate
	now  func() time.Time

	mu   sync.Mutex
	by   map[string]*failureBucket
	seen int
}

type failureBucket struct {
	tokens float64
	at     time.Time // when tokens was last refilled
}

func newFailureBuckets(r Rate, now func() time.Time) *failureBuckets {
	return &failureBuckets{rate: r, now: now, by: map[string]*failureBucket{}}
}

// refill brings k's tokens up to now.
func (f *failureBuckets) refill(k *failureBucket, now time.Time) {
	if d := now.Sub(k.at); d > 0 {
		k.tokens = min(float64(f.rate.Burst), k.tokens+d.Seconds()*f.rate.PerSecond)
		k.at = now
	}
}

// take takes a token of key, or says how long until there is one.
func (f *failureBuckets) take(key string) (time.Duration, bool) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.by[key]
	if !ok {
		f.prune(now)
		k = &failureBucket{tokens: float64(f.rate.Burst), at: now}
		f.by[key] = k
	}
	f.refill(k, now)
	if k.tokens < 1 {
		return time.Duration((1 - k.tokens) / f.rate.PerSecond * float64(time.Second)), false
	}
	k.tokens--
	return 0, true
}

// giveBack returns a token taken for a call that did not fail.
func (f *failureBuckets) giveBack(key string) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.by[key]; ok {
		f.refill(k, now)
		k.tokens = min(float64(f.rate.Burst), k.tokens+1)
	}
}

// prune drops full buckets now and then, so that many callers do not grow
// the map without bound.
func (f *failureBuckets) prune(now time.Time) {
	if f.seen++; f.seen%1024 != 0 {
		return
	}
	for key, k := range f.by {
		if f.refill(k, now); k.tokens >= float64(f.rate.Burst) {
			delete(f.by, key)
		}
	}
}

// limitUnary applies the limits before the handler runs.
func (s *Server) limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	card, addr, ok := callerKeys(ctx, s.cfg.Limits.SourcePrefixV6)
	if !ok {
		return h(ctx, req)
	}
	l := s.limits
	switch info.FullMethod {
	case "/credgw.v1.PIVAuth/BeginSession":
		// A call refused by one limit gives back what the others gave it.
		undoCard, wait, ok := l.signInCard.reserve(card)
		if !ok {
			return nil, limited("sign-in challenges for this card", wait)
		}
		undoAddr, wait, ok := l.signInAddr.reserve(addr)
		if !ok {
			undoCard()
			return nil, limited("sign-in challenges from this address", wait)
		}
		if wait, ok := l.challenges.open(card); !ok {
			undoCard()
			undoAddr()
			return nil, limited("outstanding sign-in challenges for this card (complete or let them expire)", wait)
		}
		resp, err := h(ctx, req)
		if err != nil {
			// No challenge was issued (admission turned the call away
			// under load, the store failed): none is outstanding.
			l.challenges.close(card)
		}
		if errors.As(err, new(notAdmitted)) {
			// Turned away under load before any work: a retry once the
			// load has gone finds the card's and the address's budget
			// as it was.
			undoCard()
			undoAddr()
		}
		return resp, err
	case "/credgw.v1.PIVAuth/CompleteSession":
		// Only a challenge really spent, whether the sign-in then
		// succeeds or not; not for a session id no challenge had.
		var spent atomic.Bool
		resp, err := h(session.WithSpent(ctx, func() { spent.Store(true) }), req)
		if spent.Load() {
			l.challenges.close(card)
		}
		return resp, err
	case "/credgw.v1.Enrollment/CreateEnrollment":
		undo, wait, ok := l.enrollCard.reserve(card)
		if !ok {
			return nil, limited("enrollments for this card", wait)
		}
		resp, err := h(ctx, req)
		if errors.As(err, new(notAdmitted)) {
			undo()
		}
		return resp, err
	}
	return h(ctx, req)
}
