package activation

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// Escrowed keys have a lifecycle (issue 14, point 11): a key never
// certified goes when its activation ends, only keys of confirmed packages
// join a key history, and keys go at retain_until.

// again is a fresh sign-in of the same person with the same card.
func (h *harness) again(sess store.PIVSession) store.PIVSession {
	sess.CreatedAt, sess.ExpiresAt = h.clock(), h.clock().Add(20*time.Minute)
	return sess
}

// escrowKeys lists the ids of a person's escrowed keys.
func escrowKeys(t *testing.T, h *harness, personID string) []store.EscrowKey {
	t.Helper()
	keys, err := h.st.EscrowKeys(context.Background(), personID)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// install redeems e's code and confirms the package, as a device does.
func (h *harness) install(t *testing.T, e enrolled) *Delivery {
	t.Helper()
	ctx := context.Background()
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err != nil {
		t.Fatal(err)
	}
	return d
}

// keyCount is how many keys encryption.p12 of a package holds.
func keyCount(t *testing.T, d *Delivery) int32 {
	t.Helper()
	for _, it := range d.Manifest.GetItems() {
		if it.GetKind() == credgwv1.ItemKind_ITEM_KIND_PKCS12 {
			return it.GetKeyCount()
		}
	}
	t.Fatal("no encryption.p12 in the package")
	return 0
}

// TestEndedEnrollmentLeavesNoEscrowKey: the key made at enrollment goes
// once its activation ends without it being certified: expired by the
// sweep, or cancelled.
func TestEndedEnrollmentLeavesNoEscrowKey(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	h.enroll(t, alice)
	bob := h.signIn(t, "b@example.gov")
	cancelled := h.enroll(t, bob)
	if _, err := h.svc.Cancel(ctx, cancelled.payload.ID, "test"); err != nil {
		t.Fatal(err)
	}
	live := h.signIn(t, "c@example.gov")
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(escrowKeys(t, h, bob.PersonID)); n != 1 {
		t.Fatalf("a key younger than EscrowKeyGrace was deleted: %d left", n)
	}
	h.advance(DefaultLifetime + time.Minute)
	h.enroll(t, live) // pending: its key stays
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []store.PIVSession{alice, bob} {
		if keys := escrowKeys(t, h, p.PersonID); len(keys) != 0 {
			t.Errorf("%s: %d escrowed keys left after the activation ended, want 0", p.PersonID, len(keys))
		}
	}
	if n := len(escrowKeys(t, h, live.PersonID)); n != 1 {
		t.Errorf("the key of a pending enrollment: %d keys, want 1", n)
	}
}

// TestFailedIssuanceReplacedKeyIsDeleted: after a failed issuance the set
// gets a new escrowed key; the one it replaced, if never certified, goes.
func TestFailedIssuanceReplacedKeyIsDeleted(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	e := h.enroll(t, alice)
	req := e.request(t)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, weak)
	if err != nil {
		t.Fatal(err)
	}
	if req.CSRs[issuance.DigitalSignature], err = x509.ParseCertificateRequest(der); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Redeem(ctx, req, nil); err == nil {
		t.Fatal("a 1024-bit RSA key was certified")
	}
	cs, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	h.advance(EscrowKeyGrace + time.Minute)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range escrowKeys(t, h, alice.PersonID) {
		if k.ID != cs.EscrowKeyID && k.CertSerial == "" {
			t.Errorf("the replaced key %s, never certified, was kept", k.ID)
		}
	}
	// The set redeems with its new key.
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatal(err)
	}
}

// TestUnconfirmedKeyNotInHistory: a package never confirmed (the sweep
// revokes it) does not put its key in a later key history; a confirmed
// one does, even after its set is revoked.
func TestUnconfirmedKeyNotInHistory(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	first := h.enroll(t, alice)
	req := first.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, d); n != 1 {
		t.Fatalf("the first package holds %d keys, want 1", n)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RevokeSet(ctx, alice.PersonID, first.en.CredentialSetID, issuance.ReasonCessationOfOperation); err != nil {
		t.Fatal(err)
	}

	undelivered := h.enroll(t, h.again(alice))
	d, err = h.svc.Redeem(ctx, undelivered.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the second package holds %d keys, want 2 (its own and the first, confirmed)", n)
	}
	h.advance(DefaultConfirmWindow + time.Minute)
	if n, err := h.svc.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep revoked %d sets, %v; want the unconfirmed one", n, err)
	}

	third := h.enroll(t, h.again(alice))
	d, err = h.svc.Redeem(ctx, third.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, d); n != 2 {
		t.Errorf("the third package holds %d keys, want 2: its own and the first; the never confirmed second is left out", n)
	}
	// The undelivered key stays in escrow (its certificate was issued).
	if n := len(escrowKeys(t, h, alice.PersonID)); n != 3 {
		t.Errorf("%d escrowed keys, want 3", n)
	}
}

// TestKeyHistoryLeavesOutAKeyNeverHeld: an issuance that failed after the
// key-management certificate was made gives the set a new escrowed key for
// the retry; the first key, certified and revoked, was never delivered, and
// a later package's key history leaves it out. Before, a key counted as
// delivered when its certificate's set was confirmed, so the retry's
// confirmation made the never-held key part of every later history.
func TestKeyHistoryLeavesOutAKeyNeverHeld(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	first := h.enroll(t, alice)
	req := first.request(t)
	h.issuer.kmIssued = make(chan struct{})
	h.issuer.failSignatureOnce.Store(true)
	if _, err := h.svc.Redeem(ctx, req, nil); err == nil {
		t.Fatal("the redemption succeeded although the signature certificate failed")
	}
	if n := len(escrowKeys(t, h, alice.PersonID)); n != 2 {
		t.Fatalf("%d escrowed keys after the failed issuance, want 2 (the certified one and the retry's)", n)
	}
	req = first.request(t) // new device keys for the retry
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, d); n != 1 {
		t.Fatalf("the retry's package holds %d keys, want 1", n)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RevokeSet(ctx, alice.PersonID, d.Manifest.GetCredentialSetId(), issuance.ReasonCessationOfOperation); err != nil {
		t.Fatal(err)
	}
	second := h.enroll(t, h.again(alice))
	d, err = h.svc.Redeem(ctx, second.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the next package holds %d keys, want 2: its own and the retry's; the key of the failed issuance was never held", n)
	}
}

// TestEscrowPurgedAfterRetainUntil: a certified key is kept until its
// retain_until (a year after its certificate expires), then the sweep
// deletes it.
func TestEscrowPurgedAfterRetainUntil(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	h.install(t, h.enroll(t, alice))
	keys := escrowKeys(t, h, alice.PersonID)
	if len(keys) != 1 || keys[0].RetainUntil.IsZero() {
		t.Fatalf("%+v", keys)
	}
	retain := keys[0].RetainUntil
	h.advance(retain.Sub(h.clock()) - time.Hour)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(escrowKeys(t, h, alice.PersonID)); n != 1 {
		t.Fatalf("purged before retain_until: %d keys", n)
	}
	h.advance(time.Hour)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(escrowKeys(t, h, alice.PersonID)); n != 0 {
		t.Errorf("%d escrowed keys past retain_until, want 0", n)
	}
}
