package activation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/store"
)

// The service's own tests run it on its real parts — SQLite, the smallstep
// authority with a software CA key, the escrow under a file KEK — with a
// clock the test moves, and an issuer whose revocations can be made to
// fail.

// flakyIssuer is the real CA whose Revoke fails while failRevoke is set.
type flakyIssuer struct {
	issuance.Issuer
	failRevoke atomic.Bool
	// afterIssue, if set, runs after each certificate is issued.
	afterIssue func(issuance.Request)
	// failSignatureOnce fails the next signature certificate's issuance
	// once the key-management certificate beside it is issued.
	failSignatureOnce atomic.Bool
	kmIssued          chan struct{}
	// onRevoke, if set, runs before each revocation; an error fails it.
	onRevoke func(ctx context.Context) error
}

func (f *flakyIssuer) Issue(ctx context.Context, req issuance.Request) (*issuance.Issued, error) {
	if req.Profile == issuance.DigitalSignature && f.failSignatureOnce.CompareAndSwap(true, false) {
		select {
		case <-f.kmIssued:
		case <-time.After(time.Minute): // a failsafe, not a synchronisation: issuances run side by side
			return nil, errors.New("the key-management certificate was not issued beside the signature certificate")
		}
		return nil, errors.New("the CA failed the signature certificate")
	}
	got, err := f.Issuer.Issue(ctx, req)
	if err == nil && req.Profile == issuance.KeyManagement && f.kmIssued != nil {
		select {
		case <-f.kmIssued:
		default:
			close(f.kmIssued)
		}
	}
	if err == nil && f.afterIssue != nil {
		f.afterIssue(req)
	}
	return got, err
}

func (f *flakyIssuer) Revoke(ctx context.Context, serial string, reason issuance.RevocationReason) error {
	if f.failRevoke.Load() {
		return errors.New("the CA is unreachable")
	}
	if f.onRevoke != nil {
		if err := f.onRevoke(ctx); err != nil {
			return err
		}
	}
	return f.Issuer.Revoke(ctx, serial, reason)
}

// syncBuffer is a log sink the service may write from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cards is the card check the test controls: every card good, unless err
// is set (a card revoked at its issuer since it signed in).
type cards struct {
	mu  sync.Mutex
	err error
}

func (c *cards) VerifyPIVAuth(context.Context, *x509.Certificate, []*x509.Certificate) (*piv.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &piv.Result{}, c.err
}

func (c *cards) set(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

type harness struct {
	cards  cards
	st     *store.SQLite
	svc    *Service
	issuer *flakyIssuer
	logs   *syncBuffer
	mu     sync.Mutex
	now    time.Time
	people int
	// dbPath is the SQLite file of st.
	dbPath string
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

func newHarness(t *testing.T, change func(*Config)) *harness {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	h := &harness{now: time.Now().Truncate(time.Second), logs: &syncBuffer{}}
	init, err := issuance.InitCA(ctx, issuance.InitOptions{Dir: filepath.Join(dir, "ca"), Organization: "credgw activation test"})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.ReadKeyFile(init.IssuingKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	h.dbPath = filepath.Join(dir, "credgw.db")
	if h.st, err = store.OpenSQLite(ctx, h.dbPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	ca, err := issuance.NewCA(issuance.Config{Name: "issuing-ca", Chain: []*x509.Certificate{init.Issuing, init.Root},
		Signer: signer, Store: h.st, BaseURL: "http://127.0.0.1:1", Now: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	h.issuer = &flakyIssuer{Issuer: ca}
	kekFile := filepath.Join(dir, "kek")
	if err := issuance.WriteFileKEK(kekFile); err != nil {
		t.Fatal(err)
	}
	kek, err := issuance.LoadFileKEK(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	esc, err := issuance.NewEscrow(issuance.EscrowConfig{KEK: kek, KEKID: "file", Store: h.st, KeyType: issuance.EscrowP256, Now: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(esc.Close)
	log := slog.New(slog.NewJSONHandler(h.logs, nil))
	// A relay is configured (nothing sends in these tests): escrowed keys
	// are delivered only by a gateway that tells every attempt.
	outbox, err := notify.New(notify.Config{SMTP: notify.SMTPConfig{Address: "127.0.0.1:1", From: "credgw@example.gov", InsecureNoTLS: true}},
		func(p string) string { return p }, h.st, log, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	pepper, _, err := esc.GatewaySecret(context.Background(), "activation-pepper")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: h.st, Issuer: h.issuer, Escrow: esc, Pepper: pepper, Gateway: "127.0.0.1:8443", Pin: make([]byte, 32), Verifier: &h.cards,
		Audit: audit.New(h.st, log, h.clock), Notify: outbox, Log: log, Now: h.clock}
	if change != nil {
		change(&cfg)
	}
	if h.svc, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return h
}

// signIn records a PKI-AUTH session of a new person with a new card, as
// piv/session does after verifying the card.
func (h *harness) signIn(t *testing.T, email string) store.PIVSession {
	t.Helper()
	ctx := context.Background()
	h.people++
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(h.people)), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, CommonName: fmt.Sprintf("Person %d", h.people)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	fp := hex.EncodeToString(sum[:])
	sid := fmt.Sprintf("challenge-%d", h.people)
	if err := h.st.CreateChallenge(ctx, store.Challenge{SessionID: sid, Challenge: []byte("c"), GatewayID: "g", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.ConsumeChallenge(ctx, sid, now); err != nil {
		t.Fatal(err)
	}
	sess := store.PIVSession{TokenHash: fmt.Sprintf("token-%d", h.people), SessionID: sid, CertSHA256: fp,
		PersonID: fmt.Sprintf("person-%d", h.people), FASCN: []byte{0xd4, 0xe7, byte(h.people)},
		CardUUID: fmt.Sprintf("f81d4fae-7dec-11d0-a765-%012d", h.people), Email: email, Subject: tmpl.Subject.String(),
		CreatedAt: now, ExpiresAt: now.Add(20 * time.Minute)}
	if err := h.st.CreatePIVSession(ctx, sess, store.PIVCertificate{SHA256: fp, DER: der, Serial: "1", Issuer: tmpl.Subject.String(),
		Subject: sess.Subject, FASCN: sess.FASCN, CardUUID: sess.CardUUID, NotAfter: tmpl.NotAfter}); err != nil {
		t.Fatal(err)
	}
	return sess
}

// enrolled is an enrollment with what the device learns from it.
type enrolled struct {
	en      *Enrollment
	payload code.Payload
}

func (h *harness) enroll(t *testing.T, sess store.PIVSession) enrolled {
	t.Helper()
	en, err := h.svc.Enroll(context.Background(), EnrollRequest{Session: sess, IdentityName: "Phone", CredentialType: DefaultCredentialType})
	if err != nil {
		t.Fatal(err)
	}
	p, err := code.ParsePayload(en.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return enrolled{en: en, payload: p}
}

// csrs are the device's CSRs for the default credential type.
func csrs(t *testing.T) map[issuance.Profile]*x509.CertificateRequest {
	t.Helper()
	out := map[issuance.Profile]*x509.CertificateRequest{}
	for _, p := range []issuance.Profile{issuance.DerivedPIVAuth, issuance.DigitalSignature} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		if out[p], err = x509.ParseCertificateRequest(der); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (e enrolled) request(t *testing.T) RedeemRequest {
	return RedeemRequest{ActivationID: e.payload.ID, Secret: e.payload.Secret, Password: e.en.Password, CSRs: csrs(t)}
}

// wrongPassword is a password of the right shape that is not p.
func wrongPassword(p string) string {
	if p[0] == '9' {
		return "1" + p[1:]
	}
	return string(p[0]+1) + p[1:]
}

// TestEnrollRefusesRevokedCard: the card is checked again before an
// enrollment (it may have been revoked since the sign-in).
func TestEnrollRefusesRevokedCard(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	sess := h.signIn(t, "a@example.gov")
	h.cards.set(fmt.Errorf("%w (OCSP): the card must not be used", piv.ErrRevoked))
	if _, err := h.svc.Enroll(ctx, EnrollRequest{Session: sess, IdentityName: "Phone"}); !errors.Is(err, piv.ErrRevoked) {
		t.Fatalf("got %v, want piv.ErrRevoked", err)
	}
	if n, _ := h.st.CountLiveSets(ctx, sess.PersonID); n != 0 {
		t.Fatalf("%d credential sets after the refusal", n)
	}
}

func TestEnrollRefuses(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSets = 1 })
	ctx := context.Background()
	fresh := h.signIn(t, "a@example.gov")
	old := h.signIn(t, "b@example.gov")
	old.CreatedAt = old.CreatedAt.Add(-21 * time.Minute)
	expired := h.signIn(t, "c@example.gov")
	expired.ExpiresAt = h.clock()
	noEmail := h.signIn(t, "")
	oddEmail := h.signIn(t, "f@example.gov> NOTIFY=NEVER") // no mail can reach it: the escrowed key's delivery could not be told
	unbound := h.signIn(t, "")
	unbound.EmailSource = session.EmailSourceUnbound
	terminated := h.signIn(t, "d@example.gov")
	if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{CardUUID: terminated.CardUUID}, TerminatedAt: h.clock()}); err != nil {
		t.Fatal(err)
	}
	capped := h.signIn(t, "e@example.gov")
	h.enroll(t, capped)
	for _, tc := range []struct {
		name  string
		req   EnrollRequest
		want  error
		words string
	}{
		{"unknown credential type", EnrollRequest{Session: fresh, IdentityName: "Phone", CredentialType: "smart-toaster"}, ErrInvalid, "smart-toaster"},
		{"empty identity name", EnrollRequest{Session: fresh, IdentityName: ""}, ErrInvalid, "identity name"},
		{"identity name too long", EnrollRequest{Session: fresh, IdentityName: strings.Repeat("x", 65)}, ErrInvalid, "identity name"},
		{"identity name not printable", EnrollRequest{Session: fresh, IdentityName: "Phone\x00"}, ErrInvalid, "identity name"},
		{"identity name not UTF-8", EnrollRequest{Session: fresh, IdentityName: "Phone \xff"}, ErrInvalid, "identity name"},
		{"identity name with a lone surrogate byte", EnrollRequest{Session: fresh, IdentityName: "Ph\xed\xa0\x80one"}, ErrInvalid, "identity name"},
		{"sign-in older than 20 minutes", EnrollRequest{Session: old, IdentityName: "Phone"}, ErrSessionTooOld, "sign in"},
		{"expired session", EnrollRequest{Session: expired, IdentityName: "Phone"}, ErrSessionTooOld, "sign in"},
		{"no email for S/MIME", EnrollRequest{Session: noEmail, IdentityName: "Phone"}, issuance.ErrNoEmail, "email"},
		{"email of record not one mailbox", EnrollRequest{Session: oddEmail, IdentityName: "Phone"}, issuance.ErrNoEmail, "not one mailbox"},
		// Its 9C was sent but is not shown to be the card's: a repeat
		// PKI-AUTH cannot help, and the message says why.
		{"the card's 9C not taken", EnrollRequest{Session: unbound, IdentityName: "Phone"}, issuance.ErrNoEmail, "not shown to be this card's"},
		{"terminated identity", EnrollRequest{Session: terminated, IdentityName: "Phone"}, ErrTerminated, "terminated"},
		{"at the cap", EnrollRequest{Session: capped, IdentityName: "Phone"}, ErrCap, "revoke one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := h.st.CountLiveSets(ctx, tc.req.Session.PersonID)
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.svc.Enroll(ctx, tc.req)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.words)
			}
			if after, _ := h.st.CountLiveSets(ctx, tc.req.Session.PersonID); after != before {
				t.Errorf("a refused enrollment left a credential set (%d → %d)", before, after)
			}
		})
	}
}

func TestRedeemRefuses(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	good := e.request(t)
	otherSecret, _ := code.NewSecret()
	noSig := e.request(t)
	delete(noSig.CSRs, issuance.DigitalSignature)
	extra := e.request(t)
	extra.CSRs[issuance.KeyManagement] = extra.CSRs[issuance.DerivedPIVAuth]
	for _, tc := range []struct {
		name   string
		change func(*RedeemRequest)
		want   error
	}{
		{"unknown activation", func(r *RedeemRequest) { r.ActivationID = "no-such-activation-id" }, ErrNotAccepted},
		{"wrong secret", func(r *RedeemRequest) { r.Secret = otherSecret }, ErrNotAccepted},
		{"a CSR missing", func(r *RedeemRequest) { r.CSRs = noSig.CSRs }, ErrInvalid},
		{"a CSR for the escrowed key", func(r *RedeemRequest) { r.CSRs = extra.CSRs }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			tc.change(&req)
			if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			a, err := h.st.ActivationByID(ctx, e.payload.ID)
			if err != nil || a.State != store.ActPending || a.FailedAttempts != 0 {
				t.Fatalf("the activation is %s with %d failed attempts, want pending with none (%v)", a.State, a.FailedAttempts, err)
			}
		})
	}
	t.Run("wrong password counts", func(t *testing.T) {
		req := good
		req.Password = wrongPassword(good.Password)
		var wrong *WrongPasswordError
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.As(err, &wrong) || wrong.AttemptsLeft != DefaultMaxAttempts-1 {
			t.Fatalf("got %v, want a wrong password with %d attempts left", err, DefaultMaxAttempts-1)
		}
		req.Password = "12ab5678"
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.As(err, &wrong) || wrong.AttemptsLeft != DefaultMaxAttempts-2 {
			t.Fatalf("a password that is not digits: got %v, want a counted wrong password", err)
		}
	})
	t.Run("card revoked since the enrollment", func(t *testing.T) {
		h.cards.set(fmt.Errorf("%w (OCSP): the card must not be used", piv.ErrRevoked))
		defer h.cards.set(nil)
		if _, err := h.svc.Redeem(ctx, good, nil); !errors.Is(err, piv.ErrRevoked) {
			t.Fatalf("got %v, want piv.ErrRevoked", err)
		}
		if a, _ := h.st.ActivationByID(ctx, e.payload.ID); a.State != store.ActPending {
			t.Fatalf("the activation is %s, want still pending", a.State)
		}
	})
	t.Run("expired", func(t *testing.T) {
		e := h.enroll(t, h.signIn(t, "b@example.gov"))
		h.advance(DefaultLifetime)
		defer h.advance(-DefaultLifetime)
		if _, err := h.svc.Redeem(ctx, e.request(t), nil); !errors.Is(err, ErrExpired) {
			t.Fatalf("got %v, want ErrExpired", err)
		}
	})
	t.Run("resume", func(t *testing.T) {
		// A package waiting for its confirmation goes only to the device
		// whose keys it certifies, and only within the confirmation
		// window; a refused resume leaves it as it was.
		e := h.enroll(t, h.signIn(t, "c@example.gov"))
		first := e.request(t)
		d, err := h.svc.Redeem(ctx, first, nil)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := h.st.ActivationByID(ctx, e.payload.ID)
		if err != nil {
			t.Fatal(err)
		}
		oneKeyNew := csrs(t)
		oneKeyNew[issuance.DerivedPIVAuth] = first.CSRs[issuance.DerivedPIVAuth]
		// The device's public keys are no secret (its certificates carry
		// them): a CSR with the device's key, signed by another, proves
		// nothing.
		forged := map[issuance.Profile]*x509.CertificateRequest{}
		for p, csr := range first.CSRs {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, other)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			c.PublicKey = csr.PublicKey // what the forger's parsed CSR says
			forged[p] = c
		}
		for _, tc := range []struct {
			name    string
			change  func(*RedeemRequest)
			advance time.Duration
			want    error
			words   string
		}{
			{"resume by another device: new CSRs", func(r *RedeemRequest) { r.CSRs = csrs(t) }, 0, ErrPermission, "same device"},
			{"resume by another device: no CSRs", func(r *RedeemRequest) { r.CSRs = nil }, 0, ErrPermission, "same device"},
			{"resume by another device: one key new", func(r *RedeemRequest) { r.CSRs = oneKeyNew }, 0, ErrPermission, "same device"},
			{"resume by another device: the device's keys, signed by others", func(r *RedeemRequest) { r.CSRs = forged }, 0, ErrPermission, "same device"},
			{"resume after the confirmation window", func(*RedeemRequest) {}, DefaultConfirmWindow, ErrExpired, "expired"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req := first
				tc.change(&req)
				h.advance(tc.advance)
				defer h.advance(-tc.advance)
				got, err := h.svc.Redeem(ctx, req, nil)
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words) {
					t.Fatalf("got %v (package delivered: %v), want %v saying %q", err, got != nil, tc.want, tc.words)
				}
				if msg := err.Error(); strings.Contains(msg, e.en.Password) || strings.Contains(msg, hex.EncodeToString(e.payload.Secret)) {
					t.Fatalf("the refusal %q carries a secret", msg)
				}
				a, err := h.st.ActivationByID(ctx, e.payload.ID)
				if err != nil || a.State != store.ActRedeeming || a.FailedAttempts != 0 || !bytes.Equal(a.Package, stored.Package) {
					t.Fatalf("the activation is %s with %d failed attempts (package kept: %v), want redeeming, none, kept (%v)",
						a.State, a.FailedAttempts, bytes.Equal(a.Package, stored.Package), err)
				}
				recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if r.Revoked() {
						t.Fatalf("a refused resume revoked %s", r.Serial)
					}
				}
			})
		}
		again, err := h.svc.Redeem(ctx, first, nil)
		if err != nil || !again.Resumed || !bytes.Equal(again.SHA256, d.SHA256) {
			t.Fatalf("the same device's resume got %v, want the same package", err)
		}
	})
	t.Run("redeemed and confirmed", func(t *testing.T) {
		d, err := h.svc.Redeem(ctx, good, nil)
		if err != nil {
			t.Fatal(err)
		}
		again, err := h.svc.Redeem(ctx, good, nil)
		if err != nil || !again.Resumed || !bytes.Equal(again.SHA256, d.SHA256) {
			t.Fatalf("a resume got %v (resumed %v), want the same package", err, again != nil && again.Resumed)
		}
		if _, err := h.svc.Confirm(ctx, d.RedemptionID, good.Secret, d.SHA256); err != nil {
			t.Fatal(err)
		}
		if _, err := h.svc.Redeem(ctx, good, nil); !errors.Is(err, ErrAlreadyRedeemed) {
			t.Fatalf("got %v, want ErrAlreadyRedeemed", err)
		}
	})
}

func TestConfirmRefuses(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, _ := code.NewSecret()
	otherSum := sha256.Sum256([]byte("something else"))
	for _, tc := range []struct {
		name         string
		redemptionID string
		secret, sum  []byte
		want         error
	}{
		{"unknown redemption", "no-such-redemption", req.Secret, d.SHA256, ErrNotAccepted},
		{"wrong secret", d.RedemptionID, otherSecret, d.SHA256, ErrNotAccepted},
		{"another package's SHA-256", d.RedemptionID, req.Secret, otherSum[:], ErrHashMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.svc.Confirm(ctx, tc.redemptionID, tc.secret, tc.sum); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if a, _ := h.st.ActivationByID(ctx, e.payload.ID); a.State != store.ActRedeeming {
				t.Fatalf("the activation is %s, want still redeeming", a.State)
			}
		})
	}
	t.Run("after the confirm window", func(t *testing.T) {
		h.advance(DefaultConfirmWindow)
		defer h.advance(-DefaultConfirmWindow)
		if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); !errors.Is(err, ErrExpired) {
			t.Fatalf("got %v, want ErrExpired", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		first, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		events := func() int {
			evs, _ := h.st.AuditEvents(ctx, 0, 0, "")
			n := 0
			for _, ev := range evs {
				if ev.Action == "confirm" {
					n++
				}
			}
			return n
		}
		before := events()
		// The device did not hear the answer and asks again: the same
		// answer, nothing recorded twice.
		again, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256)
		if err != nil || again.CredentialSetID != first.CredentialSetID || len(again.Serials) != len(first.Serials) {
			t.Fatalf("repeated confirmation: %+v, %v; want the first answer", again, err)
		}
		if n := events(); n != before {
			t.Errorf("a repeated confirmation was recorded again (%d → %d events)", before, n)
		}
		if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, otherSum[:]); !errors.Is(err, ErrAlreadyRedeemed) {
			t.Fatalf("confirmed, then another SHA-256: got %v, want ErrAlreadyRedeemed", err)
		}
	})
}

// TestConfirmRefusesATerminatedIdentity: a card terminated between the
// download and the confirmation confirms nothing.
func TestConfirmRefusesATerminatedIdentity(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	sess := h.signIn(t, "a@example.gov")
	e := h.enroll(t, sess)
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{CardUUID: sess.CardUUID}, TerminatedAt: h.clock()}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); !errors.Is(err, ErrTerminated) {
		t.Fatalf("got %v, want ErrTerminated", err)
	}
	if a, _ := h.st.ActivationByID(ctx, e.payload.ID); a.State != store.ActRedeeming {
		t.Fatalf("the activation is %s, want still redeeming", a.State)
	}
}

// lockWithPackage redeems (a package waits for its confirmation), then
// types wrong passwords until the code locks.
func lockWithPackage(t *testing.T, h *harness) (enrolled, *Delivery) {
	t.Helper()
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Password = wrongPassword(req.Password)
	for i := 0; i < DefaultMaxAttempts-1; i++ {
		if _, err := h.svc.Redeem(ctx, req, nil); err == nil || errors.Is(err, ErrLocked) {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("the last attempt: got %v, want ErrLocked", err)
	}
	return e, d
}

// TestLockedPackageIsRevoked: a code locked while its package waits
// revokes what the package carries (keyCompromise: someone is guessing),
// and the set is abandoned.
func TestLockedPackageIsRevoked(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e, d := lockWithPackage(t, h)
	recs, err := h.st.CertificatesOfSet(ctx, d.Manifest.GetCredentialSetId())
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d certificates, %v", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() || issuance.RevocationReason(r.RevocationReason) != issuance.ReasonKeyCompromise {
			t.Errorf("%s: revoked %v, reason %d; want keyCompromise", r.Serial, r.Revoked(), r.RevocationReason)
		}
	}
	if cs, _ := h.st.CredentialSet(ctx, d.Manifest.GetCredentialSetId()); cs.State != store.SetAbandoned {
		t.Errorf("the set is %s, want abandoned", cs.State)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, e.payload.Secret, d.SHA256); err == nil {
		t.Error("a locked redemption was confirmed")
	}
}

// withMail gives the harness an outbox that keeps notifications (a mail
// relay configured; nothing sends them in these tests).
func withMail(t *testing.T) func(*Config) {
	return func(cfg *Config) {
		ob, err := notify.New(notify.Config{SMTP: notify.SMTPConfig{Address: "127.0.0.1:1", From: "credgw@example.gov", InsecureNoTLS: true}},
			func(p string) string { return p }, cfg.Store, cfg.Log, cfg.Now)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Notify = ob
	}
}

// TestLockedWithPackageToldTruthfully: a code locked after a device began
// downloading (someone with a photo of the QR code and the password
// redeemed, did not confirm, then typed wrong passwords) must not tell the
// person "nothing was issued": the package carried their escrowed
// encryption keys. They are told what left escrow and that it is revoked,
// with a key-delivery notice (Common Policy §4.12.1: every key recovery is
// told to the subscriber). A code locked before any download still says
// nothing was issued.
func TestLockedWithPackageToldTruthfully(t *testing.T) {
	h := newHarness(t, withMail(t))
	ctx := context.Background()
	lockWithPackage(t, h)
	ns, err := h.st.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lockout, delivery []string
	for _, n := range ns {
		switch n.Kind {
		case "lockout":
			lockout = append(lockout, n.Body)
		case "key-delivery":
			delivery = append(delivery, n.Body)
		}
	}
	if len(lockout) != 1 || strings.Contains(lockout[0], "nothing was issued") || !strings.Contains(lockout[0], "encryption keys") {
		t.Errorf("the lockout notice says %q; want one telling the escrowed keys were downloaded", lockout)
	}
	if len(delivery) != 1 || !strings.Contains(delivery[0], "revoked") {
		t.Errorf("key-delivery notices %q; want one saying the keys left escrow and the credentials are revoked", delivery)
	}

	// Locked while the package was being made: it is never stored, so no
	// key left escrow; the person is told what was revoked, and no
	// key-delivery notice goes out.
	h3 := newHarness(t, withMail(t))
	e3 := h3.enroll(t, h3.signIn(t, "c@example.gov"))
	entered, release := make(chan struct{}), make(chan struct{})
	h3.issuer.afterIssue = func(req issuance.Request) {
		if req.Profile == issuance.KeyManagement {
			close(entered)
			<-release
		}
	}
	req3 := e3.request(t)
	redeemed := make(chan error, 1)
	go func() { _, err := h3.svc.Redeem(ctx, req3, nil); redeemed <- err }()
	<-entered
	wrong := req3
	wrong.Password = wrongPassword(req3.Password)
	for range DefaultMaxAttempts {
		h3.svc.Redeem(ctx, wrong, nil)
	}
	close(release)
	if err := <-redeemed; err == nil {
		t.Fatal("the redemption locked while issuing delivered")
	}
	ns, _ = h3.st.Notifications(ctx)
	var kinds []string
	for _, n := range ns {
		kinds = append(kinds, n.Kind)
		if n.Kind == "key-delivery" || n.Kind == "lockout" && !strings.Contains(n.Body, "nothing was downloaded") {
			t.Errorf("locked while issuing: a %s notice %q", n.Kind, n.Body)
		}
	}
	if !slices.Contains(kinds, "lockout") {
		t.Errorf("locked while issuing: notices %v, want a lockout notice", kinds)
	}

	// Locked before any download: nothing was issued, no key left escrow.
	h2 := newHarness(t, withMail(t))
	e := h2.enroll(t, h2.signIn(t, "b@example.gov"))
	req := e.request(t)
	req.Password = wrongPassword(req.Password)
	for range DefaultMaxAttempts {
		h2.svc.Redeem(ctx, req, nil)
	}
	ns, _ = h2.st.Notifications(ctx)
	for _, n := range ns {
		if n.Kind == "key-delivery" || n.Kind == "lockout" && !strings.Contains(n.Body, "nothing was issued") {
			t.Errorf("locked before any download: a %s notice %q", n.Kind, n.Body)
		}
	}
}

// TestUndeliveredToldOnceEvenIfTheCAFails: a package the device never
// confirmed is told to the person (key-delivery) once, even when the CA
// cannot revoke at that sweep: before, the set was claimed (no longer
// redeeming) but the notice was sent only after a revocation that
// succeeded in the same sweep, and the next sweep revoked without telling.
func TestUndeliveredToldOnceEvenIfTheCAFails(t *testing.T) {
	h := newHarness(t, withMail(t))
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatal(err)
	}
	h.advance(DefaultConfirmWindow + time.Minute)
	h.issuer.failRevoke.Store(true)
	h.svc.Sweep(ctx)
	h.issuer.failRevoke.Store(false)
	h.svc.Sweep(ctx)
	ns, _ := h.st.Notifications(ctx)
	told := 0
	for _, n := range ns {
		if n.Kind == "key-delivery" && strings.Contains(n.Body, "never confirmed") {
			told++
		}
	}
	if told != 1 {
		t.Fatalf("%d undelivered notices, want 1", told)
	}
}

// TestTerminatedDuringIssuanceGetsNothing: a person terminated while their
// redemption is being issued (RevokeIdentity records the termination, then
// works through the sets) gets no package: the termination is checked
// again once the package is stored, before it is delivered, and on a
// resume. Before, the device received the certificates and the escrowed
// key history after the termination.
func TestTerminatedDuringIssuanceGetsNothing(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	sess := h.signIn(t, "a@example.gov")
	e := h.enroll(t, sess)
	h.issuer.afterIssue = func(req issuance.Request) {
		if req.Profile == issuance.KeyManagement {
			if err := h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{PersonID: sess.PersonID}, TerminatedAt: h.clock()}); err != nil {
				t.Error(err)
			}
		}
	}
	req := e.request(t)
	if d, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrTerminated) {
		t.Fatalf("Redeem = %v, %v; want ErrTerminated and no delivery", d != nil, err)
	}
	h.issuer.afterIssue = nil
	if d, err := h.svc.Redeem(ctx, req, nil); d != nil || err == nil {
		t.Fatalf("the resume: %v, %v; want no delivery", d != nil, err)
	}
	// What was issued is revoked, the set with it.
	a, _ := h.st.ActivationByID(ctx, e.payload.ID)
	recs, err := h.st.CertificatesOfSet(ctx, a.CredentialSetID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d certificates, %v", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("certificate %s of a terminated person's redemption is not revoked", r.Serial)
		}
	}
}

// stumblingStore fails chosen calls once: the Terminated lookup after
// the first (the one after the package is stored), and RevokeCredentialSet.
type stumblingStore struct {
	store.Store
	terminatedCalls atomic.Int32
	failTerminated  atomic.Bool // the second lookup and on fails once
	failRevokeSet   atomic.Bool
}

func (s *stumblingStore) Terminated(ctx context.Context, fascn []byte, cardUUID, personID string) (bool, error) {
	if s.terminatedCalls.Add(1) >= 2 && s.failTerminated.CompareAndSwap(true, false) {
		return false, store.ErrUnavailable
	}
	return s.Store.Terminated(ctx, fascn, cardUUID, personID)
}

func (s *stumblingStore) RevokeCredentialSet(ctx context.Context, id string, now time.Time) ([]string, error) {
	if s.failRevokeSet.CompareAndSwap(true, false) {
		return nil, store.ErrUnavailable
	}
	return s.Store.RevokeCredentialSet(ctx, id, now)
}

// TestTerminationRecheckIsCareful: the termination re-check after the
// package is stored does not revoke a deliverable package when the store
// merely fails the lookup (before, the failure went through the give-back
// path, which revoked the certificates and left the package resumable, so
// the retry delivered revoked certificates); and a resume of a terminated
// identity's package ends and revokes the set even when the call that
// stored it could not.
func TestTerminationRecheckIsCareful(t *testing.T) {
	ctx := context.Background()
	t.Run("a failed lookup delivers on the retry", func(t *testing.T) {
		var st *stumblingStore
		h := newHarness(t, func(cfg *Config) { st = &stumblingStore{Store: cfg.Store}; cfg.Store = st })
		e := h.enroll(t, h.signIn(t, "a@example.gov"))
		st.terminatedCalls.Store(0) // the redemption's first lookup passes, the one after the package is stored fails
		st.failTerminated.Store(true)
		req := e.request(t)
		if d, err := h.svc.Redeem(ctx, req, nil); d != nil || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Redeem: %v, %v; want no delivery while the termination is unknown, and Unavailable", d != nil, err)
		}
		d, err := h.svc.Redeem(ctx, req, nil)
		if err != nil || !d.Resumed {
			t.Fatalf("the retry: %v (resumed %v), want the stored package", err, d != nil && d.Resumed)
		}
		recs, _ := h.st.CertificatesOfSet(ctx, d.Manifest.GetCredentialSetId())
		for _, r := range recs {
			if r.Revoked() {
				t.Fatalf("certificate %s of a delivered package is revoked", r.Serial)
			}
		}
	})
	t.Run("a failed lookup beside a termination delivers nothing", func(t *testing.T) {
		var st *stumblingStore
		h := newHarness(t, func(cfg *Config) { st = &stumblingStore{Store: cfg.Store}; cfg.Store = st })
		sess := h.signIn(t, "c@example.gov")
		e := h.enroll(t, sess)
		h.issuer.afterIssue = func(req issuance.Request) {
			if req.Profile == issuance.KeyManagement {
				h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{PersonID: sess.PersonID}, TerminatedAt: h.clock()})
			}
		}
		st.terminatedCalls.Store(0)
		st.failTerminated.Store(true)
		req := e.request(t)
		if d, err := h.svc.Redeem(ctx, req, nil); d != nil || err == nil {
			t.Fatalf("Redeem: %v, %v; want no delivery", d != nil, err)
		}
		h.issuer.afterIssue = nil
		if d, err := h.svc.Redeem(ctx, req, nil); d != nil || !errors.Is(err, ErrTerminated) {
			t.Fatalf("the retry: %v, %v; want ErrTerminated and no delivery", d != nil, err)
		}
	})
	t.Run("a resume revokes what a terminated identity's call could not", func(t *testing.T) {
		var st *stumblingStore
		h := newHarness(t, func(cfg *Config) { st = &stumblingStore{Store: cfg.Store}; cfg.Store = st })
		sess := h.signIn(t, "b@example.gov")
		e := h.enroll(t, sess)
		h.issuer.afterIssue = func(req issuance.Request) {
			if req.Profile == issuance.KeyManagement {
				h.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{PersonID: sess.PersonID}, TerminatedAt: h.clock()})
			}
		}
		st.failRevokeSet.Store(true)
		h.issuer.failRevoke.Store(true)
		req := e.request(t)
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrTerminated) {
			t.Fatalf("Redeem: %v, want ErrTerminated", err)
		}
		h.issuer.afterIssue = nil
		h.issuer.failRevoke.Store(false)
		if d, err := h.svc.Redeem(ctx, req, nil); d != nil || !errors.Is(err, ErrTerminated) {
			t.Fatalf("the resume: %v, %v; want ErrTerminated and no delivery", d != nil, err)
		}
		a, _ := h.st.ActivationByID(ctx, e.payload.ID)
		recs, _ := h.st.CertificatesOfSet(ctx, a.CredentialSetID)
		if len(recs) != 3 {
			t.Fatalf("%d certificates", len(recs))
		}
		for _, r := range recs {
			if !r.Revoked() {
				t.Errorf("certificate %s of a terminated identity is live after the resume", r.Serial)
			}
		}
	})
}

// TestLockedPackageRevocationFailureIsKept: when the CA cannot revoke at
// the lockout, the failure is not dropped: it is logged as an error, and
// the set is left where the sweep finishes the revocation once the CA is
// back.
func TestLockedPackageRevocationFailureIsKept(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	setID := d.Manifest.GetCredentialSetId()
	h.issuer.failRevoke.Store(true)
	req.Password = wrongPassword(req.Password)
	for i := 0; i < DefaultMaxAttempts; i++ {
		_, err = h.svc.Redeem(ctx, req, nil)
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	if logs := h.logs.String(); !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, "the CA is unreachable") ||
		!strings.Contains(logs, setID) {
		t.Errorf("the failed revocation was not logged as an error naming the set:\n%s", logs)
	}
	if sets, _ := h.st.RevokedSetsWithLiveCertificates(ctx, 10); len(sets) != 1 || sets[0] != setID {
		t.Fatalf("the sweep would not finish the revocation: %v", sets)
	}
	h.issuer.failRevoke.Store(false)
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := h.st.CertificatesOfSet(ctx, setID)
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("%s is still live after the sweep", r.Serial)
		}
	}
}

func TestCancelAndRevokeRefuse(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	e := h.enroll(t, alice)
	if _, err := h.svc.Cancel(ctx, "no-such-activation", ""); !errors.Is(err, ErrNoSuch) {
		t.Errorf("unknown activation: got %v, want ErrNoSuch", err)
	}
	if _, err := h.svc.RevokeSet(ctx, "person-who-is-not-alice", e.en.CredentialSetID, issuance.ReasonCessationOfOperation); !errors.Is(err, ErrNotYours) {
		t.Errorf("another person's set: got %v, want ErrNotYours", err)
	}
	if cs, _ := h.st.CredentialSet(ctx, e.en.CredentialSetID); cs.State != store.SetPending {
		t.Errorf("a refused revocation changed the set to %s", cs.State)
	}
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Cancel(ctx, e.payload.ID, ""); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "only a pending one") {
		t.Errorf("a redeeming activation: got %v, want ErrPrecondition", err)
	}
	pending := h.enroll(t, h.signIn(t, "b@example.gov"))
	a, err := h.svc.Cancel(ctx, pending.payload.ID, "test")
	if err != nil || a.State != store.ActExpired {
		t.Fatalf("cancel: %v, state %s", err, a.State)
	}
	if _, err := h.svc.Redeem(ctx, pending.request(t), nil); !errors.Is(err, ErrExpired) {
		t.Errorf("a cancelled activation redeemed: %v", err)
	}
}

// racedStore lets another redemption take the activation just before
// this one, as a concurrent caller on another replica would.
type racedStore struct{ store.Store }

func (r racedStore) BeginRedemption(ctx context.Context, id, redemptionID string, now time.Time, l store.Lease) error {
	if err := r.Store.BeginRedemption(ctx, id, "the-other-caller", now, l); err != nil {
		return err
	}
	return store.ErrAlreadyUsed
}

// TestLostRaceIsRecorded: a redemption that loses the race to another one
// is refused and recorded as refused, with why (issue 14, point 8).
func TestLostRaceIsRecorded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Store = racedStore{c.Store} })
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); !errors.Is(err, ErrAlreadyRedeemed) && !errors.Is(err, ErrInProgress) {
		t.Fatalf("got %v, want a refusal: another call took the activation", err)
	}
	evs, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Action == "redeem" && ev.Outcome == "refused" && strings.Contains(ev.Detail, "lost the race") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d lost-race events recorded, want 1", n)
	}
}

// TestResumeIsRecorded: every delivery of a stored package is an audit
// event and a log line, a resume as much as the first (the package
// carries the escrowed key history), marked resumed; none carries a
// secret.
func TestResumeIsRecorded(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	current := renewable(t, h) // moves the clock
	rk := rekeyRequest(t, current)
	rd, err := h.svc.Rekey(ctx, rk, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	req := e.request(t)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, action, redemptionID string
		resume                     func() (*Delivery, error)
		secrets                    []string
	}{
		{"redeem", "redeem", d.RedemptionID, func() (*Delivery, error) { return h.svc.Redeem(ctx, req, nil) },
			[]string{req.Password, hex.EncodeToString(req.Secret)}},
		{"rekey", "rekey", rd.RedemptionID, func() (*Delivery, error) {
			again := rk
			again.RedemptionID = rd.RedemptionID
			return h.svc.Rekey(ctx, again, nil)
		}, []string{rk.Password, hex.EncodeToString(rk.Secret)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 {
				got, err := tc.resume()
				if err != nil || !got.Resumed {
					t.Fatalf("the resume: %v", err)
				}
			}
			evs, err := h.st.AuditEvents(ctx, 0, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, ev := range evs {
				if ev.Action == tc.action && ev.Outcome == "ok" && strings.Contains(ev.Detail, "redemption_id="+tc.redemptionID) && strings.Contains(ev.Detail, "resumed") {
					n++
				}
				for _, s := range tc.secrets {
					if strings.Contains(ev.Detail, s) {
						t.Fatalf("audit event %+v carries a secret", ev)
					}
				}
			}
			logs := h.logs.String()
			lines := 0
			for _, l := range strings.Split(logs, "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["redemption_id"] == tc.redemptionID && rec["resumed"] == true {
					lines++
				}
			}
			if n != 2 || lines != 2 {
				t.Fatalf("%d %s events and %d log lines marked resumed for 2 resumes, want 2 of each", n, tc.action, lines)
			}
			for _, s := range tc.secrets {
				if strings.Contains(logs, s) {
					t.Fatal("the log carries a secret")
				}
			}
		})
	}
}

// TestOtherKeysCannotLockAWaitingPackage: once a device's package is
// stored, a password is asked again on every resume. Someone with only a
// photo of the QR code could send five wrong passwords with keys of their
// own: the code locked and the package was revoked as keyCompromise,
// although without the device's keys nobody could ever have resumed it.
// A resume by other keys is now refused before any attempt is counted;
// the device confirms what it downloaded.
func TestOtherKeysCannotLockAWaitingPackage(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "photo@example.gov"))
	d, err := h.svc.Redeem(ctx, e.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range DefaultMaxAttempts + 1 {
		req := e.request(t) // new keys: not the device's
		req.Password = wrongPassword(req.Password)
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, errOtherDevice) {
			t.Fatalf("guess %d with other keys: %v, want errOtherDevice", i+1, err)
		}
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, e.payload.Secret, d.SHA256); err != nil {
		t.Fatalf("the device's confirmation after the guesses: %v", err)
	}
}
