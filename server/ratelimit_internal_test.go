package server

import (
	"testing"
	"time"
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
