package lifecycle_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// hookedStore wraps the activation service's store: onRevokeSet runs when a
// set is revoked (the sweep's deadline passing meanwhile, say).
type hookedStore struct {
	store.Store
	onRevokeSet func()
	finishErr   *error // FinishTermination fails with it when set
}

func (s hookedStore) FinishTermination(ctx context.Context, sel store.IdentitySelector, at time.Time) error {
	if s.finishErr != nil && *s.finishErr != nil {
		return *s.finishErr
	}
	return s.Store.FinishTermination(ctx, sel, at)
}

func (s hookedStore) RevokeCredentialSet(ctx context.Context, id string, now time.Time) ([]string, error) {
	if s.onRevokeSet != nil {
		s.onRevokeSet()
	}
	return s.Store.RevokeCredentialSet(ctx, id, now)
}

type clockFixture struct {
	*fixture
	offset    *atomic.Int64
	hook      *func()
	finishErr *error
}

// newClockFixture is buildFixture with a settable clock, a linkage
// configuration, a notification webhook, and hooks in the activation
// service's store.
func newClockFixture(t *testing.T, lk lifecycle.Linkage) *clockFixture {
	t.Helper()
	return newClockFixtureWith(t, lk, fixtureOptions{})
}

// newClockFixtureWith is newClockFixture with o's verifier and overdue.
func newClockFixtureWith(t *testing.T, lk lifecycle.Linkage, o fixtureOptions) *clockFixture {
	t.Helper()
	offset := new(atomic.Int64)
	secret := filepath.Join(t.TempDir(), "webhook.key")
	if err := os.WriteFile(secret, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	hook, finishErr := new(func()), new(error)
	o.notify = notify.Config{Webhook: notify.WebhookConfig{URL: "http://127.0.0.1:9/hook", SecretFile: secret}}
	o.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	o.linkage = lk
	o.activationStore = func(st *store.SQLite) store.Store {
		return hookedStore{Store: st, finishErr: finishErr, onRevokeSet: func() {
			if *hook != nil {
				(*hook)()
			}
		}}
	}
	f := buildFixture(t, o)
	return &clockFixture{fixture: f, offset: offset, hook: hook, finishErr: finishErr}
}

func (f *clockFixture) at(d time.Duration) { f.offset.Store(int64(d)) }

// enrollCard stores a pending set of person made with a given card.
func (f *fixture) enrollCard(t *testing.T, id, person, card, certSHA string, fascn []byte) {
	t.Helper()
	now := time.Now()
	cs := store.CredentialSet{ID: "set-" + id, PersonID: person, PIVCertSHA256: certSHA, CardUUID: card, FASCN: fascn, RawSubject: []byte{0x30, 0},
		Email: "p@example.com", IdentityName: "phone", CredentialType: "t", State: store.SetPending, CreatedAt: now}
	a := store.Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := f.st.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

// keepPIVCert stores a PIV Authentication certificate (any parseable one:
// this fixture's verifier trusts nothing, so it is "unverifiable").
func (f *fixture) keepPIVCert(t *testing.T, sha string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "card"}, NotBefore: n.Add(-time.Hour), NotAfter: n.Add(300 * 24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err := f.st.CreateChallenge(context.Background(), store.Challenge{SessionID: "s-" + sha, Challenge: []byte{1}, GatewayID: "g",
		CreatedAt: n, ExpiresAt: n.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreatePIVSession(context.Background(), store.PIVSession{TokenHash: "th-" + sha, SessionID: "s-" + sha, CertSHA256: sha,
		CreatedAt: n, ExpiresAt: n.Add(time.Minute)}, store.PIVCertificate{SHA256: sha, DER: der, NotAfter: n.Add(300 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// TestLinkageRevocationFailedPartWayIsRecorded: the linkage check
// revokes a card's sets; one set fails. The serials it did revoke were in
// no audit event, the holder was not told, and the retry it planned never
// came (every set was marked revoked, so the row was dropped). Now what
// was revoked is recorded (outcome error) and told.
func TestLinkageRevocationFailedPartWayIsRecorded(t *testing.T) {
	ctx := context.Background()
	f := newClockFixture(t, lifecycle.Linkage{FirstCheck: time.Minute, MaxUnknown: time.Hour, OnUnknown: "revoke"})
	f.keepPIVCert(t, "c-a")
	f.enroll(t, "a", "p1")
	// A second set of the same card.
	f.enrollCard(t, "b", "p1", "u-p1", "c-a", nil)
	f.record(t, "aa01", "test", "p1", "set-a")
	f.record(t, "bb02", "other-ca", "p1", "set-b") // cannot be revoked by this CA
	f.at(2 * time.Minute)
	if _, err := f.svc.Linkage(ctx); err != nil {
		t.Fatal(err)
	}
	f.at(3 * time.Hour)
	res, err := f.svc.Linkage(ctx)
	t.Logf("linkage: %+v, err = %v", res, err)
	if rec, _ := f.st.Certificate(ctx, "aa01"); !rec.Revoked() {
		t.Fatal("premise: aa01 is not revoked")
	}
	f.at(5 * time.Hour)
	res, err = f.svc.Linkage(ctx) // the retry an hour later
	t.Logf("retry: %+v, err = %v", res, err)
	recorded := false
	for _, a := range []string{"linkage-revoke", "revoke", "revoke-identity"} {
		for _, e := range f.events(t, a) {
			for _, s := range e.Serials {
				recorded = recorded || s == "aa01"
			}
		}
	}
	if !recorded {
		t.Error("aa01 was revoked by the linkage check, and no audit event names it")
	}
	if n, err := f.st.OutboxBacklog(ctx); err != nil || n == 0 {
		t.Errorf("notifications queued: %d (%v); the holder is not told of the revocation", n, err)
	}
}

// TestLinkageRevocationAtTheSweepDeadlineIsTold: Sweep gives all its
// work one minute. A linkage revocation that ended after that minute
// (RevokeIdentity runs on a context of its own) revoked, but the holder's
// notice was read under the expired context and dropped; the row was then
// deleted (no live sets), so nothing told them later.
func TestLinkageRevocationAtTheSweepDeadlineIsTold(t *testing.T) {
	f := newClockFixture(t, lifecycle.Linkage{FirstCheck: time.Minute, MaxUnknown: time.Hour, OnUnknown: "revoke"})
	f.keepPIVCert(t, "c-a")
	f.enroll(t, "a", "p1")
	f.record(t, "aa01", "test", "p1", "set-a")
	f.at(2 * time.Minute)
	if _, err := f.svc.Linkage(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.at(3 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	*f.hook = cancel // the sweep's minute runs out while the set is revoked
	res, err := f.svc.Linkage(ctx)
	t.Logf("linkage: %+v, err = %v", res, err)
	*f.hook = nil
	if rec, _ := f.st.Certificate(context.Background(), "aa01"); !rec.Revoked() {
		t.Fatal("premise: aa01 is not revoked")
	}
	f.at(6 * time.Hour)
	res, err = f.svc.Linkage(context.Background())
	t.Logf("next run: %+v, err = %v", res, err)
	if n, err := f.st.OutboxBacklog(context.Background()); err != nil || n == 0 {
		t.Errorf("notifications queued: %d (%v); the holder was never told of the linkage revocation", n, err)
	}
	t.Logf("linkage-revoke events: %d", len(f.events(t, "linkage-revoke")))
}

// TestTerminationNoticeSaysWhatEnded: a termination by card (card_uuid,
// fascn) ends that card's derived credentials; the person's others, made
// with other cards, stay (a replacement card keeps the person's history).
// Its notice said "Your PIV account was terminated; every derived PIV
// credential of it was revoked", which was false. A person's termination
// (person_id) says so; a card's says it is the card's.
func TestTerminationNoticeSaysWhatEnded(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		sel  store.IdentitySelector
		want string
	}{
		{"card", store.IdentitySelector{CardUUID: "u-p1"}, "card was terminated"},
		{"person", store.IdentitySelector{PersonID: "p1"}, "PIV account was terminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newClockFixture(t, lifecycle.Linkage{})
			f.enroll(t, "a", "p1")
			f.record(t, "aa01", "test", "p1", "set-a")
			if _, err := f.svc.Terminate(ctx, "webhook", tc.sel, "HR", ""); err != nil {
				t.Fatal(err)
			}
			ns, err := f.st.Notifications(ctx)
			if err != nil || len(ns) == 0 {
				t.Fatalf("no notice: %v", err)
			}
			if body := ns[len(ns)-1].Body; !strings.Contains(body, tc.want) {
				t.Errorf("the notice of a termination by %s: %q, want it to say %q", tc.name, body, tc.want)
			}
		})
	}
}

// TestLinkageWithoutTheCardCertificate: a set whose card certificate is
// not in the store (a partial restore) or no longer parses was re-claimed
// every sweep with an error, never counted unknown (no alert) and never
// subject to linkage.on_unknown: its credentials lived on. It is now an
// unverifiable status like any other.
func TestLinkageWithoutTheCardCertificate(t *testing.T) {
	ctx := context.Background()
	unknown := 0
	f := newClockFixture(t, lifecycle.Linkage{FirstCheck: time.Minute, MaxUnknown: time.Hour, OnUnknown: "revoke"})
	f.enroll(t, "a", "p1") // its card certificate c-a was never kept
	f.record(t, "aa01", "test", "p1", "set-a")
	for d := 2 * time.Minute; d < 30*24*time.Hour; d += 6 * time.Hour {
		f.at(d)
		res, err := f.svc.Linkage(ctx)
		if err != nil && d == 2*time.Minute {
			t.Logf("linkage at +%s: %+v err=%v", d, res, err)
		}
		unknown += res.Unknown
	}
	rec, _ := f.st.Certificate(ctx, "aa01")
	if !rec.Revoked() {
		t.Errorf("after 30 days with on_unknown: revoke and max_unknown 1h the derived certificate is still valid; unknown counted %d times (no alert fires)", unknown)
	}
}

// TestTerminationToldWhenItsEndIsNotRecorded: a termination that revoked
// every credential but could not record itself finished returned an error
// without telling the person; the sweep then carries it out again, finds
// nothing left to revoke, and tells no one either. What a termination
// revoked is told, finished or not.
func TestTerminationToldWhenItsEndIsNotRecorded(t *testing.T) {
	ctx := context.Background()
	f := newClockFixture(t, lifecycle.Linkage{})
	f.enroll(t, "a", "p1")
	f.record(t, "aa01", "test", "p1", "set-a")
	*f.finishErr = store.ErrBusy
	if _, err := f.svc.Terminate(ctx, "webhook", store.IdentitySelector{PersonID: "p1"}, "HR", ""); err == nil {
		t.Fatal("premise: the termination could not be recorded finished, and says so")
	}
	if rec, _ := f.st.Certificate(ctx, "aa01"); !rec.Revoked() {
		t.Fatal("premise: aa01 is not revoked")
	}
	ns, err := f.st.Notifications(ctx)
	if err != nil || len(ns) == 0 {
		t.Fatalf("the person was not told of the termination that revoked aa01 (%v)", err)
	}
}
