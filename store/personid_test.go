package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPersonIDsFoldedByMigration: person ids from an email or UPN were kept
// as the card spelled them, so a termination or a key history that named
// another case missed the person. Migration 00021 folds them to lower case
// in every table but the audit log, whose hash chain keeps what was
// written; a person's audit events are still found by any case.
func TestPersonIDsFoldedByMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		s := st.(*DB)
		p, err := s.provider()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 20); err != nil {
			t.Fatalf("down to 20: %v", err)
		}
		const mixed, folded = "Alice.Smith@Agency.GOV", "alice.smith@agency.gov"
		if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: "0a", Issuer: "ca", Profile: "p", SPKISHA256: "ab",
			PersonID: mixed, CardUUID: "card", NotBefore: t0, NotAfter: t0.Add(time.Hour), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutEscrowKey(ctx, EscrowKey{ID: "k1", PersonID: mixed, KeyType: "rsa2048", SPKISHA256: "k1", KEKID: "kek", Sealed: []byte{1}, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		cs := CredentialSet{ID: "set-1", PersonID: mixed, Email: mixed, UPN: "A.Smith@agency.gov", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
			IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0}
		if err := s.CreateEnrollment(ctx, cs, Activation{ID: "a1", LookupHash: "lh-a1", Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0); err != nil {
			t.Fatal(err)
		}
		// Two spellings of one person terminated: they become one.
		for i, v := range []string{"ALICE.SMITH@agency.gov", mixed} {
			if err := s.Terminate(ctx, Termination{Selector: IdentitySelector{PersonID: v}, TerminatedAt: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.AppendAudit(ctx, AuditEvent{At: t0, Actor: "piv:" + mixed, Action: "enroll", PersonID: mixed, Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}

		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("up: %v", err)
		}

		if c, err := s.Certificate(ctx, "0a"); err != nil || c.PersonID != folded {
			t.Errorf("the certificate's person: %q, %v", c.PersonID, err)
		}
		if keys, err := s.EscrowKeys(ctx, folded); err != nil || len(keys) != 1 {
			t.Errorf("the key history of %q: %d keys, %v", folded, len(keys), err)
		}
		if sets, err := s.CredentialSetsOfPerson(ctx, folded); err != nil || len(sets) != 1 {
			t.Errorf("the sets of %q: %d, %v", folded, len(sets), err)
		}
		if dead, err := s.Terminated(ctx, nil, "", folded); err != nil || !dead {
			t.Errorf("%q terminated: %v, %v", folded, dead, err)
		}
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM terminations WHERE kind = 'person_id'`).Scan(&n); err != nil || n != 1 {
			t.Errorf("person terminations: %d (%v), want the two spellings as one", n, err)
		}
		// Keys and codes sealed before bind the card's spelling: it is
		// found from the sets and the audit log (a UPN of another person's
		// id is not one of its spellings).
		if got, err := s.PersonIDSpellings(ctx, folded); err != nil || len(got) != 1 || got[0] != mixed {
			t.Errorf("the spellings of %q: %q, %v; want %q", folded, got, err, mixed)
		}
		// A key opened under the card's spelling is sealed again, once.
		if ok, err := s.ResealEscrowKey(ctx, "k1", []byte{1}, []byte{2}); err != nil || !ok {
			t.Errorf("resealing k1: %v, %v", ok, err)
		}
		if ok, err := s.ResealEscrowKey(ctx, "k1", []byte{1}, []byte{3}); err != nil || ok {
			t.Errorf("resealing k1 from a blob it no longer holds: %v, %v", ok, err)
		}
		// The audit log is left as written (its chain is intact) and a
		// person's events are found by any case.
		if _, err := VerifyAudit(ctx, s); err != nil {
			t.Errorf("the audit chain after the migration: %v", err)
		}
		for _, who := range []string{folded, mixed, "ALICE.SMITH@AGENCY.GOV"} {
			evs, err := s.AuditEvents(ctx, 0, 10, who)
			if err != nil || len(evs) != 1 || evs[0].PersonID != mixed {
				t.Errorf("audit events of %q: %+v, %v", who, evs, err)
			}
		}
		// A replica of the older release, still serving while the upgrade
		// rolls (deploy.md), writes the card's spelling after the
		// migration: the new release finds those rows by the folded id.
		const late = "ALICE.smith@agency.gov"
		if err := s.PutEscrowKey(ctx, EscrowKey{ID: "k2", PersonID: late, KeyType: "rsa2048", SPKISHA256: "k2", KEKID: "kek", Sealed: []byte{1}, CreatedAt: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		cs2 := CredentialSet{ID: "set-2", PersonID: late, PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
			IdentityName: "n", CredentialType: "t", State: SetPending, CreatedAt: t0.Add(time.Minute)}
		if err := s.CreateEnrollment(ctx, cs2, Activation{ID: "a2", LookupHash: "lh-a2", Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 0); err != nil {
			t.Fatal(err)
		}
		if keys, err := s.EscrowKeys(ctx, folded); err != nil || len(keys) != 2 {
			t.Errorf("the key history of %q with a row in another spelling: %d keys, %v", folded, len(keys), err)
		}
		if k, err := s.EscrowKey(ctx, "k2", folded); err != nil || k.ID != "k2" {
			t.Errorf("escrowed key k2 of %q: %v", folded, err)
		}
		if sets, err := s.CredentialSetsOfPerson(ctx, folded); err != nil || len(sets) != 2 {
			t.Errorf("the sets of %q with one in another spelling: %d, %v", folded, len(sets), err)
		}
		if n, err := s.CountLiveSets(ctx, folded); err != nil || n != 2 {
			t.Errorf("live sets of %q: %d, %v", folded, n, err)
		}
		if sets, err := s.CredentialSetsOfIdentity(ctx, IdentitySelector{PersonID: folded}); err != nil || len(sets) != 2 {
			t.Errorf("the sets of the identity %q: %d, %v", folded, len(sets), err)
		}
		if err := s.Terminate(ctx, Termination{Selector: IdentitySelector{PersonID: "Bob@Agency.gov"}, TerminatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if dead, err := s.Terminated(ctx, nil, "", "bob@agency.gov"); err != nil || !dead {
			t.Errorf("a termination stored in another spelling: %v, %v", dead, err)
		}
		if s.dialect == "sqlite" {
			// The selection is the expression the index is on.
			var id, parent, unused int
			var plan string
			for q, index := range map[string]string{
				`SELECT seq FROM audit_events WHERE seq > 0 AND lower(person_id) = lower('X') ORDER BY seq`:                                "audit_events_person",
				`SELECT COUNT(*) FROM credential_sets WHERE lower(person_id) = lower('X') AND state IN ('pending', 'redeeming', 'active')`: "credential_sets_person",
				`SELECT id FROM escrow_keys WHERE lower(person_id) = lower('X') ORDER BY created_at DESC`:                                  "escrow_keys_person",
				`SELECT COUNT(*) FROM terminations WHERE kind = 'person_id' AND lower(value) = lower('X')`:                                 "terminations_folded",
			} {
				if err := s.r.QueryRowContext(ctx, `EXPLAIN QUERY PLAN `+q).Scan(&id, &parent, &unused, &plan); err != nil || !strings.Contains(plan, index) {
					t.Errorf("%s: not read by %s: %q, %v", q, index, plan, err)
				}
			}
		}
	})
}
