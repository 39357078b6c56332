package activation

import (
	"context"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// TestRevokeOwnSetInAnotherSpelling: a set an older release stored with
// the card's spelling of an email or UPN person id (while an upgrade
// rolled) is the person's: listed as theirs by the folded id, and revoked
// by them (a lost phone), not refused as another's.
func TestRevokeOwnSetInAnotherSpelling(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	now := h.clock()
	cs := store.CredentialSet{ID: "set-mixed", PersonID: "Pat.Doe@Agency.GOV", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
		IdentityName: "Phone", CredentialType: DefaultCredentialType, State: store.SetPending, CreatedAt: now}
	if err := h.st.CreateEnrollment(ctx, cs, store.Activation{ID: "act-mixed", LookupHash: "lh-mixed", Verifier: []byte{1}, MaxAttempts: 3,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RevokeSet(ctx, "pat.doe@agency.gov", cs.ID, issuance.ReasonCessationOfOperation); err != nil {
		t.Fatalf("the person's own set in another spelling: %v", err)
	}
	if _, err := h.svc.RevokeSet(ctx, "someone.else@agency.gov", cs.ID, issuance.ReasonCessationOfOperation); err == nil {
		t.Fatal("another person revoked the set")
	}
}
