package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/store"
)

// TestTerminateOnceAfterACrash: the webhook's signature was recorded
// before the termination (the release before). A process killed in
// between left the signature and no termination, and the sender's resend
// of the same request was refused as a replay: the identity was never
// terminated. The termination is now recorded before the signature, so
// the resend records it (and is answered as a replay: the termination it
// recorded is too fresh to be taken for an interrupted one; the sweep
// carries it out, TestSweepFinishesAnInterruptedTermination).
func TestTerminateOnceAfterACrash(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	const sig = "sig-1"
	window := time.Now().Add(5 * time.Minute)
	// What the killed process committed.
	if _, err := f.st.RememberDelivery(ctx, sig, window); err != nil {
		t.Fatal(err)
	}
	sel := store.IdentitySelector{PersonID: "p1"}
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); !errors.Is(err, lifecycle.ErrReplayed) {
		t.Errorf("the resend: %v, want ErrReplayed", err)
	}
	if dead, err := f.st.Terminated(ctx, nil, "", "p1"); err != nil || !dead {
		t.Fatalf("p1 terminated: %v, %v", dead, err)
	}
}

// TestTerminateOnceRecordsTheTerminationFirst: a process killed after it
// recorded the termination and before it remembered the request's
// signature: the sender's resend, once the first can no longer be under
// way, is carried out (revoking the sets), not refused as a replay.
func TestTerminateOnceRecordsTheTerminationFirst(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	sel := store.IdentitySelector{PersonID: "p1"}
	window := time.Now().Add(5 * time.Minute)
	if err := f.st.Terminate(ctx, store.Termination{Selector: sel, TerminatedAt: time.Now().Add(-5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.TerminateOnce(ctx, "sig-2", window, sel, "left", "192.0.2.1"); err != nil {
		t.Fatalf("the resend: %v", err)
	}
	if cs, err := f.st.CredentialSet(ctx, "set-a"); err != nil || cs.State != store.SetRevoked {
		t.Errorf("the set is %q (%v), want revoked", cs.State, err)
	}
}

// TestReplayOfAnUnfinishedTerminationFinishesIt: a process killed after it
// recorded the termination and the request's signature, before it revoked
// anything. The sender's resend was refused as a replay (409) and the
// sets stayed live until the sweep found the termination minutes later.
// The resend now carries the termination out; once it is finished, a
// replay changes nothing and is refused.
func TestReplayOfAnUnfinishedTerminationFinishesIt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	const sig = "sig-3"
	sel := store.IdentitySelector{PersonID: "p1"}
	window := time.Now().Add(5 * time.Minute)
	// What the killed process committed, minutes ago.
	if err := f.st.Terminate(ctx, store.Termination{Selector: sel, TerminatedAt: time.Now().Add(-5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.RememberDelivery(ctx, sig, window); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); err != nil {
		t.Fatalf("the resend: %v, want the termination carried out", err)
	}
	if cs, err := f.st.CredentialSet(ctx, "set-a"); err != nil || cs.State != store.SetRevoked {
		t.Errorf("the set is %q (%v), want revoked", cs.State, err)
	}
	events := len(f.events(t, "terminate"))
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); !errors.Is(err, lifecycle.ErrReplayed) {
		t.Errorf("a replay of the finished termination: %v, want ErrReplayed", err)
	}
	if n := len(f.events(t, "terminate")); n != events {
		t.Errorf("the replay wrote %d terminate events, want none", n-events)
	}
}

// TestResendDuringTheTerminationIsAReplay: a resend while the first
// request is still being carried out (a sender retrying on its own
// timeout, or a captured request replayed) ran a second whole termination
// beside it: a second terminate event, a second notice to the person, and
// an answer with only the serials it revoked itself. A termination
// recorded less than the time the first may take is not an interrupted
// one: the resend is a replay and changes nothing.
func TestResendDuringTheTerminationIsAReplay(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	const sig = "sig-4"
	sel := store.IdentitySelector{PersonID: "p1"}
	window := time.Now().Add(5 * time.Minute)
	// The first request, under way.
	if err := f.st.Terminate(ctx, store.Termination{Selector: sel, TerminatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.RememberDelivery(ctx, sig, window); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); !errors.Is(err, lifecycle.ErrReplayed) {
		t.Fatalf("a resend during the first: %v, want ErrReplayed", err)
	}
	// A new request (a fresh timestamp, so a new signature) for the same
	// identity while the first is under way: the same.
	if _, err := f.svc.TerminateOnce(ctx, "sig-5", window, sel, "left", "192.0.2.1"); !errors.Is(err, lifecycle.ErrReplayed) {
		t.Fatalf("a new request during the first: %v, want ErrReplayed", err)
	}
	if n := len(f.events(t, "terminate")); n != 0 {
		t.Errorf("the resends wrote %d terminate events", n)
	}
}
