package server

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	beginSession     = "/credgw.v1.PIVAuth/BeginSession"
	createEnrollment = "/credgw.v1.Enrollment/CreateEnrollment"
)

// With every slot taken, new work waits and, at its deadline, gets
// Unavailable (Canceled if the caller gave up); the calls that finish
// work under way pass at once; a released slot admits the next call.
func TestAdmission(t *testing.T) {
	waiting := new(counter)
	a := newAdmission(1, waiting)
	_, hold, err := a.admit(context.Background(), beginSession)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"enrollment past its deadline", expired, createEnrollment, codes.Unavailable},
		{"sign-in past its deadline", expired, beginSession, codes.Unavailable},
		{"sign-in cancelled", cancelled, beginSession, codes.Canceled},
		{"redemption", expired, "/credgw.v1.Redemption/Redeem", codes.OK},
		{"confirmation", expired, "/credgw.v1.Redemption/Confirm", codes.OK},
		{"completing a sign-in past its deadline", expired, "/credgw.v1.PIVAuth/CompleteSession", codes.Unavailable},
		{"an administrator", expired, "/credgw.v1.Admin/RevokeIdentity", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, release, err := a.admit(tc.ctx, tc.method)
			if status.Code(err) != tc.want {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.want)
			}
			if err == nil {
				release()
			} else if tc.want == codes.Unavailable && !strings.Contains(err.Error(), "try again") {
				t.Fatalf("the error does not say what to do: %v", err)
			}
			if n := waiting.load(); n != 0 {
				t.Fatalf("%v calls still counted as waiting", n)
			}
		})
	}
	hold()
	_, release, err := a.admit(expired, createEnrollment)
	if err != nil {
		t.Fatalf("a free slot was not given: %v", err)
	}
	release()
}

func TestAdmissionLimits(t *testing.T) {
	g := new(counter)
	if a := newAdmission(-1, g); a.limit > 0 {
		t.Fatal("-1 limits")
	}
	if a := newAdmission(0, g); a.limit != max(1, runtime.GOMAXPROCS(0)/2) || a.free != a.limit {
		t.Fatalf("default %d slots", a.limit)
	}
	a := newAdmission(-1, g)
	for range 100 {
		if _, _, err := a.admit(context.Background(), createEnrollment); err != nil {
			t.Fatal(err)
		}
	}
}

// counter is the waiting gauge; waitFor blocks on its changes. Its zero
// value is ready.
type counter struct {
	mu       sync.Mutex
	changed  *sync.Cond // made on first use, under mu
	n        int64
	timedOut bool
}

// cond is changed; the caller holds mu.
func (c *counter) cond() *sync.Cond {
	if c.changed == nil {
		c.changed = sync.NewCond(&c.mu)
	}
	return c.changed
}

func (c *counter) Inc() { c.add(1) }
func (c *counter) Dec() { c.add(-1) }

func (c *counter) add(d int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	c.cond().Broadcast()
}

func (c *counter) load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// free reports whether a slot is free now.
func free(a *admission) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.free > 0
}

// An admitted call gives its slot back while its OCSP or CRL request is on
// the network, until the response body is closed (or the request failed),
// and takes one again afterwards; a body closed after the call ended takes
// nothing; calls that were not admitted pass through.
func TestSlotTransport(t *testing.T) {
	a := newAdmission(1, new(counter))
	var freeDuringRequest bool
	fail := false
	client := yieldingClient(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		freeDuringRequest = free(a)
		if fail {
			return nil, errors.New("responder down")
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ocsp")), Request: r}, nil
	})})
	get := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://ocsp.invalid/", nil)
		return client.Do(req)
	}

	ctx, release, err := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !freeDuringRequest {
		t.Fatal("the slot was held while the request was on the network")
	}
	if !free(a) {
		t.Fatal("the slot was taken again before the body was read and closed")
	}
	io.ReadAll(resp.Body)
	if err := resp.Body.Close(); err != nil || free(a) {
		t.Fatalf("after Close the call holds no slot (err %v)", err)
	}
	fail = true
	if _, err := get(ctx); err == nil || free(a) {
		t.Fatalf("a failed request: %v, and the slot must be held again", err)
	}
	// A fetch whose own deadline passed: the slot is taken again within
	// the call's deadline, not the fetch's.
	// Meanwhile another call took the freed slot, so taking it back waits.
	fetchCtx, cancelFetch := context.WithCancel(ctx)
	var other func()
	timedOut := yieldingClient(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		_, other, _ = a.admit(context.Background(), beginSession)
		cancelFetch()
		return nil, errors.New("OCSP responder timed out")
	})})
	req, _ := http.NewRequestWithContext(fetchCtx, http.MethodGet, "http://ocsp.invalid/", nil)
	fetched := make(chan error)
	go func() { _, err := timedOut.Do(req); fetched <- err }()
	waitFor(t, a.waiting.(*counter), 1)
	other()
	if err := <-fetched; err == nil || strings.Contains(err.Error(), "busy") || free(a) {
		t.Fatalf("after a fetch that timed out: %v; the call must hold its slot again", err)
	}
	fail = false
	late, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	late.Body.Close()
	if !free(a) {
		t.Fatal("a body closed after the call ended took the slot")
	}
	// Not admitted: the request runs without touching the admission.
	_, hold, _ := a.admit(context.Background(), beginSession)
	defer hold()
	if resp, err := get(context.Background()); err != nil || freeDuringRequest {
		t.Fatalf("a call without a slot: %v, free during request %v", err, freeDuringRequest)
	} else {
		resp.Body.Close()
	}
}

// waitFor returns once n calls wait for a slot: it wakes on every change
// of the gauge, not on a timer. A watchdog ends a wait that a broken
// admission would never end.
func waitFor(t *testing.T, c *counter, n int64) {
	t.Helper()
	watchdog := time.AfterFunc(time.Minute, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.timedOut = true
		c.cond().Broadcast()
	})
	defer watchdog.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n != n && !c.timedOut {
		c.cond().Wait()
	}
	if c.n != n {
		t.Fatalf("%d calls waiting, want %d", c.n, n)
	}
}

// A freed slot goes to the oldest completion of a sign-in before any new
// sign-in or enrollment, and to those in their order of arrival; a slot
// granted to a call whose deadline passed is passed on, not lost.
func TestAdmissionOrder(t *testing.T) {
	waiting := new(counter)
	a := newAdmission(1, waiting)
	_, hold, err := a.admit(context.Background(), createEnrollment)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	start := func(name, method string, n int64) {
		go func() {
			_, release, err := a.admit(context.Background(), method)
			if err != nil {
				order <- "error " + err.Error()
				return
			}
			order <- name
			release()
		}()
		waitFor(t, waiting, n)
	}
	start("new sign-in", beginSession, 1)
	start("new enrollment", createEnrollment, 2)
	start("completion", "/credgw.v1.PIVAuth/CompleteSession", 3)
	hold()
	for _, want := range []string{"completion", "new sign-in", "new enrollment"} {
		if got := <-order; got != want {
			t.Fatalf("served %q, want %q", got, want)
		}
	}
	if !free(a) {
		t.Fatal("the slot was not returned")
	}
	// A caller that gives up leaves the queue; the slot is not lost.
	_, hold, _ = a.admit(context.Background(), createEnrollment)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, _, err := a.admit(ctx, beginSession); done <- err }()
	waitFor(t, waiting, 1)
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("a cancelled wait: %v", err)
	}
	hold()
	if !free(a) {
		t.Fatal("the slot was lost")
	}
}

// A call's slot through its network waits: a call that ends while its
// take-back waits passes the slot on when it comes; a second take-back of
// the same call waits for the first instead of running without a slot; a
// take-back goes ahead of completions and new calls.
func TestSlotTakeBack(t *testing.T) {
	waiting := new(counter)
	a := newAdmission(1, waiting)
	ctx1, end1, _ := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
	s1 := ctx1.Value(slotKey{}).(*slot)

	// Ends while its take-back waits.
	s1.yield()
	_, other, _ := a.admit(context.Background(), createEnrollment)
	back := make(chan error)
	go func() { back <- s1.back() }()
	waitFor(t, waiting, 1)
	end1()
	other()
	if err := <-back; err != nil || !free(a) {
		t.Fatalf("take-back after the call ended: %v; the slot must be free", err)
	}

	// Two overlapping requests: the second take-back waits for the first.
	ctx2, end2, _ := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
	s2 := ctx2.Value(slotKey{}).(*slot)
	s2.yield()
	s2.yield()
	_, other, _ = a.admit(context.Background(), createEnrollment)
	s2.mu.Lock()
	s2.away-- // the first request is done; its take-back is the second's
	s2.mu.Unlock()
	first := make(chan error)
	go func() { first <- s2.back() }()
	waitFor(t, waiting, 1)
	second := make(chan error, 1)
	go func() { second <- s2.back() }() // the other request finishes now
	waitFor(t, waiting, 2)              // it waits for the first, not returning without a slot
	// Order: a completion arrives; the take-back goes first.
	order := make(chan string, 2)
	go func() {
		_, r, err := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
		if err == nil {
			order <- "completion"
			r()
		}
	}()
	waitFor(t, waiting, 3)
	other()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	s2.mu.Lock()
	held := s2.held
	s2.mu.Unlock()
	if !held {
		t.Fatal("the take-back did not go ahead of the waiting completion")
	}
	end2()
	if got := <-order; got != "completion" {
		t.Fatal(got)
	}
	waitFor(t, waiting, 0)
	if !free(a) {
		t.Fatal("a slot was lost")
	}

	// A take-back goes ahead of a completion that has waited longer.
	ctx3, end3, _ := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
	s3 := ctx3.Value(slotKey{}).(*slot)
	s3.yield()
	_, other, _ = a.admit(context.Background(), createEnrollment)
	served := make(chan string, 2)
	go func() {
		_, r, err := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
		if err == nil {
			served <- "completion"
			r()
		}
	}()
	waitFor(t, waiting, 1)
	go func() {
		if s3.back() == nil {
			served <- "take-back"
			end3()
		}
	}()
	waitFor(t, waiting, 2)
	other()
	if first := <-served; first != "take-back" {
		t.Fatalf("%s served before the take-back", first)
	}
	<-served
	waitFor(t, waiting, 0)
	if !free(a) {
		t.Fatal("a slot was lost")
	}
}

// gateGauge holds each waiter just after it joined the queue, before it
// waits, until the test lets it go on.
type gateGauge struct {
	counter
	entered, proceed chan struct{}
}

func (g *gateGauge) Inc() {
	g.counter.Inc()
	g.entered <- struct{}{}
	<-g.proceed
}

// A grant racing with its waiter's cancellation loses no slot, whichever
// the waiter sees first: the grant is given and the call cancelled before
// the waiter waits, so both are ready when it does.
func TestAdmissionGrantRacesCancel(t *testing.T) {
	g := &gateGauge{entered: make(chan struct{}), proceed: make(chan struct{})}
	a := newAdmission(1, g)
	outcomes := map[bool]int{}
	for range 200 {
		a.admit(context.Background(), createEnrollment) // the slot the grant hands over
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan bool)
		go func() {
			_, r, err := a.admit(ctx, beginSession)
			if err == nil {
				r()
			}
			got <- err == nil
		}()
		<-g.entered
		a.release() // grants it to the waiter
		cancel()
		g.proceed <- struct{}{}
		outcomes[<-got]++
		if !free(a) {
			t.Fatal("a slot was lost")
		}
	}
	if outcomes[true] == 0 || outcomes[false] == 0 {
		t.Fatalf("the race was not exercised both ways: %v", outcomes)
	}
}

// Many calls with deadlines, cancellations, overlapping fetches that fail
// or whose bodies close after the call ended, and calls that end while
// fetches are out: afterwards every slot is free, no one waits, and at no
// time was a slot free while someone waited. Bounded; jitter by yielding
// the processor, not by sleeping.
func TestAdmissionStress(t *testing.T) {
	jitter := func() {
		for range rand.IntN(4) {
			runtime.Gosched()
		}
	}
	for _, limit := range []int{1, 2, 3} {
		waiting := new(counter)
		a := newAdmission(limit, waiting)
		client := yieldingClient(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			jitter()
			if rand.IntN(4) == 0 {
				return nil, errors.New("responder down")
			}
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
		})})
		check := func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			n := 0
			for _, q := range a.queues {
				n += len(q)
			}
			if a.free < 0 || a.free > limit || (a.free > 0 && n > 0) {
				t.Errorf("limit %d: %d free with %d waiting", limit, a.free, n)
			}
		}
		methods := []string{beginSession, "/credgw.v1.PIVAuth/CompleteSession", createEnrollment}
		var wg, late sync.WaitGroup
		for i := range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if i%7 == 0 {
					go func() { jitter(); cancel() }()
				}
				cctx, release, err := a.admit(ctx, methods[rand.IntN(len(methods))])
				if err != nil {
					return
				}
				check()
				var fetches sync.WaitGroup
				for range 1 + rand.IntN(2) {
					fetches.Add(1)
					go func() {
						defer fetches.Done()
						req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://ocsp.invalid/", nil)
						resp, err := client.Do(req)
						if err != nil {
							return
						}
						if rand.IntN(5) == 0 {
							late.Add(1)
							go func() { defer late.Done(); jitter(); resp.Body.Close() }()
							return
						}
						resp.Body.Close()
					}()
				}
				if rand.IntN(2) == 0 {
					jitter()
					release() // ends while fetches are out
					fetches.Wait()
				} else {
					fetches.Wait()
					release()
				}
				cancel() // a take-back still waiting ends with the call
			}()
		}
		wg.Wait()
		late.Wait()
		waitFor(t, waiting, 0)
		check()
		if a.free != limit {
			t.Fatalf("limit %d: %d slots free at the end", limit, a.free)
		}
	}
}

// An admitted call gives its slot back while it waits for a revocation
// answer, its own fetch or one shared with other sign-ins, and holds it
// again when the wait ends; a call without a slot waits without touching
// the admission.
func TestNetworkWaitYieldsSlot(t *testing.T) {
	a := newAdmission(1, new(counter))
	ctx, release, err := a.admit(context.Background(), "/credgw.v1.PIVAuth/CompleteSession")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	end := networkWait(ctx)
	if !free(a) {
		t.Fatal("the slot was held while the call waited for a shared fetch")
	}
	if err := end(); err != nil || free(a) {
		t.Fatalf("after the wait: %v; the call must hold its slot again", err)
	}
	if err := networkWait(context.Background())(); err != nil || free(a) {
		t.Fatalf("a call without a slot: %v, or it freed another call's slot", err)
	}
}
