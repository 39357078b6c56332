package activation

import (
	"context"
	"database/sql"
	"testing"

	_ "modernc.org/sqlite"
)

// TestCodesAndKeysOutliveTheFoldingMigration: a release before migration
// 00021 stored a person id from an email address as the card spells it,
// and bound it into what it sealed: the escrowed keys (their AAD) and each
// code's password verifier (the set's binding). 00021 folds the stored
// ids. Before, every escrowed key of such a person then failed to unseal
// (no redemption, renewal or recovery for them, ever), and a code pending
// across the upgrade answered its right password with "wrong password",
// counting attempts and telling the person so. Both must open.
func TestCodesAndKeysOutliveTheFoldingMigration(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	const mixed = "Alice.Smith@Agency.GOV"
	alice := h.signIn(t, mixed)
	alice.PersonID = mixed // as the release before 00021 made it
	h.install(t, h.enroll(t, alice))
	pending := h.enroll(t, h.again(alice))

	// What 00021 does to these rows.
	raw, err := sql.Open("sqlite", "file:"+h.dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, table := range []string{"piv_sessions", "certificates", "escrow_keys", "credential_sets"} {
		if _, err := raw.ExecContext(ctx, `UPDATE `+table+` SET person_id = lower(person_id) WHERE person_id <> lower(person_id)`); err != nil {
			t.Fatal(err)
		}
	}

	d, err := h.svc.Redeem(ctx, pending.request(t), nil)
	if err != nil {
		t.Fatalf("the code pending across the upgrade, with its right password: %v", err)
	}
	if n := keyCount(t, d); n != 2 {
		t.Fatalf("the package holds %d keys, want 2: its own and the one sealed before the upgrade", n)
	}
	if a, err := h.st.ActivationByID(ctx, pending.payload.ID); err != nil || a.FailedAttempts != 0 {
		t.Errorf("%d failed attempts (%v), want none", a.FailedAttempts, err)
	}
}
