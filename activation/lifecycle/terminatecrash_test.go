package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/store"
)

// TestTerminateOnceAfterACrash: the webhook's signature is recorded
// before the termination. A process killed in between left the
// signature and no termination, and the sender's resend of the same
// request was refused as a replay: the identity was never terminated. A
// resend of a request whose termination is not recorded carries it out;
// one whose termination is recorded stays a replay.
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
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); err != nil {
		t.Fatalf("the resend after a crash: %v, want the termination carried out", err)
	}
	if dead, err := f.st.Terminated(ctx, nil, "", "p1"); err != nil || !dead {
		t.Fatalf("p1 terminated: %v, %v", dead, err)
	}
	if _, err := f.svc.TerminateOnce(ctx, sig, window, sel, "left", "192.0.2.1"); !errors.Is(err, lifecycle.ErrReplayed) {
		t.Errorf("a replay of a carried-out termination: %v, want ErrReplayed", err)
	}
}
