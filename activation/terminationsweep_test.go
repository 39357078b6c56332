package activation

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
)

// TestSweepFinishesAnInterruptedTermination: a process killed after it
// recorded a termination and before it revoked the identity's sets left
// them live for good: the sweep finished only sets already marked
// revoked, and a resend of the webhook was a replay. The sweep now
// carries out every termination whose revocations are not known done.
func TestSweepFinishesAnInterruptedTermination(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	d := h.install(t, h.enroll(t, alice))
	setID := d.Manifest.GetCredentialSetId()

	// What the killed process committed.
	if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{PersonID: alice.PersonID}, TerminatedAt: h.clock()}); err != nil {
		t.Fatal(err)
	}
	h.advance(5 * time.Minute)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	cs, err := h.st.CredentialSet(ctx, setID)
	if err != nil || cs.State != store.SetRevoked {
		t.Fatalf("the terminated person's set is %q (%v), want revoked", cs.State, err)
	}
	recs, err := h.st.CertificatesOfSet(ctx, setID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d certificates (%v)", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("certificate %s of the terminated person is still good", r.Serial)
		}
	}
	// The person is told (the interrupted call may not have got to it).
	ns, err := h.st.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	told := false
	for _, n := range ns {
		told = told || n.Kind == "termination"
	}
	if !told {
		t.Error("no termination notice")
	}
	// Finished, the termination is not carried out again.
	if ts, err := h.st.UnfinishedTerminations(ctx, h.clock(), 10); err != nil || len(ts) != 0 {
		t.Errorf("unfinished terminations after the sweep: %+v, %v", ts, err)
	}
}

// TestTerminationSweepKeepsItsBound: carrying out terminations again
// stops when the sweep's time is up. Before, each ran with two minutes of
// its own, one after another, so a CA that hung held the sweep (and the
// start-up catch-up, and shutdown) for up to 100 × 2 minutes.
func TestTerminationSweepKeepsItsBound(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	for _, email := range []string{"a@example.gov", "b@example.gov"} {
		sess := h.signIn(t, email)
		h.install(t, h.enroll(t, sess))
		if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{PersonID: sess.PersonID}, TerminatedAt: h.clock()}); err != nil {
			t.Fatal(err)
		}
	}
	h.advance(5 * time.Minute)
	sweep, cancel := context.WithCancel(ctx)
	defer cancel()
	var revokes atomic.Int32
	h.issuer.onRevoke = func(rctx context.Context) error {
		revokes.Add(1)
		cancel() // the sweep's time is up while the CA hangs
		select {
		case <-rctx.Done():
			return rctx.Err()
		case <-time.After(time.Minute): // a failsafe, not a synchronisation
			return errors.New("the revocation did not end with the sweep")
		}
	}
	err := h.svc.finishTerminations(sweep, h.clock())
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want the sweep's cancellation", err)
	}
	if n := revokes.Load(); n > 3 {
		t.Errorf("%d revocations tried, want those of the first identity's set (3) at most: the rest wait for the next sweep", n)
	}
}
