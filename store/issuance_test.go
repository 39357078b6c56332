package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestIssuanceRecords(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		rec := CertificateRecord{Serial: "0a", Issuer: "ca", Profile: "derived-piv-auth", SPKISHA256: "k1", PersonID: "p",
			NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0}
		if err := s.CreateIssuanceIntent(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.KeyCertified(ctx, "k1"); err != nil || !ok {
			t.Fatalf("KeyCertified = %v, %v", ok, err)
		}
		again := rec
		again.Serial = "0b"
		if err := s.CreateIssuanceIntent(ctx, again); !errors.Is(err, ErrConflict) {
			t.Fatalf("same key twice: %v", err)
		}
		// A lint failure frees the key.
		lf := CertificateRecord{Serial: "0c", Issuer: "ca", Profile: "x", SPKISHA256: "k2", NotBefore: t0, NotAfter: t0, CreatedAt: t0}
		if err := s.CreateIssuanceIntent(ctx, lf); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkLintFailed(ctx, "0c", "e_bad"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.KeyCertified(ctx, "k2"); ok {
			t.Fatal("a lint failure counts as certified")
		}
		if _, err := s.RevokeCertificate(ctx, "0c", 1, t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoking a never-signed certificate: %v", err)
		}
		if err := s.RecordIssued(ctx, "0a", []byte{0x30}, "h", "w_x", t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordIssued(ctx, "0a", []byte{0x30}, "h", "", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("recorded twice: %v", err)
		}
		got, err := s.Certificate(ctx, "0a")
		if err != nil || got.Status != CertIssued || got.LintWarnings != "w_x" || got.Revoked() {
			t.Fatalf("%+v %v", got, err)
		}
		generation := func() int64 {
			t.Helper()
			if err := s.ReleaseCRL(ctx, "ca", t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			ok, g, err := s.ClaimCRL(ctx, "ca", t0, time.Minute)
			if err != nil || !ok {
				t.Fatalf("claim the CRL: %v %v", ok, err)
			}
			return g
		}
		before := generation()
		r, err := s.RevokeCertificate(ctx, "0a", 4, t0.Add(time.Hour))
		if err != nil || !r.Revoked() || r.RevocationReason != 4 {
			t.Fatalf("revoke: %+v %v", r, err)
		}
		// The revocation itself makes the CRL stale, in its transaction.
		if after := generation(); after <= before {
			t.Fatalf("CRL generation %d after a revocation, %d before", after, before)
		}
		if _, err := s.RevokeCertificate(ctx, "0a", 1, t0.Add(2*time.Hour)); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("revoked twice: %v", err)
		}
		if live, err := s.LiveIssuers(ctx, t0); err != nil || len(live) != 1 || live[0].Name != "ca" || live[0].Count != 1 || len(live[0].Oldest) == 0 || len(live[0].Newest) == 0 {
			t.Fatalf("LiveIssuers: %+v %v", live, err)
		}
		if live, err := s.LiveIssuers(ctx, rec.NotAfter); err != nil || len(live) != 0 {
			t.Fatalf("LiveIssuers once expired: %+v %v", live, err)
		}
		list, err := s.RevokedCertificates(ctx, "ca", t0)
		if err != nil || len(list) != 1 || list[0].Serial != "0a" || list[0].Reason != 4 {
			t.Fatalf("CRL entries %+v %v", list, err)
		}
		// Once expired before the cut-off, an entry leaves the CRL (RFC
		// 5280 §5: after a CRL issued past its expiry listed it).
		if list, err := s.RevokedCertificates(ctx, "ca", rec.NotAfter.Add(time.Second)); err != nil || len(list) != 0 {
			t.Fatalf("CRL entries of certificates expired before the cut-off: %+v %v", list, err)
		}
		if list, err := s.RevokedCertificates(ctx, "ca", rec.NotAfter); err != nil || len(list) != 1 {
			t.Fatalf("a certificate expiring at the cut-off: %+v %v", list, err)
		}
		for want := int64(1); want <= 3; want++ {
			if n, err := s.NextCRLNumber(ctx, "ca", 0); err != nil || n != want {
				t.Fatalf("CRL number %d, %v; want %d", n, err, want)
			}
		}
		// At least the floor given (the time, in milliseconds: more than
		// 32 bits), and one more than the last above it.
		const ms = int64(1_800_000_000_000)
		for _, want := range []int64{ms, ms + 1} {
			if n, err := s.NextCRLNumber(ctx, "ca", ms); err != nil || n != want {
				t.Fatalf("CRL number %d, %v; want %d", n, err, want)
			}
		}
		if n, err := s.NextCRLNumber(ctx, "new-ca", ms); err != nil || n != ms {
			t.Fatalf("first CRL number of an issuer %d, %v; want %d", n, err, ms)
		}
	})
}

func TestEscrowKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for i, id := range []string{"old", "new"} {
			if err := s.PutEscrowKey(ctx, EscrowKey{ID: id, PersonID: "p", KeyType: "rsa2048", SPKISHA256: id, KEKID: "kek", Sealed: []byte{1}, CreatedAt: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.LinkEscrowKey(ctx, "old", "0a", t0.AddDate(2, 0, 0)); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkEscrowKey(ctx, "missing", "0a", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("link missing: %v", err)
		}
		keys, err := s.EscrowKeys(ctx, "p")
		if err != nil || len(keys) != 2 || keys[0].ID != "new" || keys[1].CertSerial != "0a" || keys[1].RetainUntil.IsZero() {
			t.Fatalf("%+v %v", keys, err)
		}
		// One key by id: only the person's own.
		k, err := s.EscrowKey(ctx, "old", "p")
		if err != nil || k.ID != "old" || k.PersonID != "p" || k.KeyType != "rsa2048" || k.KEKID != "kek" || !bytes.Equal(k.Sealed, []byte{1}) ||
			k.CertSerial != "0a" || !k.CreatedAt.Equal(t0) || k.RetainUntil.IsZero() {
			t.Fatalf("EscrowKey(old, p) = %+v, %v", k, err)
		}
		if _, err := s.EscrowKey(ctx, "old", "someone else"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another person's key: %v", err)
		}
		if _, err := s.EscrowKey(ctx, "missing", "p"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a missing key: %v", err)
		}
		// Each key comes with its certificate once it is recorded as
		// issued, and without while only its intent exists.
		if keys[1].CertDER != nil {
			t.Fatalf("a certificate for a serial never recorded: %x", keys[1].CertDER)
		}
		for _, serial := range []string{"0a", "0b"} {
			if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: serial, Issuer: "ca", Profile: "key-management", SPKISHA256: "spki-" + serial,
				PersonID: "p", NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.LinkEscrowKey(ctx, "new", "0b", t0.AddDate(2, 0, 0)); err != nil {
			t.Fatal(err)
		}
		keys, _ = s.EscrowKeys(ctx, "p")
		if keys[0].CertDER != nil || keys[1].CertDER != nil {
			t.Fatal("a certificate for an intent")
		}
		if err := s.RecordIssued(ctx, "0a", []byte{0x30, 0x0a}, "sum", "", t0); err != nil {
			t.Fatal(err)
		}
		keys, _ = s.EscrowKeys(ctx, "p")
		if !bytes.Equal(keys[1].CertDER, []byte{0x30, 0x0a}) || keys[0].CertDER != nil || len(keys) != 2 {
			t.Fatalf("after recording 0a: %+v", keys)
		}
	})
}

func TestCRLLease(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if _, err := s.CRL(ctx, "ca"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("CRL before the first: %v", err)
		}
		ok, gen, err := s.ClaimCRL(ctx, "ca", t0, 30*time.Second)
		if err != nil || !ok {
			t.Fatalf("first claim: %v %v", ok, err)
		}
		if ok, _, _ := s.ClaimCRL(ctx, "ca", t0.Add(time.Second), 30*time.Second); ok {
			t.Fatal("a second replica claimed a held lease")
		}
		// A revocation while the CRL is being built keeps it stale.
		if err := s.MarkCRLStale(ctx, "ca"); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveCRL(ctx, "ca", StoredCRL{Number: 7, DER: []byte{0x30}, ThisUpdate: t0, NextUpdate: t0.Add(24 * time.Hour)}, gen); err != nil {
			t.Fatal(err)
		}
		c, err := s.CRL(ctx, "ca")
		if err != nil || c.Number != 7 || !c.Stale {
			t.Fatalf("a revocation during the build was lost: %+v %v", c, err)
		}
		ok, gen, _ = s.ClaimCRL(ctx, "ca", t0.Add(2*time.Second), 30*time.Second)
		if !ok {
			t.Fatal("saving did not release the lease")
		}
		if err := s.SaveCRL(ctx, "ca", StoredCRL{Number: 8, DER: []byte{0x30}, ThisUpdate: t0, NextUpdate: t0.Add(24 * time.Hour)}, gen); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.CRL(ctx, "ca"); c.Stale || c.Number != 8 {
			t.Fatalf("%+v", c)
		}
		if ok, _, _ := s.ClaimCRL(ctx, "ca", t0.Add(3*time.Second), 30*time.Second); !ok {
			t.Fatal("lease not free")
		}
		if ok, _, _ := s.ClaimCRL(ctx, "ca", t0.Add(40*time.Second), 30*time.Second); !ok {
			t.Fatal("an expired lease was not claimable")
		}
		// The replica whose lease ran out gives back only its own: the
		// one claimed since stays.
		if err := s.ReleaseCRL(ctx, "ca", t0.Add(33*time.Second)); err != nil {
			t.Fatal(err)
		}
		if ok, _, _ := s.ClaimCRL(ctx, "ca", t0.Add(41*time.Second), 30*time.Second); ok {
			t.Fatal("a lapsed lease's release freed the lease claimed since")
		}
		if err := s.ReleaseCRL(ctx, "ca", t0.Add(70*time.Second)); err != nil {
			t.Fatal(err)
		}
		if ok, _, _ := s.ClaimCRL(ctx, "ca", t0.Add(42*time.Second), 30*time.Second); !ok {
			t.Fatal("a released lease was not claimable")
		}
	})
}

// putKey stores an escrowed key of person p made at created.
func putKey(t *testing.T, s Store, id string, created time.Time) {
	t.Helper()
	if err := s.PutEscrowKey(context.Background(), EscrowKey{ID: id, PersonID: "p", KeyType: "p256", SPKISHA256: "spki-" + id, KEKID: "kek",
		Sealed: []byte{1}, CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
}

// enrollKey enrolls (activation id) with the escrowed key keyID.
func enrollKey(t *testing.T, s Store, id, keyID string, expires time.Time) {
	t.Helper()
	cs := CredentialSet{ID: "set-" + id, PersonID: "p", PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
		IdentityName: "n", CredentialType: "t", EscrowKeyID: keyID, State: SetPending, CreatedAt: t0}
	a := Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: t0, ExpiresAt: expires}
	if err := s.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

// certifyKey redeems activation id and certifies its key: the package
// waits for its confirmation until t0+1h.
func certifyKey(t *testing.T, s Store, id, keyID string) {
	t.Helper()
	ctx := context.Background()
	serial := "serial-" + id
	if err := s.BeginRedemption(ctx, id, "r-"+id, t0, Lease{}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: serial, Issuer: "ca", Profile: "key-management", SPKISHA256: "spki-" + keyID,
		PersonID: "p", CredentialSetID: "set-" + id, NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIssued(ctx, serial, []byte{0x30, 1}, "sum-"+id, "", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkEscrowKey(ctx, keyID, serial, t0.AddDate(2, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.StorePackage(ctx, id, "r-"+id, []byte{9}, "h", 1, nil, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// TestEscrowKeyDelivered: a key is delivered once the package that carried
// it is confirmed, and stays so when its set is revoked later; a key
// whose package was never confirmed is not.
func TestEscrowKeyDelivered(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for i, id := range []string{"confirmed", "unconfirmed", "revoked-later", "pending"} {
			putKey(t, s, "k-"+id, t0.Add(time.Duration(i)*time.Minute))
			enrollKey(t, s, id, "k-"+id, t0.Add(10*time.Minute))
			if id != "pending" {
				certifyKey(t, s, id, "k-"+id)
			}
		}
		for _, id := range []string{"confirmed", "revoked-later"} {
			if err := s.Confirm(ctx, "r-"+id, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		if ids, err := s.ClaimUnconfirmed(ctx, t0.Add(2*time.Hour)); err != nil || len(ids) != 1 || ids[0] != "set-unconfirmed" {
			t.Fatalf("ClaimUnconfirmed = %v, %v", ids, err)
		}
		if _, err := s.RevokeCredentialSet(ctx, "set-revoked-later", t0.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		keys, err := s.EscrowKeys(ctx, "p")
		if err != nil || len(keys) != 4 {
			t.Fatalf("%d keys, %v", len(keys), err)
		}
		want := map[string]bool{"k-confirmed": true, "k-unconfirmed": false, "k-revoked-later": true, "k-pending": false}
		for _, k := range keys {
			if k.Delivered != want[k.ID] {
				t.Errorf("%s: delivered %v, want %v", k.ID, k.Delivered, want[k.ID])
			}
		}
	})
}

// TestDeleteUncertifiedEscrowKeys: keys never certified go once no
// pending or redeeming set holds them (expired, cancelled or revoked
// enrollments, keys replaced or never attached); certified keys and
// keys too new to have their set yet stay.
func TestDeleteUncertifiedEscrowKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"pending", "redeeming", "expired", "revoked", "certified"} {
			putKey(t, s, "k-"+id, t0)
			expires := t0.Add(10 * time.Minute)
			if id == "pending" {
				expires = t0.Add(time.Hour)
			}
			enrollKey(t, s, id, "k-"+id, expires)
		}
		putKey(t, s, "k-orphan", t0)             // replaced, or its enrollment failed
		putKey(t, s, "k-new", t0.Add(time.Hour)) // its set is being written
		// Certified, but the link was never recorded: kept.
		putKey(t, s, "k-unlinked", t0)
		if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: "0u", Issuer: "ca", Profile: "key-management", SPKISHA256: "spki-k-unlinked",
			PersonID: "p", NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.BeginRedemption(ctx, "redeeming", "r-redeeming", t0, Lease{}); err != nil {
			t.Fatal(err)
		}
		certifyKey(t, s, "certified", "k-certified")
		for _, id := range []string{"set-revoked", "set-certified"} {
			if _, err := s.RevokeCredentialSet(ctx, id, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.ExpirePending(ctx, t0.Add(10*time.Minute)); err != nil || n != 1 {
			t.Fatalf("ExpirePending = %d, %v", n, err)
		}
		n, err := s.DeleteUncertifiedEscrowKeys(ctx, t0.Add(30*time.Minute))
		if err != nil || n != 3 {
			t.Fatalf("deleted %d, %v; want 3", n, err)
		}
		keys, _ := s.EscrowKeys(ctx, "p")
		left := map[string]bool{}
		for _, k := range keys {
			left[k.ID] = true
		}
		for _, id := range []string{"k-pending", "k-redeeming", "k-certified", "k-new", "k-unlinked"} {
			if !left[id] {
				t.Errorf("%s was deleted", id)
			}
		}
		for _, id := range []string{"k-expired", "k-revoked", "k-orphan"} {
			if left[id] {
				t.Errorf("%s was kept", id)
			}
		}
		if n, _ := s.DeleteUncertifiedEscrowKeys(ctx, t0.Add(30*time.Minute)); n != 0 {
			t.Errorf("deleted %d more", n)
		}
	})
}

// TestPurgeEscrowKeys: certified keys go once retain_until is reached;
// keys never certified have none and stay.
func TestPurgeEscrowKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"a", "b", "uncertified"} {
			putKey(t, s, id, t0)
		}
		if err := s.LinkEscrowKey(ctx, "a", "0a", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkEscrowKey(ctx, "b", "0b", t0.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PurgeEscrowKeys(ctx, t0.Add(time.Hour-time.Second)); err != nil || n != 0 {
			t.Fatalf("purged %d before retain_until, %v", n, err)
		}
		if n, err := s.PurgeEscrowKeys(ctx, t0.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("purged %d at retain_until, %v", n, err)
		}
		keys, _ := s.EscrowKeys(ctx, "p")
		if len(keys) != 2 || keys[0].ID == "a" || keys[1].ID == "a" {
			t.Fatalf("left %+v", keys)
		}
	})
}

// TestRetireEscrowKeys: a termination retires a person's keys made up to
// its time, in any spelling of the person id, once; later keys and other
// people's are not retired, and retired keys stay in escrow.
func TestRetireEscrowKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		put := func(id, person string, at time.Time) {
			t.Helper()
			if err := s.PutEscrowKey(ctx, EscrowKey{ID: id, PersonID: person, KeyType: "p256", SPKISHA256: id, KEKID: "kek", Sealed: []byte{1}, CreatedAt: at}); err != nil {
				t.Fatal(err)
			}
		}
		put("old", "ann@example.gov", t0)
		put("other", "bob@example.gov", t0)
		put("later", "ann@example.gov", t0.Add(2*time.Hour))
		if n, err := s.RetireEscrowKeys(ctx, "Ann@Example.gov", t0.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("retired %d, %v; want 1", n, err)
		}
		if n, err := s.RetireEscrowKeys(ctx, "ann@example.gov", t0.Add(time.Hour)); err != nil || n != 0 {
			t.Fatalf("retired %d again, %v", n, err)
		}
		keys, err := s.EscrowKeys(ctx, "ann@example.gov")
		if err != nil || len(keys) != 2 {
			t.Fatalf("%d keys, %v", len(keys), err)
		}
		for _, k := range keys {
			if retired := !k.RetiredAt.IsZero(); retired != (k.ID == "old") {
				t.Errorf("key %s retired at %v", k.ID, k.RetiredAt)
			}
		}
		if keys, _ := s.EscrowKeys(ctx, "bob@example.gov"); len(keys) != 1 || !keys[0].RetiredAt.IsZero() {
			t.Errorf("another person's key: %+v", keys)
		}
	})
}

// TestRecordAfterStaleRevocation: a signing so slow that the sweep took
// its intent for a crash and revoked it is recorded (the certificate is
// kept with its intent, revoked) but the record says so: the certificate
// must not be delivered. Before, RecordIssued succeeded and the device got
// a certificate already on the CRL.
func TestRecordAfterStaleRevocation(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		rec := CertificateRecord{Serial: "5a", Issuer: "ca", Profile: "derived-piv-auth", SPKISHA256: "k-slow", PersonID: "p",
			NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0}
		if err := s.CreateIssuanceIntent(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if n, err := s.RevokeStaleIntents(ctx, "ca", t0.Add(time.Hour), t0.Add(2*time.Hour)); err != nil || n != 1 {
			t.Fatalf("the sweep: %d, %v", n, err)
		}
		err := s.RecordIssued(ctx, "5a", []byte{0x30, 0x00}, "sum", "", t0.Add(3*time.Hour))
		if !errors.Is(err, ErrRevokedMeanwhile) {
			t.Fatalf("recording a certificate whose intent was revoked: %v, want ErrRevokedMeanwhile", err)
		}
		got, err := s.Certificate(ctx, "5a")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != "issued" || got.RevokedAt.IsZero() || !bytes.Equal(got.DER, []byte{0x30, 0x00}) {
			t.Fatalf("the record: status %q, revoked at %v, DER %x; want issued, revoked, kept", got.Status, got.RevokedAt, got.DER)
		}
	})
}
