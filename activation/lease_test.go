package activation

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// dyingIssuer certifies the escrowed key, then hangs as a process killed
// mid-issuance would: nothing after the certificate happens.
type dyingIssuer struct {
	issuance.Issuer
	certified chan struct{}
	never     chan struct{}
}

func (d *dyingIssuer) Issue(ctx context.Context, req issuance.Request) (*issuance.Issued, error) {
	got, err := d.Issuer.Issue(ctx, req)
	if err != nil || req.Profile != issuance.KeyManagement {
		return got, err
	}
	close(d.certified)
	<-d.never
	return nil, errors.New("the process died")
}

// dyingHarness is a harness whose service issues through a dyingIssuer,
// and a second service on the same store and CA (another process) that
// survives it.
func dyingHarness(t *testing.T) (*harness, *Service, *dyingIssuer) {
	t.Helper()
	var other Config
	dying := &dyingIssuer{certified: make(chan struct{}), never: make(chan struct{})}
	h := newHarness(t, func(c *Config) {
		other = *c
		dying.Issuer = c.Issuer
		c.Issuer = dying
	})
	survivor, err := New(other)
	if err != nil {
		t.Fatal(err)
	}
	return h, survivor, dying
}

// TestDeadProcessClaimReleased: a redemption whose process died after the
// escrowed key was certified is released by another process once its
// lease runs out — not before, and not while its process renews it — with
// a new escrowed key, so that the device's retry redeems the code; what
// the dead issuance made is revoked.
func TestDeadProcessClaimReleased(t *testing.T) {
	ctx := context.Background()
	h, survivor, dying := dyingHarness(t)
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		h.svc.Redeem(context.Background(), e.request(t), nil)
	}()
	<-dying.certified
	before, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	redeem := func() error {
		_, err := survivor.Redeem(ctx, e.request(t), nil)
		return err
	}
	if err := redeem(); !errors.Is(err, ErrInProgress) {
		t.Fatalf("while the claim holds: %v, want ErrInProgress", err)
	}
	// The dying process still renews: its claim is not released.
	h.advance(RedemptionLease - time.Second)
	if err := h.svc.KeepLeases(ctx); err != nil {
		t.Fatal(err)
	}
	h.advance(2 * time.Second)
	if err := survivor.KeepLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if err := redeem(); !errors.Is(err, ErrInProgress) {
		t.Fatalf("a renewed claim was released: %v", err)
	}
	// It stops renewing (it is dead): the survivor releases the claim.
	h.advance(RedemptionLease)
	if err := survivor.KeepLeases(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	if after.EscrowKeyID == before.EscrowKeyID {
		t.Fatal("the release kept the escrowed key the dead issuance certified")
	}
	recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
	if err != nil || len(recs) == 0 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("%s (%s, %s) of the dead issuance is not revoked", r.Serial, r.Profile, r.Status)
		}
	}
	d, err := survivor.Redeem(ctx, e.request(t), nil)
	if err != nil {
		t.Fatalf("the device's retry after the release: %v", err)
	}
	// The process thought dead comes back and gives up its issuance: it
	// revokes what it made, and nothing of the survivor's redemption.
	close(dying.never)
	<-finished
	live := 0
	recs, err = h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			live++
		}
	}
	if live != len(d.Manifest.GetItems())-1 { // every item but the chain
		t.Errorf("%d live certificates after the late failure, want the survivor's %d", live, len(d.Manifest.GetItems())-1)
	}
	if cur, _ := h.st.ActivationByID(ctx, e.payload.ID); cur.RedemptionID != d.RedemptionID || cur.Package == nil {
		t.Errorf("the late failure touched the survivor's redemption: %+v", cur)
	}
}

// TestReleaseAllAtStart: at the start of the only process (SQLite), every
// claim without a package is released at once, lease or not.
func TestReleaseAllAtStart(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	a, err := h.st.ActivationByID(ctx, e.payload.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.BeginRedemption(ctx, a.ID, "dead", h.clock(), store.Lease{Holder: "gone", Until: h.clock().Add(RedemptionLease)}); err != nil {
		t.Fatal(err)
	}
	if n, err := h.svc.ReleaseAll(ctx); err != nil || n != 1 {
		t.Fatalf("released %d, %v; want 1", n, err)
	}
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}

// lostIssuer certifies the escrowed key, then fails while lose is set, as
// a connection to the CA lost after it signed would.
type lostIssuer struct {
	issuance.Issuer
	lose atomic.Bool
	// onLose, if set, runs as the connection drops (the HSM going with it).
	onLose func()
}

func (l *lostIssuer) Issue(ctx context.Context, req issuance.Request) (*issuance.Issued, error) {
	got, err := l.Issuer.Issue(ctx, req)
	if err == nil && req.Profile == issuance.KeyManagement && l.lose.Load() {
		if l.onLose != nil {
			l.onLose()
		}
		return nil, errors.New("the connection to the CA dropped")
	}
	return got, err
}

// downKEK is a KEK in an HSM that is gone while down is set.
type downKEK struct {
	issuance.KEK
	down atomic.Bool
}

func (k *downKEK) Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	if k.down.Load() {
		return nil, &pkcs11.UnavailableError{Op: "escrow KEK", Reason: "token not present", Err: errors.New("CKR_TOKEN_NOT_PRESENT")}
	}
	return k.KEK.Seal(ctx, plaintext, aad)
}

// TestGiveBackWithoutNewKey: an issuance that failed after the escrowed key
// was certified, while the escrow could not make the set a new key (its
// HSM gone), is not given back with the certified key, which no retry
// could ever use; its claim lapses instead, and once the escrow works the
// lease keeper releases it with a new key and the device's retry redeems
// the code.
func TestGiveBackWithoutNewKey(t *testing.T) {
	ctx := context.Background()
	h, lost, kek := outageHarness(t)
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	before, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	lost.lose.Store(true)
	kek.down.Store(true)
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err == nil {
		t.Fatal("the redemption succeeded with the CA connection lost")
	}
	lost.lose.Store(false)
	kek.down.Store(false)

	// The escrow works again. Until the claim is released the device is
	// told to wait; never that its key was certified before.
	_, err = h.svc.Redeem(ctx, e.request(t), nil)
	if errors.Is(err, issuance.ErrKeyReused) {
		t.Fatalf("the code was given back with the certified escrowed key: %v", err)
	}
	if !errors.Is(err, ErrInProgress) {
		t.Fatalf("before the release: %v, want ErrInProgress", err)
	}
	h.advance(time.Second)
	if err := h.svc.KeepLeases(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := h.st.CredentialSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	if after.EscrowKeyID == before.EscrowKeyID || after.EscrowKeyID == "" {
		t.Fatalf("released with escrowed key %q (before %q)", after.EscrowKeyID, before.EscrowKeyID)
	}
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatalf("the device's retry after the release: %v", err)
	}
}

// TestReleasedSetRevocationFinished: a release whose revocations failed
// (the CA unreachable just then) leaves certificates of the dead issuance
// live in a set that is pending again; the sweep finishes the job, and
// leaves alone what a redemption started after the release made.
func TestReleasedSetRevocationFinished(t *testing.T) {
	ctx := context.Background()
	h, survivor, dying := dyingHarness(t)
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	go h.svc.Redeem(context.Background(), e.request(t), nil)
	<-dying.certified
	t.Cleanup(func() { close(dying.never) })

	h.advance(RedemptionLease + LeaseRenewal)
	h.issuer.failRevoke.Store(true)
	if err := survivor.KeepLeases(ctx); err == nil {
		t.Fatal("the release's revocations failed, and KeepLeases said nothing")
	}
	h.issuer.failRevoke.Store(false)
	live := func() int {
		t.Helper()
		recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if !r.Revoked() {
				n++
			}
		}
		return n
	}
	if live() == 0 {
		t.Fatal("nothing live after a release whose revocations failed: the test proves nothing")
	}
	if cs, err := h.st.CredentialSet(ctx, e.en.CredentialSetID); err != nil || cs.State != store.SetPending {
		t.Fatalf("set %+v, %v; want pending after the release", cs, err)
	}
	if _, err := survivor.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if live() == 0 {
		t.Fatal("the sweep revoked certificates younger than leftoverAge: a redemption in flight could own them")
	}
	h.advance(leftoverAge + time.Second)
	if _, err := survivor.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := live(); n != 0 {
		t.Fatalf("%d certificates of the dead issuance still live after the sweep", n)
	}
	// The device's retry redeems the code; the next sweep keeps its
	// certificates.
	h.advance(time.Second)
	d, err := survivor.Redeem(ctx, e.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, want := live(), len(d.Manifest.GetItems())-1; n != want {
		t.Fatalf("%d live certificates after the retry and a sweep, want %d", n, want)
	}
}

// outageHarness is a harness whose CA connection can be lost after a
// key-management certificate is signed and whose escrow's KEK can go down.
func outageHarness(t *testing.T) (*harness, *lostIssuer, *downKEK) {
	t.Helper()
	lost := &lostIssuer{}
	kek := &downKEK{}
	h := newHarness(t, func(c *Config) {
		lost.Issuer = c.Issuer
		c.Issuer = lost
		downEscrow(t, kek)(c)
	})
	return h, lost, kek
}

// downEscrow is a harness whose escrow seals under a KEK that can go down.
func downEscrow(t *testing.T, kek *downKEK) func(*Config) {
	return func(c *Config) {
		fk, err := issuance.NewFileKEK(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		kek.KEK = fk
		esc, err := issuance.NewEscrow(issuance.EscrowConfig{KEK: kek, KEKID: "down", Store: c.Store, KeyType: issuance.EscrowP256, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(esc.Close)
		c.Escrow = esc
	}
}

// TestReleaseWithEscrowDown: a dead process's claim is released even while
// the escrow cannot make a new key, as long as the dead issuance did not
// certify the old one, which then serves the retry; a certified one keeps
// the claim until a new key can be made.
func TestReleaseWithEscrowDown(t *testing.T) {
	ctx := context.Background()
	kek := &downKEK{}
	h := newHarness(t, downEscrow(t, kek))
	claim := func(e enrolled) {
		t.Helper()
		if err := h.st.BeginRedemption(ctx, e.payload.ID, "dead-"+e.payload.ID, h.clock(), store.Lease{Holder: "gone", Until: h.clock().Add(RedemptionLease)}); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing certified: released with the old key while the escrow is down.
	plain := h.enroll(t, h.signIn(t, "a@example.gov"))
	claim(plain)
	kek.down.Store(true)
	if n, _ := h.svc.ReleaseAll(ctx); n != 1 {
		t.Fatalf("released %d with the escrow down and nothing certified, want 1", n)
	}
	kek.down.Store(false)
	if _, err := h.svc.Redeem(ctx, plain.request(t), nil); err != nil {
		t.Fatalf("the retry with the old key: %v", err)
	}

	// The old key certified (an intent of the dead issuance): kept until
	// the escrow works, then released with a new key.
	certified := h.enroll(t, h.signIn(t, "b@example.gov"))
	claim(certified)
	cs, err := h.st.CredentialSet(ctx, certified.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.st.EscrowKey(ctx, cs.EscrowKeyID, cs.PersonID)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.CreateIssuanceIntent(ctx, store.CertificateRecord{Serial: "7dead1", Issuer: "issuing-ca", Profile: string(issuance.KeyManagement),
		SPKISHA256: k.SPKISHA256, PersonID: cs.PersonID, CredentialSetID: cs.ID, CreatedAt: h.clock()}); err != nil {
		t.Fatal(err)
	}
	kek.down.Store(true)
	if n, _ := h.svc.ReleaseAll(ctx); n != 0 {
		t.Fatalf("released %d with a certified key and no new one, want 0", n)
	}
	kek.down.Store(false)
	h.advance(time.Second)
	if n, err := h.svc.ReleaseAll(ctx); err != nil || n != 1 {
		t.Fatalf("released %d, %v once the escrow works; want 1", n, err)
	}
	if after, _ := h.st.CredentialSet(ctx, cs.ID); after.EscrowKeyID == cs.EscrowKeyID {
		t.Fatal("released with the certified key")
	}
}

// TestOnlyIssuingClaimsRenewed: KeepLeases renews the claims this process
// is issuing, not every claim that bears its name: a claim its call left
// behind (a give-back whose store write failed) lapses and is released,
// instead of being renewed until the process restarts.
func TestOnlyIssuingClaimsRenewed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	// A claim in this process's name that no call is issuing.
	if err := h.st.BeginRedemption(ctx, e.payload.ID, "left", h.clock(), store.Lease{Holder: h.svc.holder, Until: h.clock().Add(RedemptionLease)}); err != nil {
		t.Fatal(err)
	}
	for range 4 { // past the lease, renewing all along
		h.advance(LeaseRenewal)
		if err := h.svc.KeepLeases(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a, err := h.st.ActivationByID(ctx, e.payload.ID); err != nil || a.State != store.ActPending {
		t.Fatalf("the claim left behind: %+v, %v; want released (pending)", a.State, err)
	}
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatalf("the retry after the release: %v", err)
	}
}

// TestRefusedRekeyWithEscrowDown: a Rekey whose issuance fails after the
// new escrowed key was certified, while the escrow cannot make another,
// gives its renewal back to be abandoned at once: the device's retry (a
// new secret, once the escrow works) renews instead of hearing "a
// renewal is in progress" until the abandoned one expires.
func TestRefusedRekeyWithEscrowDown(t *testing.T) {
	ctx := context.Background()
	h, lost, kek := outageHarness(t)
	current := renewable(t, h)
	rekey := func() error {
		t.Helper()
		_, err := h.svc.Rekey(ctx, rekeyRequest(t, current), nil)
		return err
	}
	// The renewal is made (its new escrowed key sealed), then the CA
	// connection and the escrow's HSM go while it issues.
	lost.onLose = func() { kek.down.Store(true) }
	lost.lose.Store(true)
	if err := rekey(); err == nil {
		t.Fatal("the Rekey succeeded with the CA connection lost")
	}
	lost.lose.Store(false)
	kek.down.Store(false)
	if err := rekey(); err != nil {
		t.Fatalf("the device's retry once the escrow works: %v", err)
	}
}

// TestRefusedRekeyRetriedAsItWas: the reference agent makes one secret a
// renewal and, when a Rekey fails with Internal or Unavailable before it
// got a redemption id, asks again with that secret (and new keys). The
// refused renewal was abandoned, so the retry must renew, not be told a
// renewal is in progress (the abandoned renewal's code kept its lookup
// hash, and the unique index refused the same secret).
func TestRefusedRekeyRetriedAsItWas(t *testing.T) {
	ctx := context.Background()
	h, lost, _ := outageHarness(t)
	current := renewable(t, h)
	req := rekeyRequest(t, current)
	lost.lose.Store(true)
	if _, err := h.svc.Rekey(ctx, req, nil); err == nil {
		t.Fatal("the Rekey succeeded with the CA connection lost")
	}
	lost.lose.Store(false)
	again := rekeyRequest(t, current)
	again.Secret, again.Password = req.Secret, req.Password
	if _, err := h.svc.Rekey(ctx, again, nil); err != nil {
		t.Fatalf("the same secret again, once the CA answers: %v", err)
	}
}

// TestRekeyWithAnEndedRenewalsSecret: a secret still held by a renewal
// that ended (revoked on its own) is refused as the caller's to change,
// not as a renewal in progress that nobody can resume.
func TestRekeyWithAnEndedRenewalsSecret(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	current, req, d := rekeyed(t, h)
	if _, err := h.st.RevokeCredentialSet(ctx, d.Manifest.GetCredentialSetId(), h.clock()); err != nil {
		t.Fatal(err)
	}
	again := rekeyRequest(t, current)
	again.Secret, again.Password = req.Secret, req.Password
	if _, err := h.svc.Rekey(ctx, again, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "make a new secret") {
		t.Fatalf("got %v, want ErrInvalid saying to make a new secret", err)
	}
	if _, err := h.svc.Rekey(ctx, rekeyRequest(t, current), nil); err != nil {
		t.Fatalf("a new secret: %v", err)
	}
}

// renewable is the derived PIV Authentication certificate of a confirmed
// set, with the clock moved to where its renewal is open.
func renewable(t *testing.T, h *harness) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, fmt.Sprintf("renew-%d@example.gov", h.people+1)))
	h.install(t, e)
	recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Profile == string(issuance.DerivedPIVAuth) {
			current, err := x509.ParseCertificate(r.DER)
			if err != nil {
				t.Fatal(err)
			}
			h.advance(RenewalOpens(current.NotBefore, current.NotAfter, h.svc.cfg.RenewalPercent).Sub(h.clock()) + time.Hour)
			return current
		}
	}
	t.Fatal("no derived PIV Authentication certificate")
	return nil
}

// rekeyed begins a renewal of a new confirmed set (renewable): the
// device's current certificate, its Rekey request and the delivery.
func rekeyed(t *testing.T, h *harness) (*x509.Certificate, RekeyRequest, *Delivery) {
	t.Helper()
	current := renewable(t, h)
	req := rekeyRequest(t, current)
	d, err := h.svc.Rekey(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return current, req, d
}

// rekeyRequest is a new renewal of current's set: a new secret and new
// device keys.
func rekeyRequest(t *testing.T, current *x509.Certificate) RekeyRequest {
	t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	var in []*credgwv1.CertificateRequest
	for p, csr := range csrs(t) {
		for pp, ip := range protoProfiles {
			if ip == p {
				in = append(in, &credgwv1.CertificateRequest{Profile: pp, CsrDer: csr.Raw})
			}
		}
	}
	return RekeyRequest{Current: current, Secret: secret, Password: "24681357", CSRs: in}
}

// TestRekeyConfirmRepeated: a renewal's confirmation repeated because its
// answer was lost gets the first answer again, although the first revoked
// the calling certificate; a repeat that is not the same device's (another
// package, another secret, another redemption) is refused.
func TestRekeyConfirmRepeated(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	current, req, d := rekeyed(t, h)
	first, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256)
	if err != nil {
		t.Fatalf("the repeated confirmation: %v", err)
	}
	if again.CredentialSetID != first.CredentialSetID || fmt.Sprint(again.Serials) != fmt.Sprint(first.Serials) {
		t.Fatalf("the repeat answered %+v, the first %+v", again, first)
	}
	// Revoked since (a lost device): a repeat is not answered as the
	// first.
	defer func() {
		if _, err := h.svc.RevokeSet(ctx, first.PersonID, first.CredentialSetID, issuance.ReasonKeyCompromise); err != nil {
			t.Fatal(err)
		}
		if _, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256); err == nil {
			t.Error("a repeat answered after the renewed set was revoked")
		}
	}()
	otherSum := bytes.Repeat([]byte{1}, 32)
	otherSecret := bytes.Repeat([]byte{2}, 32)
	for _, tc := range []struct {
		name   string
		rid    string
		secret []byte
		sum    []byte
	}{
		{"another package", d.RedemptionID, req.Secret, otherSum},
		{"another secret", d.RedemptionID, otherSecret, d.SHA256},
		{"another redemption", "no-such-redemption", req.Secret, d.SHA256},
		{"no redemption", "", req.Secret, d.SHA256},
	} {
		if _, err := h.svc.ConfirmRekey(ctx, current, tc.rid, tc.secret, tc.sum); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestConfirmTellsNothingWithoutTheSecret: Redemption.Confirm with a
// renewal's redemption id and a wrong secret is refused as not accepted,
// like any wrong secret: before, it answered "this is a renewal", telling
// that the id exists and what it is, to whoever did not know the secret.
func TestConfirmTellsNothingWithoutTheSecret(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	_, req, d := rekeyed(t, h)
	_, wrong := h.svc.Confirm(ctx, d.RedemptionID, bytes.Repeat([]byte{3}, 32), d.SHA256)
	_, unknown := h.svc.Confirm(ctx, "no-such-redemption", bytes.Repeat([]byte{3}, 32), d.SHA256)
	if !errors.Is(wrong, ErrNotAccepted) || !errors.Is(unknown, ErrNotAccepted) || wrong.Error() != unknown.Error() {
		t.Fatalf("a renewal's id with a wrong secret: %v; an unknown id: %v; want the same ErrNotAccepted", wrong, unknown)
	}
	// With the secret, the device is told where to confirm.
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err == nil || !strings.Contains(err.Error(), "renewal") {
		t.Fatalf("a renewal confirmed through Redemption.Confirm with its secret: %v", err)
	}
}

// TestRevokeSetEndsItsRenewal: revoking a set (a lost phone) ends the
// renewal it has in progress — a package stored, not confirmed — as it
// ends the set: the certificates revoked, the activation ended, the
// package gone, so neither a resume nor a confirmation delivers it. A
// renewal confirmed already is the device's credential now: revoking the
// set it superseded leaves it alone.
func TestRevokeSetEndsItsRenewal(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	live := func(t *testing.T, setID string) (live, all int) {
		t.Helper()
		recs, err := h.st.CertificatesOfSet(ctx, setID)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if !r.Revoked() {
				live++
			}
		}
		return live, len(recs)
	}
	oldSet := func(t *testing.T, current *x509.Certificate) store.CredentialSet {
		t.Helper()
		rec, err := h.st.Certificate(ctx, NormalizeSerial(current.SerialNumber.Text(16)))
		if err != nil {
			t.Fatal(err)
		}
		old, err := h.st.CredentialSet(ctx, rec.CredentialSetID)
		if err != nil {
			t.Fatal(err)
		}
		return old
	}
	t.Run("in progress", func(t *testing.T) {
		current := renewable(t, h)
		old := oldSet(t, current)
		req := rekeyRequest(t, current)
		d, err := h.svc.Rekey(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		renewalID := d.Manifest.GetCredentialSetId()
		if n, all := live(t, renewalID); n != 3 || all != 3 {
			t.Fatalf("%d of %d certificates of the renewal live before the revocation, want 3 of 3: the test sets nothing up", n, all)
		}
		if _, err := h.svc.RevokeSet(ctx, old.PersonID, old.ID, issuance.ReasonKeyCompromise); err != nil {
			t.Fatal(err)
		}
		renewal, err := h.st.CredentialSet(ctx, renewalID)
		if err != nil {
			t.Fatal(err)
		}
		a, err := h.st.ActivationByRedemption(ctx, d.RedemptionID)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := live(t, renewalID)
		if renewal.State != store.SetRevoked || a.State != store.ActExpired || a.Package != nil || n != 0 {
			t.Fatalf("the renewal after its set was revoked: set %s, activation %s (package kept: %v), %d certificates live; want revoked, expired, none, none",
				renewal.State, a.State, a.Package != nil, n)
		}
		if sets, err := h.st.CountLiveSets(ctx, old.PersonID); err != nil || sets != 0 {
			t.Fatalf("%d live sets after the revocation, want none (%v)", sets, err)
		}
		again := req
		again.RedemptionID = d.RedemptionID
		if _, err := h.svc.Rekey(ctx, again, nil); err == nil {
			t.Error("the renewal of a revoked set resumed")
		}
		if _, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256); err == nil {
			t.Error("the renewal of a revoked set confirmed")
		}
	})
	t.Run("confirmed", func(t *testing.T) {
		current := renewable(t, h)
		old := oldSet(t, current)
		req := rekeyRequest(t, current)
		d, err := h.svc.Rekey(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		done, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.svc.RevokeSet(ctx, old.PersonID, old.ID, issuance.ReasonKeyCompromise); err != nil {
			t.Fatal(err)
		}
		renewal, err := h.st.CredentialSet(ctx, done.CredentialSetID)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := live(t, renewal.ID); renewal.State != store.SetActive || n != 3 {
			t.Fatalf("the confirmed renewal after the set it superseded was revoked again: %s with %d certificates live, want active with 3", renewal.State, n)
		}
	})
}

// boundIssuer records whether each revocation's context has a deadline.
type boundIssuer struct {
	lostIssuer
	unbounded, revoked atomic.Int32
}

func (b *boundIssuer) Revoke(ctx context.Context, serial string, reason issuance.RevocationReason) error {
	b.revoked.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		b.unbounded.Add(1)
	}
	return b.lostIssuer.Revoke(ctx, serial, reason)
}

// TestGiveBackBounded: a give-back's revocations run under a deadline,
// whatever the caller's context: this process renews the claim meanwhile,
// so a CA that never answers would otherwise hold the code for good.
func TestGiveBackBounded(t *testing.T) {
	ctx := context.Background() // no deadline of its own
	b := &boundIssuer{}
	h := newHarness(t, func(c *Config) {
		b.Issuer = c.Issuer
		c.Issuer = b
	})
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	b.lose.Store(true)
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err == nil {
		t.Fatal("the redemption succeeded with the CA connection lost")
	}
	if n := b.unbounded.Load(); n != 0 {
		t.Fatalf("%d revocations of the give-back ran without a deadline", n)
	}
	if b.revoked.Load() == 0 {
		t.Fatal("the give-back revoked nothing: the test proves nothing")
	}
}

// revokeDuring is a store that runs hook once, the first time the person's
// live sets are counted: inside Rekey, after the calling certificate's set
// was found active and before the renewal is created.
type revokeDuring struct {
	store.Store
	once sync.Once
	hook func()
}

func (r *revokeDuring) CountLiveSets(ctx context.Context, personID string) (int, error) {
	if r.hook != nil {
		r.once.Do(r.hook)
	}
	return r.Store.CountLiveSets(ctx, personID)
}

// TestRekeyRacingRevokeSet: a lost phone's Rekey that passed its checks
// just before the owner revoked the set must not create a renewal after
// the revocation (the owner's RevokeSet found no renewal to end, and the
// renewal's certificates would live until the sweep).
func TestRekeyRacingRevokeSet(t *testing.T) {
	ctx := context.Background()
	rs := &revokeDuring{}
	h := newHarness(t, func(c *Config) { rs.Store = c.Store; c.Store = rs })
	current := renewable(t, h)
	rec, err := h.st.Certificate(ctx, NormalizeSerial(current.SerialNumber.Text(16)))
	if err != nil {
		t.Fatal(err)
	}
	old, err := h.st.CredentialSet(ctx, rec.CredentialSetID)
	if err != nil {
		t.Fatal(err)
	}
	var revokeErr error
	rs.hook = func() { _, revokeErr = h.svc.RevokeSet(ctx, old.PersonID, old.ID, issuance.ReasonKeyCompromise) }
	_, err = h.svc.Rekey(ctx, rekeyRequest(t, current), nil)
	if revokeErr != nil {
		t.Fatalf("the owner's RevokeSet: %v", revokeErr)
	}
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("the Rekey racing the revocation: %v, want ErrPermission", err)
	}
	if live, err := h.st.LiveRenewals(ctx, old.ID); err != nil || len(live) != 0 {
		t.Fatalf("renewals of the revoked set: %v (%v), want none", live, err)
	}
}
