package activation

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
)

// withoutNotifications gives the harness an outbox with no sender.
func withoutNotifications(t *testing.T) func(*Config) {
	return func(cfg *Config) {
		ob, err := notify.New(notify.Config{}, func(p string) string { return p }, cfg.Store, cfg.Log, cfg.Now)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Notify = ob
	}
}

// TestEscrowNeedsNotifications: escrowed encryption keys are given to a
// device without two-person control only if every attempt is told to the
// person (Common Policy §4.12.1: "no notification address, no automated
// recovery"). A gateway that sends no notifications refuses to enroll a
// credential type with an escrowed key, before anything is made, and says
// what to configure; one without escrow is enrolled.
func TestEscrowNeedsNotifications(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		withoutNotifications(t)(cfg)
		cfg.CredentialTypes = map[string][]issuance.Profile{
			DefaultCredentialType: issuance.Profiles(),
			"authentication-only": {issuance.DerivedPIVAuth},
		}
	})
	ctx := context.Background()
	sess := h.signIn(t, "a@example.gov")
	_, err := h.svc.Enroll(ctx, EnrollRequest{Session: sess, IdentityName: "Phone", CredentialType: DefaultCredentialType})
	if !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "notifications") {
		t.Fatalf("an escrowed key without notifications: %v, want ErrPrecondition naming the notifications setting", err)
	}
	if n, _ := h.st.CountLiveSets(ctx, sess.PersonID); n != 0 {
		t.Fatalf("%d sets made by a refused enrollment", n)
	}
	if keys, _ := h.st.EscrowKeys(ctx, sess.PersonID); len(keys) != 0 {
		t.Fatalf("%d escrowed keys made by a refused enrollment", len(keys))
	}
	if _, err := h.svc.Enroll(ctx, EnrollRequest{Session: sess, IdentityName: "Phone", CredentialType: "authentication-only"}); err != nil {
		t.Fatalf("no escrow, no notifications: %v", err)
	}
}

// TestEveryWrongPasswordTold: each wrong password typed for a code is told
// to the person (an attempt to recover their escrowed keys, Common Policy
// §4.12.1), with the attempts left and never the password.
func TestEveryWrongPasswordTold(t *testing.T) {
	h := newHarness(t, withMail(t))
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	req := e.request(t)
	wrong := req
	wrong.Password = wrongPassword(req.Password)
	for range 2 {
		if _, err := h.svc.Redeem(ctx, wrong, nil); err == nil {
			t.Fatal("a wrong password was taken")
		}
	}
	ns, err := h.st.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	for _, n := range ns {
		if n.Kind == "failed-attempt" {
			told = append(told, n.Body)
			if n.Recipient != "a@example.gov" || strings.Contains(n.Body, wrong.Password) || strings.Contains(n.Body, req.Password) {
				t.Errorf("notice to %q: %q", n.Recipient, n.Body)
			}
		}
	}
	all := strings.Join(told, "\n")
	if len(told) != 2 || !strings.Contains(all, "4 attempts left") || !strings.Contains(all, "3 attempts left") {
		t.Fatalf("failed-attempt notices %q; want one per wrong password with the attempts left", told)
	}
}

// TestRekeyNeedsNotificationsForEscrow: a renewal delivers a new escrowed
// key and the key history: refused, before any renewal exists, by a
// gateway that no longer sends notifications.
func TestRekeyNeedsNotificationsForEscrow(t *testing.T) {
	h := newHarness(t, withMail(t))
	ctx := context.Background()
	current := renewable(t, h)
	withoutNotifications(t)(&h.svc.cfg)
	req := rekeyRequest(t, current)
	if _, err := h.svc.Rekey(ctx, req, nil); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "notifications") {
		t.Fatalf("Rekey without notifications: %v, want ErrPrecondition naming the notifications setting", err)
	}
	withMail(t)(&h.svc.cfg)
	if _, err := h.svc.Rekey(ctx, req, nil); err != nil {
		t.Fatalf("the same Rekey once notifications are configured: %v", err)
	}
}

// TestRedeemNeedsNotificationsForEscrow: a code made while notifications
// were configured is not redeemed by a gateway (or a replica) that sends
// none: its package carries escrowed keys. Nothing changes: the code stays
// pending with its attempts, and is redeemed once a sender is back.
func TestRedeemNeedsNotificationsForEscrow(t *testing.T) {
	h := newHarness(t, withMail(t))
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	withoutNotifications(t)(&h.svc.cfg)
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "notifications") {
		t.Fatalf("Redeem without notifications: %v, want ErrPrecondition naming the notifications setting", err)
	}
	a, err := h.st.ActivationByID(ctx, e.payload.ID)
	if err != nil || a.State != "pending" || a.FailedAttempts != 0 {
		t.Fatalf("after the refusal: %+v, %v; want pending, no attempt spent", a, err)
	}
	withMail(t)(&h.svc.cfg)
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatalf("once notifications are back: %v", err)
	}
}
