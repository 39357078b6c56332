package session_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/store"
)

// pki is a software-key PIV issuer: a root that signs the cards' PIV
// Authentication certificates directly and answers OCSP for them (good for
// every serial) from an httptest server. It stands in for hsm-sim's
// responder so that the tests need no SoftHSM.
type pki struct {
	key    *ecdsa.PrivateKey
	root   *x509.Certificate
	pool   *x509.CertPool
	srv    *httptest.Server
	serial atomic.Int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "session test root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{key: key, root: root, pool: x509.NewCertPool()}
	p.pool.AddCert(root)
	p.serial.Store(100)
	p.srv = httptest.NewServer(http.HandlerFunc(p.ocsp))
	t.Cleanup(p.srv.Close)
	return p
}

// ocsp answers "good", signed by the root itself.
func (p *pki) ocsp(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	resp, err := ocsp.CreateResponse(p.root, p.root, ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, p.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// card is a software PIV card: its PIV Authentication key and certificate.
type card struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	uuid string
}

// newCard issues a PIV Authentication certificate with the Common
// Authentication policy and a FASC-N and card UUID in its SAN.
func (p *pki) newCard(t *testing.T) card {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := p.serial.Add(1)
	f := piv.FASCN{AgencyCode: "9999", SystemCode: "9999", CredentialNumber: fmt.Sprintf("%06d", n),
		CredentialSeries: "0", IndividualCredentialIssue: "1", PersonIdentifier: fmt.Sprintf("%010d", n),
		OrganizationalCategory: "1", OrganizationalIdentifier: "9999", PersonOrgAssociation: "1"}
	fascn, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	san, err := piv.MarshalSAN(piv.SAN{FASCN: fascn, UUIDs: []string{uuid}})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := x509.OIDFromInts(oidInts(piv.PolicyCommonAuthentication))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: fmt.Sprintf("card %d", n)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		Policies: []x509.OID{pol}, OCSPServer: []string{p.srv.URL + "/ocsp"}, ExtraExtensions: []pkix.Extension{san}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return card{key: key, cert: cert, uuid: uuid}
}

func oidInts(o []int) []uint64 {
	out := make([]uint64, len(o))
	for i, v := range o {
		out[i] = uint64(v)
	}
	return out
}

// sign answers challenge c with the card's key.
func (c card) sign(t *testing.T, ch store.Challenge) []byte {
	t.Helper()
	sig, err := ecdsa.SignASN1(rand.Reader, c.key, piv.ChallengeDigest(ch.GatewayID, ch.SessionID, ch.Challenge))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func (c card) proof(t *testing.T, ch store.Challenge) session.Proof {
	return session.Proof{SessionID: ch.SessionID, Certificates: [][]byte{c.cert.Raw}, Algorithm: piv.SigAuto,
		Signature: c.sign(t, ch), Source: "192.0.2.1"}
}

// clock is the service's clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	svc   *session.Service
	st    *store.SQLite
	pki   *pki
	clock *clock
}

const (
	challengeTTL = 2 * time.Minute
	sessionTTL   = 20 * time.Minute
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := newPKI(t)
	v, err := piv.NewVerifier(piv.Options{Roots: p.pool, OCSPTimeout: 5 * time.Second, CRLTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The store keeps microseconds: a clock on a microsecond makes
	// "one tick before expiry" exact.
	clk := &clock{t: time.Now().Truncate(time.Microsecond)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := session.New(session.Config{GatewayID: "gw-test", ChallengeTTL: challengeTTL, SessionTTL: sessionTTL, Store: st,
		Verifier: v, Audit: audit.New(st, log, clk.Now), Log: log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, st: st, pki: p, clock: clk}
}

// pivAuthEvents counts the "piv-auth" events in the audit log.
func (f *fixture) pivAuthEvents(t *testing.T) int {
	t.Helper()
	evs, err := f.st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Action == "piv-auth" && e.Outcome == "ok" {
			n++
		}
	}
	return n
}

// refusedEvents counts the sign-ins recorded as refused.
func (f *fixture) refusedEvents(t *testing.T) int {
	t.Helper()
	evs, err := f.st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Action == "piv-auth" && e.Outcome == "refused" && e.Source != "" && strings.Contains(e.Detail, "refused: ") {
			n++
		}
	}
	return n
}

func TestNewRefusesMissingParts(t *testing.T) {
	if _, err := session.New(session.Config{}); err == nil {
		t.Fatal("New with an empty Config: no error")
	}
}

// TestCompleteRejects: every refusal of Complete, and that a refused
// Complete leaves the challenge spent and no session behind.
func TestCompleteRejects(t *testing.T) {
	tests := []struct {
		name string
		// proof makes the proof to send for challenge ch from card c.
		proof func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof
		want  error
		// spent: the challenge is used after the refusal (false when the
		// refusal happens before the challenge is consumed).
		spent bool
	}{
		{"unknown session id", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.SessionID = "no-such-session"
			return p
		}, session.ErrUnknownChallenge, false},
		{"replayed challenge", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			if _, err := f.svc.Complete(context.Background(), p); err != nil {
				t.Fatalf("first Complete: %v", err)
			}
			return p
		}, session.ErrReplay, true},
		{"expired challenge", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			f.clock.Add(challengeTTL) // at ExpiresAt: expired
			return c.proof(t, ch)
		}, session.ErrChallengeExpired, true},
		{"TLS card is another card", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.TLSCard = f.pki.newCard(t).cert
			return p
		}, session.ErrNotTLSCard, true},
		{"signature over another challenge", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			other := ch
			other.SessionID = "another"
			p.Signature = c.sign(t, other)
			return p
		}, piv.ErrBadSignature, true},
		{"signature by another card's key", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.Signature = f.pki.newCard(t).sign(t, ch)
			return p
		}, piv.ErrBadSignature, true},
		{"empty signature", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.Signature = nil
			return p
		}, piv.ErrBadSignature, true},
		{"malformed certificate", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.Certificates = [][]byte{[]byte("\x30\x82garbage")}
			return p
		}, piv.ErrMalformed, true},
		{"malformed intermediate", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			p := c.proof(t, ch)
			p.Certificates = append(p.Certificates, []byte{0x30, 0x00})
			return p
		}, piv.ErrMalformed, true},
		{"terminated card", func(t *testing.T, f *fixture, c card, ch store.Challenge) session.Proof {
			if err := f.st.Terminate(context.Background(), store.Termination{Selector: store.IdentitySelector{CardUUID: c.uuid},
				TerminatedAt: f.clock.Now()}); err != nil {
				t.Fatal(err)
			}
			return c.proof(t, ch)
		}, session.ErrTerminated, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			c := f.pki.newCard(t)
			ch, err := f.svc.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			p := tc.proof(t, f, c, ch)
			before, refusedBefore := f.pivAuthEvents(t), f.refusedEvents(t)
			o, err := f.svc.Complete(ctx, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Complete: err = %v, want %v", err, tc.want)
			}
			if o != nil {
				t.Fatalf("Complete refused with a session: %+v", o)
			}
			if n := f.pivAuthEvents(t); n != before {
				t.Errorf("%d piv-auth audit events after the refusal, want %d", n, before)
			}
			// A refusal after the challenge was spent is recorded, with
			// its reason and source (issue 14, point 8).
			// (Malformed certificates are only logged: anyone can send
			// them, so they must not grow the log.)
			recorded := tc.spent && tc.want != session.ErrReplay && tc.want != piv.ErrMalformed
			if want := refusedBefore + map[bool]int{true: 1}[recorded]; f.refusedEvents(t) != want {
				t.Errorf("%d refused sign-ins recorded, want %d", f.refusedEvents(t), want)
			}
			// The challenge is spent (or still unused) whatever the refusal.
			_, err = f.svc.Complete(ctx, c.proof(t, ch))
			switch {
			case tc.spent && !errors.Is(err, session.ErrReplay):
				t.Fatalf("a good proof after the refusal: err = %v, want ErrReplay (challenge spent)", err)
			case !tc.spent && err != nil && !errors.Is(err, session.ErrTerminated):
				t.Fatalf("a good proof after the refusal: err = %v, want success (challenge unused)", err)
			}
		})
	}
}

// TestCompleteJustBeforeExpiry: the challenge is good until ExpiresAt,
// exclusive.
func TestCompleteJustBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.pki.newCard(t)
	ch, err := f.svc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ch.ExpiresAt.Sub(ch.CreatedAt); got != challengeTTL {
		t.Fatalf("challenge lives %s, want %s", got, challengeTTL)
	}
	// One tick before expiry it is still good.
	f.clock.Add(challengeTTL - time.Microsecond)
	if _, err := f.svc.Complete(ctx, c.proof(t, ch)); err != nil {
		t.Fatalf("Complete just before expiry: %v", err)
	}
}

// TestCompleteSucceeds: a good proof opens a session of SessionTTL, keeps
// only the token's hash, and records one piv-auth event.
func TestCompleteSucceeds(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.pki.newCard(t)
	ch, err := f.svc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := c.proof(t, ch)
	p.TLSCard = c.cert // the same card: allowed
	o, err := f.svc.Complete(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(c.cert.Raw)
	if o.Token == "" || o.Fingerprint != hex.EncodeToString(fp[:]) || o.Identity.CardUUID != c.uuid || o.Identity.PersonID == "" ||
		!o.ExpiresAt.Equal(f.clock.Now().Add(sessionTTL)) || !o.Leaf.Equal(c.cert) {
		t.Fatalf("opened %+v", o)
	}
	sess, err := f.svc.Lookup(ctx, o.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sess.TokenHash != session.TokenHash(o.Token) || sess.TokenHash == o.Token || sess.SessionID != ch.SessionID ||
		sess.CardUUID != c.uuid || sess.PersonID != o.Identity.PersonID || sess.SourceAddr != "192.0.2.1" {
		t.Fatalf("stored session %+v", sess)
	}
	if n := f.pivAuthEvents(t); n != 1 {
		t.Fatalf("%d piv-auth audit events, want 1", n)
	}
}

// TestLookupRejects: a token that is unknown, expired, signed out, or used
// over another card's TLS connection finds no session.
func TestLookupRejects(t *testing.T) {
	tests := []struct {
		name string
		// lookup returns the token and TLS card to look up with, after
		// doing what the case needs to the session opened with card c.
		lookup func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate)
		want   error
	}{
		{"unknown token", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			return "not-a-token", nil
		}, session.ErrSessionGone},
		{"the token's hash as the token", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			return session.TokenHash(o.Token), nil
		}, session.ErrSessionGone},
		{"expired session", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			f.clock.Add(sessionTTL)
			return o.Token, nil
		}, session.ErrSessionGone},
		{"expired session, own TLS card", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			f.clock.Add(sessionTTL + time.Second)
			return o.Token, c.cert
		}, session.ErrSessionGone},
		{"another card's TLS certificate", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			return o.Token, f.pki.newCard(t).cert
		}, session.ErrOtherCard},
		{"signed out", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			if err := f.svc.End(context.Background(), o.Token); err != nil {
				t.Fatal(err)
			}
			return o.Token, nil
		}, session.ErrSessionGone},
		// The portal's sessions are kept under the hash of a prefixed
		// cookie: the prefixed cookie as a gRPC token found them, so a
		// portal-role caller with a stolen cookie needed no card.
		{"a portal cookie, prefixed as the store hashes it", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			po, err := f.svc.SignInTLS(context.Background(), c.cert, nil, "192.0.2.1")
			if err != nil {
				t.Fatal(err)
			}
			return "credgw-portal-session\x00" + po.Token, nil
		}, session.ErrSessionGone},
		// A terminated identity's token went on listing and revoking its
		// credentials until it expired (the portal's ended at once).
		{"terminated since the sign-in", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			if err := f.st.Terminate(context.Background(), store.Termination{Selector: store.IdentitySelector{CardUUID: c.uuid}, TerminatedAt: f.clock.Now()}); err != nil {
				t.Fatal(err)
			}
			return o.Token, c.cert
		}, session.ErrTerminated},
		{"signed out, own TLS card", func(t *testing.T, f *fixture, c card, o *session.Opened) (string, *x509.Certificate) {
			if err := f.svc.End(context.Background(), o.Token); err != nil {
				t.Fatal(err)
			}
			return o.Token, c.cert
		}, session.ErrSessionGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			c := f.pki.newCard(t)
			ch, err := f.svc.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			o, err := f.svc.Complete(ctx, c.proof(t, ch))
			if err != nil {
				t.Fatal(err)
			}
			// Live before the case acts.
			if _, err := f.svc.Lookup(ctx, o.Token, c.cert); err != nil {
				t.Fatalf("Lookup of the fresh session: %v", err)
			}
			token, tls := tc.lookup(t, f, c, o)
			sess, err := f.svc.Lookup(ctx, token, tls)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Lookup: err = %v, want %v", err, tc.want)
			}
			if sess.TokenHash != "" || sess.PersonID != "" {
				t.Fatalf("Lookup refused with a session: %+v", sess)
			}
		})
	}
}

// TestLookupJustBeforeExpiry: the session lives until ExpiresAt, exclusive.
func TestLookupJustBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.pki.newCard(t)
	ch, err := f.svc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o, err := f.svc.Complete(ctx, c.proof(t, ch))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Add(sessionTTL - time.Microsecond)
	if _, err := f.svc.Lookup(ctx, o.Token, c.cert); err != nil {
		t.Fatalf("Lookup just before expiry: %v", err)
	}
	f.clock.Add(time.Microsecond)
	if _, err := f.svc.Lookup(ctx, o.Token, c.cert); !errors.Is(err, session.ErrSessionGone) {
		t.Fatalf("Lookup at expiry: err = %v, want ErrSessionGone", err)
	}
}

// TestUnboundDigitalSignatureIgnored: a Digital Signature certificate with
// the card's subject name but from an unrelated CA (not the 9A's, no
// sibling, no card UUID) gives no email of record, and does not fail the
// sign-in; the audit log says it was refused and why, as a namesake's
// certificate sent with a card may be hostile.
func TestUnboundDigitalSignatureIgnored(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.pki.newCard(t)
	now := time.Now()
	anyPolicy, _ := x509.OIDFromInts([]uint64{2, 5, 29, 32, 0})
	issue := func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		tmpl.SerialNumber = big.NewInt(f.pki.serial.Add(1))
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert
	}
	xKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	x := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "an unrelated program's CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, Policies: []x509.OID{anyPolicy}}, f.pki.root, xKey.Public(), f.pki.key)
	yKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	y := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "its email CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, Policies: []x509.OID{anyPolicy}}, x, yKey.Public(), xKey)
	hw, _ := x509.OIDFromInts(oidInts(piv.PolicyCommonHardware))
	nsKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	namesake := issue(&x509.Certificate{RawSubject: c.cert.RawSubject, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{"someone.else@example.gov"},
		Policies: []x509.OID{hw}}, y, nsKey.Public(), yKey)
	ch, err := f.svc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := c.proof(t, ch)
	p.Certificates = append(p.Certificates, x.Raw, y.Raw)
	p.DigitalSignature = namesake.Raw
	o, err := f.svc.Complete(ctx, p)
	if err != nil {
		t.Fatalf("the sign-in failed over an unbound 9C: %v", err)
	}
	if o.Identity.Email != "" {
		t.Fatalf("the email of record is %q, from a namesake's certificate", o.Identity.Email)
	}
	// The session says why it has no email (enrollment tells the person).
	if o.EmailSource != session.EmailSourceUnbound {
		t.Errorf("email source %q, want %q", o.EmailSource, session.EmailSourceUnbound)
	}
	evs, err := f.st.AuditEvents(ctx, 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Action == "digital-signature" && e.Outcome == "refused" && strings.Contains(e.Detail, "not shown to be this card's")
	}
	if !found {
		t.Fatalf("no refused digital-signature event in the audit log: %+v", evs)
	}
}
