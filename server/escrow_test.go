package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// Escrowed keys have a lifecycle (issue 14, point 11), over gRPC on the
// engine the package runs on (make test runs it on SQLite and PostgreSQL).

func personKeys(t *testing.T, setID string) (string, []store.EscrowKey) {
	t.Helper()
	ctx := context.Background()
	cs, err := gwStore.CredentialSet(ctx, setID)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := gwStore.EscrowKeys(ctx, cs.PersonID)
	if err != nil {
		t.Fatal(err)
	}
	return cs.PersonID, keys
}

// TestEscrowKeyOfEndedActivationDeleted: the key made at enrollment goes
// when its activation ends uncertified, cancelled by an admin or expired.
func TestEscrowKeyOfEndedActivationDeleted(t *testing.T) {
	ctx := context.Background()
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	cancelled, expired := enrollCard(t), enrollCard(t)
	for _, e := range []enrolled{cancelled, expired} {
		if _, keys := personKeys(t, e.resp.GetCredentialSetId()); len(keys) != 1 {
			t.Fatalf("after enrollment: %d escrowed keys, want 1", len(keys))
		}
	}
	if _, err := admin.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: cancelled.payload.ID, Comment: "test"}); err != nil {
		t.Fatal(err)
	}
	// Past the activation's lifetime and the grace a running issuance has.
	shift := activation.DefaultLifetime + activation.EscrowKeyGrace + time.Minute
	clockOffset.Add(int64(shift))
	gw.Sweep(ctx)
	clockOffset.Add(-int64(shift))
	for name, e := range map[string]enrolled{"cancelled": cancelled, "expired": expired} {
		if _, keys := personKeys(t, e.resp.GetCredentialSetId()); len(keys) != 0 {
			t.Errorf("%s activation: %d escrowed keys left, want 0", name, len(keys))
		}
	}
}

// TestUndeliveredKeyLeftOutOfHistory: a package never confirmed does not
// put its key in a later key history; a confirmed one does.
func TestUndeliveredKeyLeftOutOfHistory(t *testing.T) {
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "history@example.com"})
	redeem := func(e enrolled) agent.Result {
		t.Helper()
		res, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
			OutDir: t.TempDir(), KeystorePIN: "correct horse"})
		if err != nil {
			t.Fatal(err)
		}
		return *res
	}
	if res := redeem(enrollWith(t, c)); res.KeyHistory != 1 {
		t.Fatalf("first package: %d keys, want 1", res.KeyHistory)
	}
	// The second package is downloaded but never confirmed.
	second := enrollWith(t, c)
	d, err := readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, second, second.resp.GetPassword()), 0)
	if err != nil || d.sum == nil {
		t.Fatalf("second download: %v", err)
	}
	clockOffset.Add(int64(activation.DefaultConfirmWindow + time.Minute))
	gw.Sweep(ctx)
	clockOffset.Add(-int64(activation.DefaultConfirmWindow + time.Minute))
	if st := setState(t, second.resp.GetCredentialSetId()); st != "revoked" {
		t.Fatalf("the unconfirmed set is %s, want revoked", st)
	}
	third := enrollWith(t, c)
	if res := redeem(third); res.KeyHistory != 2 {
		t.Errorf("third package: %d keys, want 2 (its own and the first; the undelivered second left out)", res.KeyHistory)
	}
	if _, keys := personKeys(t, third.resp.GetCredentialSetId()); len(keys) != 3 {
		t.Errorf("%d escrowed keys, want 3 (the undelivered one is certified: it stays until retain_until)", len(keys))
	}
}
