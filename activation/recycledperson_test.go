package activation

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// TestTerminationRetiresTheEscrowedKeys: with piv.person_attribute upn or
// email, the person id is an address, and agencies give a departed
// person's address to a new hire. The card issuer terminated the old
// holder's card; the new hire enrolled with their own card under the same
// address and their first encryption.p12 held the previous holder's
// escrowed keys. A termination now retires the escrowed keys of the
// person ids it ends: they stay in escrow, and no later key history
// carries them.
func TestTerminationRetiresTheEscrowedKeys(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	old := h.signIn(t, "john.smith@agency.gov")
	old.PersonID = "john.smith@agency.gov" // piv.person_attribute: upn
	h.install(t, h.enroll(t, old))
	if _, err := h.svc.RevokeIdentity(ctx, store.IdentitySelector{CardUUID: old.CardUUID}, issuance.ReasonCessationOfOperation, true, "left"); err != nil {
		t.Fatal(err)
	}
	newHire := h.signIn(t, "john.smith@agency.gov") // another card, the same address
	newHire.PersonID = old.PersonID
	d := h.install(t, h.enroll(t, newHire))
	if n := keyCount(t, d); n != 1 {
		t.Fatalf("the new holder of the address got %d keys, want 1 (their own)", n)
	}
	// A person not terminated keeps their history (a second enrollment).
	d = h.install(t, h.enroll(t, newHire))
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the new holder's second enrollment got %d keys, want 2", n)
	}
	keys, err := h.st.EscrowKeys(ctx, old.PersonID)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d escrowed keys, want 3: a retired key stays in escrow", len(keys))
	}
}

// TestRetirementStopsAtTheTermination: the sweep (or a resend, or an
// administrator repeating it) finishing a termination retired every key of
// the person id made up to then, those of another card enrolled after the
// termination included (the address's new holder's). Only keys made up to
// the termination's recorded time are retired.
func TestRetirementStopsAtTheTermination(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	old := h.signIn(t, "john.smith@agency.gov")
	old.PersonID = "john.smith@agency.gov"
	h.install(t, h.enroll(t, old))
	// Recorded by a process that died before carrying it out.
	if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{CardUUID: old.CardUUID}, TerminatedAt: h.clock(), Comment: "left"}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Minute)
	next := h.signIn(t, "john.smith@agency.gov") // another card, the same address
	next.PersonID = old.PersonID
	h.install(t, h.enroll(t, next))
	h.advance(5 * time.Minute)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	d := h.install(t, h.enroll(t, h.again(next)))
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the new card's second enrollment got %d keys, want 2 (its own earlier key, not the terminated holder's)", n)
	}
}

// TestTerminationKeepsFASCNPersonsHistory: with FASC-N person ids (the
// default), which are never given to someone else, a termination of one
// card retires nothing: the person's replacement card keeps the key
// history (DESIGN: key history follows the person across card re-issues).
func TestTerminationKeepsFASCNPersonsHistory(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	first := h.signIn(t, "ann@agency.gov")
	first.PersonID = "12345678901234"
	h.install(t, h.enroll(t, first))
	if _, err := h.svc.RevokeIdentity(ctx, store.IdentitySelector{CardUUID: first.CardUUID}, issuance.ReasonCessationOfOperation, true, "card terminated"); err != nil {
		t.Fatal(err)
	}
	replacement := h.signIn(t, "ann@agency.gov")
	replacement.PersonID = first.PersonID
	d := h.install(t, h.enroll(t, replacement))
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the replacement card got %d keys, want 2 (the person's history)", n)
	}
}

// retireFailing is the store whose RetireEscrowKeys fails while fail is set.
type retireFailing struct {
	store.Store
	fail *atomic.Bool
}

func (r retireFailing) RetireEscrowKeys(ctx context.Context, personID string, at time.Time) (int, error) {
	if r.fail.Load() {
		return 0, store.ErrUnavailable
	}
	return r.Store.RetireEscrowKeys(ctx, personID, at)
}

// TestTerminationRevokesWhenRetirementFails: a termination retired the
// escrowed keys of an address person id before it revoked anything, and
// returned at the first failure there: a store failing that one write
// left every credential of the terminated person good until the sweep
// finished the termination. It revokes all the same, and stays unfinished
// (the sweep, or a resend, retires the keys).
func TestTerminationRevokesWhenRetirementFails(t *testing.T) {
	var fail atomic.Bool
	h := newHarness(t, func(c *Config) { c.Store = retireFailing{c.Store, &fail} })
	ctx := context.Background()
	old := h.signIn(t, "john.smith@agency.gov")
	old.PersonID = "john.smith@agency.gov"
	e := h.enroll(t, old)
	h.install(t, e)
	certs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
	if err != nil || len(certs) == 0 {
		t.Fatalf("the set's certificates: %d, %v", len(certs), err)
	}
	sel := store.IdentitySelector{CardUUID: old.CardUUID}
	fail.Store(true)
	serials, err := h.svc.RevokeIdentity(ctx, sel, issuance.ReasonCessationOfOperation, true, "left")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("termination with the retirement failing: %v, want ErrUnavailable", err)
	}
	if len(serials) != len(certs) {
		t.Fatalf("revoked %d of the %d certificates with the retirement failing", len(serials), len(certs))
	}
	for _, c := range certs {
		r, err := h.st.Certificate(ctx, c.Serial)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Revoked() {
			t.Errorf("certificate %s of the terminated person is good", c.Serial)
		}
	}
	if unfinished, err := h.st.TerminationUnfinished(ctx, sel, h.clock().Add(time.Minute)); err != nil || !unfinished {
		t.Fatalf("termination unfinished = %v (%v), want true: its keys are not retired", unfinished, err)
	}
	fail.Store(false)
	if _, err := h.svc.RevokeIdentity(ctx, sel, issuance.ReasonCessationOfOperation, true, "left"); err != nil {
		t.Fatal(err)
	}
	keys, err := h.st.EscrowKeys(ctx, old.PersonID)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.RetiredAt.IsZero() {
			t.Errorf("escrowed key %s not retired after the termination finished", k.ID)
		}
	}
}
