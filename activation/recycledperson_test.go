package activation

import (
	"context"
	"testing"

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
