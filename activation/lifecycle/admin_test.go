package lifecycle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// record stores a recorded certificate of person in set under issuer.
func (f *fixture) record(t *testing.T, serial, issuer, person, set string) {
	t.Helper()
	ctx, now := context.Background(), time.Now()
	if err := f.st.CreateIssuanceIntent(ctx, store.CertificateRecord{Serial: serial, Issuer: issuer, Profile: "p", SPKISHA256: serial,
		PersonID: person, CardUUID: "u-" + person, CredentialSetID: set, NotBefore: now, NotAfter: now.Add(time.Hour), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.RecordIssued(ctx, serial, []byte(serial), serial, "", now); err != nil {
		t.Fatal(err)
	}
}

// events are the audit events of action.
func (f *fixture) events(t *testing.T, action string) []store.AuditEvent {
	t.Helper()
	evs, err := f.st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, e := range evs {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// TestAdminRevocationTellsTheHolder: an administrator's revocation by
// serial queued no notice, though every other revocation does and
// docs/config.md promises one (FIPS 201-3 §2.10.2): an administrator could
// revoke a person's derived PIV Authentication certificate unseen.
func TestAdminRevocationTellsTheHolder(t *testing.T) {
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "webhook.key")
	if err := os.WriteFile(secret, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixtureNotifying(t, notify.Config{Webhook: notify.WebhookConfig{URL: "http://127.0.0.1:9/hook", SecretFile: secret}})
	f.enroll(t, "a", "p1")
	f.record(t, "abc123", "test", "p1", "set-a")
	if _, err := f.svc.RevokeCertificate(ctx, "abc123", issuance.ReasonKeyCompromise, "lost"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.st.OutboxBacklog(ctx); err != nil || n != 1 {
		t.Fatalf("notifications queued for an administrator's revocation: %d (%v), want 1", n, err)
	}
}

// TestAdminRevokeIdentityPartlyFailedIsRecorded: a revocation of a
// person's sets that failed part way returned the error and dropped the
// serials it had revoked: no audit event said they were revoked, and a
// repeat could not say it either (they are no longer live).
func TestAdminRevokeIdentityPartlyFailedIsRecorded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	f.enroll(t, "b", "p1")
	f.record(t, "aa01", "test", "p1", "set-a")
	f.record(t, "bb02", "other-ca", "p1", "set-b") // this CA cannot revoke it: the second set fails
	if _, err := f.svc.RevokeIdentity(ctx, store.IdentitySelector{PersonID: "p1"}, issuance.ReasonKeyCompromise); err == nil {
		t.Fatal("RevokeIdentity succeeded with a set it cannot revoke")
	}
	if rec, err := f.st.Certificate(ctx, "aa01"); err != nil || !rec.Revoked() {
		t.Fatalf("aa01: %v %v, want revoked (the premise)", rec, err)
	}
	evs := f.events(t, "revoke-identity")
	if len(evs) != 1 || evs[0].Outcome != "error" || !slices.Contains(evs[0].Serials, "aa01") {
		t.Fatalf("revoke-identity events %+v, want one error event naming aa01", evs)
	}
}

// TestForceCRLIsAudited: ForceCRL makes the CA key sign a CRL on an
// administrator's word; it is an event like any other use of the key by
// an administrator.
func TestForceCRLIsAudited(t *testing.T) {
	f := newFixture(t)
	if _, _, _, err := f.svc.ForceCRL(context.Background()); err != nil {
		t.Fatal(err)
	}
	if evs := f.events(t, "force-crl"); len(evs) != 1 || evs[0].Actor != "admin" {
		t.Fatalf("force-crl events %+v, want one by admin", evs)
	}
}

// waitingPackage enrolls set-a (activation a) of p1 with certificates
// aa01 and aa02, and stores its package for a device's confirmation.
func (f *fixture) waitingPackage(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	f.enroll(t, "a", "p1")
	f.record(t, "aa01", "test", "p1", "set-a")
	f.record(t, "aa02", "test", "p1", "set-a")
	now := time.Now()
	if err := f.st.BeginRedemption(ctx, "a", "r-a", now, store.Lease{Holder: "h", Until: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.StorePackage(ctx, "a", "r-a", []byte("sealed"), "sum", 6, []byte{}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// TestAdminRevocationEndsAWaitingPackage: an administrator revoked each
// certificate of a set whose package waited for its confirmation (the
// person reported the download was not theirs). The package, escrowed keys
// and all, could still be resumed and confirmed: the set became active
// with every certificate revoked, and its compromised key joined every
// later key history as delivered. A certificate of a set not confirmed
// yet is now revoked with its whole set: the activation ends, the package
// with it, and the person is told it may have been downloaded.
func TestAdminRevocationEndsAWaitingPackage(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.waitingPackage(t)
	if _, err := f.svc.RevokeCertificate(ctx, "aa01", issuance.ReasonKeyCompromise, "not their download"); err != nil {
		t.Fatal(err)
	}
	a, err := f.st.ActivationByID(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.State == store.ActRedeeming || a.Package != nil {
		t.Errorf("the activation is %s with a package: a device may still resume and confirm it", a.State)
	}
	if cs, err := f.st.CredentialSet(ctx, "set-a"); err != nil || cs.State != store.SetRevoked {
		t.Errorf("the set is %q (%v), want revoked", cs.State, err)
	}
	if rec, err := f.st.Certificate(ctx, "aa02"); err != nil || !rec.Revoked() {
		t.Errorf("the package's other certificate: revoked %v (%v)", rec.Revoked(), err)
	}
	if len(f.events(t, "undelivered")) != 1 {
		t.Error("no undelivered event: the person is not told the package may have been downloaded")
	}
}

// revokeWatcher is the CA's store, calling before on each certificate
// revocation.
type revokeWatcher struct {
	store.IssuanceStore
	before func(serial string) error
}

func (w revokeWatcher) RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time) (store.CertificateRecord, error) {
	if err := w.before(serial); err != nil {
		return store.CertificateRecord{}, err
	}
	return w.IssuanceStore.RevokeCertificate(ctx, serial, reason, at)
}

// TestAdminRevocationEndsTheSetFirst: the administrator's revocation of a
// certificate of an unconfirmed set revoked the certificate and then read
// the set to end it: a device confirming in between made the set active
// with a revoked certificate. The set's activation is now ended before any
// certificate of it is revoked, so no confirmation can follow.
func TestAdminRevocationEndsTheSetFirst(t *testing.T) {
	ctx := context.Background()
	var f *fixture
	var seen []string
	wrapCAStore = func(s store.IssuanceStore) store.IssuanceStore {
		return revokeWatcher{s, func(serial string) error {
			a, err := f.st.ActivationByID(ctx, "a")
			if err != nil {
				t.Error(err)
				return nil
			}
			seen = append(seen, serial+":"+a.State)
			return nil
		}}
	}
	t.Cleanup(func() { wrapCAStore = nil })
	f = newFixture(t)
	f.waitingPackage(t)
	if _, err := f.svc.RevokeCertificate(ctx, "aa01", issuance.ReasonKeyCompromise, "not their download"); err != nil {
		t.Fatal(err)
	}
	if len(seen) == 0 {
		t.Fatal("no certificate revoked")
	}
	for _, s := range seen {
		if strings.HasSuffix(s, ":"+store.ActRedeeming) {
			t.Errorf("revoked %s while the package could still be confirmed", s)
		}
	}
}

// TestAdminRevocationOfAPartlyEndedSet: ending the unconfirmed set failed
// part way (another of its certificates could not be revoked) after the
// administrator's certificate was revoked with it: the call said "try
// again" and recorded only an error, and the retry was refused as revoked
// already, so no revoke event and no notice to the holder were ever
// written (FIPS 201-3 §2.10.2). The certificate's revocation is now
// recorded and told, and the error says what else failed.
func TestAdminRevocationOfAPartlyEndedSet(t *testing.T) {
	ctx := context.Background()
	wrapCAStore = func(s store.IssuanceStore) store.IssuanceStore {
		return revokeWatcher{s, func(serial string) error {
			if serial == "aa02" {
				return errors.New("the database went away")
			}
			return nil
		}}
	}
	t.Cleanup(func() { wrapCAStore = nil })
	f := newFixture(t)
	f.enroll(t, "a", "p1")
	f.record(t, "aa01", "test", "p1", "set-a")
	f.record(t, "aa02", "test", "p1", "set-a")
	_, err := f.svc.RevokeCertificate(ctx, "aa01", issuance.ReasonKeyCompromise, "lost")
	if err == nil {
		t.Fatal("no error though aa02 could not be revoked")
	}
	if rec, err := f.st.Certificate(ctx, "aa01"); err != nil || !rec.Revoked() {
		t.Fatalf("aa01 revoked %v (%v)", rec.Revoked(), err)
	}
	ok := 0
	for _, e := range f.events(t, "revoke") {
		if e.Outcome == "ok" && len(e.Serials) == 1 && e.Serials[0] == "aa01" {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d successful revoke events for aa01, want 1", ok)
	}
}
