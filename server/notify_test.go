package server_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// TestNotifications: binding, key delivery, lockout and revocation each
// reach the address of record over STARTTLS with AUTH, with no secret in
// them; a relay that refuses is retried from the outbox.
func TestNotifications(t *testing.T) {
	ctx := context.Background()
	const holder = "notify.me@example.com"
	_, setID := activeSet(t, holder)
	for _, kind := range []string{"binding", "key-delivery"} {
		m := mails.waitFor(t, kind, holder)
		if !m.tls || !m.authed {
			t.Fatalf("%s sent without STARTTLS (%v) or AUTH (%v)", kind, m.tls, m.authed)
		}
		if !strings.Contains(m.data, setID) || !strings.Contains(m.data, "From: credgw@example.com") {
			t.Fatalf("%s message:\n%s", kind, m.data)
		}
	}

	// Lockout: five wrong passwords on another enrollment of another card.
	e := enrollCard(t)
	for i := 0; i < 5; i++ {
		agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: "00000000", OutDir: t.TempDir(), KeystorePIN: "correct horse"})
	}
	mails.waitFor(t, "lockout", "holder@example.com")

	// Revocation while the relay refuses: queued, retried, then delivered.
	mails.refuse.Store(true)
	t.Cleanup(func() { mails.refuse.Store(false) }) // even if this test fails: later tests need mail
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	cs, err := gwStore.CredentialSet(ctx, setID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeIdentity(ctx, &credgwv1.RevokeIdentityRequest{Identity: &credgwv1.PIVIdentitySelector{
		Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: cs.CardUUID}}}); err != nil {
		t.Fatal(err)
	}
	// Either this call or the background sender (woken by the revocation)
	// makes the first attempt; wait, bounded, until one has recorded it.
	sent, failed, err := gw.DeliverNotifications(ctx)
	for deadline := time.Now().Add(30 * time.Second); failed == 0 && err == nil; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the refused revocation notice was never attempted")
		}
		// The background sender may have taken the first attempt.
		all, _ := gwStore.Notifications(ctx)
		for _, n := range all {
			if n.Kind == "revocation" && n.Recipient == holder && n.Attempts > 0 && n.LastError != "" {
				failed = 1
			}
		}
		if failed == 0 {
			_, failed, err = gw.DeliverNotifications(ctx)
		}
	}
	if err != nil {
		t.Fatalf("deliver: sent %d failed %d: %v", sent, failed, err)
	}
	mails.refuse.Store(false)
	clockOffset.Add(int64(2 * 60 * 1e9)) // past the first backoff
	defer clockOffset.Add(-int64(2 * 60 * 1e9))
	if _, _, err := gw.DeliverNotifications(ctx); err != nil {
		t.Fatal(err)
	}
	mails.waitFor(t, "revocation", holder)

	// No secret in any message.
	mails.mu.Lock()
	defer mails.mu.Unlock()
	secrets.Lock()
	defer secrets.Unlock()
	for _, m := range mails.msgs {
		for _, s := range secrets.list {
			if strings.Contains(m.data, s) {
				t.Fatalf("a notification carries a secret (%d bytes)", len(s))
			}
		}
	}
}
