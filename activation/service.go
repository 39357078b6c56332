package activation

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/credgw/credgw/activation/attest"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/store"
)

// Errors a caller (the gRPC edge) maps to codes.
var (
	// ErrNotAccepted: unknown activation id or wrong secret. It never says
	// which.
	ErrNotAccepted = errors.New("activation: activation code not accepted")
	// ErrLocked: too many wrong passwords; the person enrolls again.
	ErrLocked = errors.New("activation: locked after too many wrong passwords; enroll again with the card")
	// ErrExpired: the activation's lifetime passed, or it was ended.
	ErrExpired = errors.New("activation: the activation code expired or was ended (cancelled, or its credentials revoked); enroll again with the card")
	// ErrAlreadyRedeemed: single use.
	ErrAlreadyRedeemed = errors.New("activation: the activation code was redeemed already")
	// ErrInProgress: another call is issuing right now.
	ErrInProgress = errors.New("activation: the credentials are being issued; retry in a moment to resume")
	// ErrAuditUnavailable: a package carrying escrowed keys (a key
	// recovery) is delivered only once its audit event is written; the
	// package stays stored and a retry resumes it.
	ErrAuditUnavailable = errors.New("activation: the audit log cannot record this delivery of escrowed keys, and none is delivered unrecorded; retry in a moment to resume")
	// ErrSessionTooOld: PKI-AUTH is more than 20 minutes old.
	ErrSessionTooOld = errors.New("activation: the PIV session is too old; sign in with the card again")
	// ErrTerminated: the PIV identity (card or person) has been terminated.
	ErrTerminated = session.ErrTerminated
	// ErrCap: the person has the most credential sets allowed.
	ErrCap = errors.New("activation: the person has the maximum number of active derived credentials")
	// ErrInvalid: a request field is wrong; the message says which.
	ErrInvalid = errors.New("activation: invalid request")
	// ErrHashMismatch: Confirm with another SHA-256 than the package's.
	ErrHashMismatch = errors.New("activation: the SHA-256 does not match the package sent")
)

// escrowDeliveryTold refuses the delivery of escrowed keys by a gateway
// that sends no notifications: a subscriber gets their escrowed keys without
// two-person control only if every attempt, failed or not, is told to them
// (Common Policy §4.12.1, "no notify address ⇒ no automated recovery").
func (s *Service) escrowDeliveryTold() error {
	if s.cfg.Notify.Enabled() {
		return nil
	}
	return fmt.Errorf("%w: this credential type delivers an escrowed encryption key, which credgw does only where every attempt is told to the person "+
		"(Common Policy §4.12.1), and this gateway sends no notifications: its operators must configure notifications (smtp, webhook or file) "+
		"in credgw.yaml (credgw config check says so too)", ErrPrecondition)
}

// WrongPasswordError is a wrong password with the attempts left.
type WrongPasswordError struct{ AttemptsLeft int }

func (e *WrongPasswordError) Error() string {
	return fmt.Sprintf("activation: wrong password; %s left before the code locks for good", attemptsLeft(e.AttemptsLeft))
}

// attemptsLeft says "1 attempt", "4 attempts".
func attemptsLeft(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// StuckRedemption is how long a redemption may run without storing its
// package before the sweep gives the activation back.
const StuckRedemption = 5 * time.Minute

// EscrowKeyGrace: the sweep deletes an escrowed key never certified once
// no pending or redeeming set holds it and it is older than this (a key is
// made just before the set that holds it is written, or given to it).
const EscrowKeyGrace = StuckRedemption

// MaxKeyHistory is how many earlier key-management keys a package carries.
const MaxKeyHistory = 20

// Defaults of the enrollment section (credgw.yaml), defined here only.
const (
	DefaultLifetime      = 10 * time.Minute
	DefaultSessionMaxAge = 20 * time.Minute
	DefaultConfirmWindow = time.Hour
	DefaultMaxAttempts   = 5
	DefaultMaxSets       = 5
)

// DefaultCredentialType is the mobile smart credential: derived PIV
// authentication, signature and encryption.
const DefaultCredentialType = "mobile-smart-credential"

// Config configures the service.
type Config struct {
	Store  store.Store
	Issuer issuance.Issuer
	Escrow *issuance.Escrow
	// PreviousCAs are the issuing CA's certificates from before a re-key
	// (ca.previous_certificate_files): earlier escrowed keys certified
	// under them are delivered with the one that signed them.
	PreviousCAs []*x509.Certificate
	// RetiredCAs are the certificates of the issuing CA's earlier keys
	// that still answer for their certificates (ca.retired): a derived
	// credential under one renews onto the key in use, and its revocation
	// reaches that key's CRL. (A key only in PreviousCAs cannot revoke
	// what it issued, so its certificates do not renew.)
	RetiredCAs []*x509.Certificate
	// Gateway is the address devices dial (QR gw=); Pin the SHA-256 of the
	// gateway's TLS trust anchor certificate (QR pin=).
	Gateway string
	Pin     []byte
	// PasswordDigits (default 8), Lifetime (10m), MaxAttempts (5, ≤ 10),
	// SessionMaxAge (20m), MaxSets per person (5), ConfirmWindow (1h).
	PasswordDigits int
	Lifetime       time.Duration
	MaxAttempts    int
	SessionMaxAge  time.Duration
	MaxSets        int
	ConfirmWindow  time.Duration
	// CredentialTypes maps a type name to its profiles.
	CredentialTypes map[string][]issuance.Profile
	// RenewalPercent is how far into its lifetime a derived PIV
	// Authentication certificate may be re-keyed (default 80).
	RenewalPercent int
	// Pepper is the gateway's 32-byte secret (issuance.Escrow.GatewaySecret:
	// sealed under the KEK, shared by the replicas) that keys the password
	// verifier and the package seal with the QR secret, so that a copy of
	// the database plus the QR text tests no password offline.
	Pepper []byte
	// PepperSince is when the pepper was made: verifiers and packages made
	// before it are still accepted without it, only until they could have
	// ended (Lifetime, then ConfirmWindow, after PepperSince). It comes
	// sealed with the pepper (issuance.Escrow.GatewaySecret); zero when
	// not known, and then nothing is accepted without the pepper.
	PepperSince time.Time
	// BindingSince is when verifiers began to be bound to their set
	// (keyedFor); sealed like PepperSince. Those made before it, keyed
	// with the pepper only, are accepted until Lifetime after it; zero:
	// none is.
	BindingSince time.Time
	// Verifier checks the card again before an enrollment, a redemption
	// and a renewal issue anything (path, policy, a status no older than
	// piv.max_status_age): a *piv.Verifier.
	Verifier CardChecker
	Audit    *audit.Log
	Notify   *notify.Outbox
	Log      *slog.Logger
	Now      func() time.Time
	// Attest verifies device key attestations (nil: none is accepted);
	// RefuseUnattested refuses a device key without one (otherwise it is
	// issued as software-backed, …3.40).
	Attest           *attest.Policy
	RefuseUnattested bool
	// Lockout, if set, is called each time wrong passwords lock an
	// activation code (the gateway counts them:
	// credgw_activation_lockouts_total).
	Lockout func()
}

// CardChecker checks a PIV Authentication certificate now: path, policy
// and revocation status (*piv.Verifier).
type CardChecker interface {
	VerifyPIVAuth(ctx context.Context, leaf *x509.Certificate, intermediates []*x509.Certificate) (*piv.Result, error)
}

// checkCard checks the card behind a credential set (its kept PIV
// Authentication certificate) before anything is issued on it.
func (s *Service) checkCard(ctx context.Context, certSHA256 string) error {
	pc, err := s.cfg.Store.PIVCertificate(ctx, certSHA256)
	if err != nil {
		return err
	}
	card, err := x509.ParseCertificate(pc.DER)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Verifier.VerifyPIVAuth(ctx, card, nil); err != nil {
		return fmt.Errorf("the card's PIV Authentication certificate: %w", err)
	}
	return nil
}

// keyed is the QR secret keyed with the gateway's pepper: what the
// password verifier and the package seal are derived from (with the
// password), so that neither can be tested without the pepper.
func (s *Service) keyed(secret []byte) []byte {
	m := hmac.New(sha256.New, s.cfg.Pepper)
	m.Write([]byte("credgw-activation-secret-v2\x00"))
	m.Write(secret)
	return m.Sum(nil)
}

// verifier is what the store keeps to check a password: bound to the
// credential set the code unlocks (setBinding), so that the code opens
// that set and no other, as it was made.
func (s *Service) verifier(secret []byte, password string, cs store.CredentialSet) []byte {
	return code.Verifier(s.keyedFor(secret, cs), password)
}

// keyedFor is the QR secret keyed with the pepper and bound to cs: a
// database writer who moves a set to another person (its identity
// columns) or an activation to another set has a verifier that no longer
// matches, and without the pepper cannot make one that does. Before,
// someone with their own card and write access to the database could
// point their own pending set at a colleague and redeem their own code
// for certificates in the colleague's name and the colleague's escrowed
// key history.
func (s *Service) keyedFor(secret []byte, cs store.CredentialSet) []byte {
	m := hmac.New(sha256.New, s.cfg.Pepper)
	m.Write([]byte("credgw-activation-secret-v3\x00"))
	m.Write(setBinding(cs))
	m.Write(secret)
	return m.Sum(nil)
}

// setBinding is what of a credential set its code is bound to: the set,
// the person, the card and the names its certificates carry, the
// credential type and the set it renews. None of these changes after the
// enrollment (the escrow key id does: a failed issuance rotates it, and
// the escrowed key is bound to the person by its own AAD).
func setBinding(cs store.CredentialSet) []byte {
	var b []byte
	for _, f := range [][]byte{[]byte(cs.ID), []byte(cs.PersonID), []byte(cs.PIVCertSHA256), cs.FASCN, []byte(cs.CardUUID),
		cs.RawSubject, []byte(cs.Email), []byte(cs.UPN), []byte(cs.CredentialType), []byte(cs.RenewsSetID)} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// sameBinding reports whether two reads of a set agree on what its code
// is bound to.
func sameBinding(a, b store.CredentialSet) bool { return bytes.Equal(setBinding(a), setBinding(b)) }

// passwordMatches checks a password against a stored verifier. A verifier
// stored before the pepper existed (code.Verifier of the bare secret)
// still matches for an activation made before it, within Lifetime of the
// pepper's making: the activations pending while a gateway is upgraded.
// Afterwards, never: a row written into the database by someone without
// the KEK redeems nothing.
//
// A verifier keyed with the pepper but bound to no set (credgw before
// BindingSince) matches likewise for an activation made before
// BindingSince, within Lifetime of it.
func (s *Service) passwordMatches(a store.Activation, cs store.CredentialSet, secret []byte, password string) bool {
	if code.CheckPassword(s.keyedFor(secret, cs), password, a.Verifier) {
		return true
	}
	// A code made before migration 00021 folded person ids (or by a
	// replica of the older release while the upgrade rolls) is bound to
	// the id as the card spelled it: the set's email address or UPN.
	for _, spelled := range []string{cs.Email, cs.UPN} {
		if spelled != "" && spelled != cs.PersonID && piv.FoldPersonID(spelled) == cs.PersonID {
			was := cs
			was.PersonID = spelled
			if code.CheckPassword(s.keyedFor(secret, was), password, a.Verifier) {
				return true
			}
		}
	}
	unbound := a.CreatedAt.Before(s.cfg.BindingSince) && s.cfg.Now().Before(s.cfg.BindingSince.Add(s.cfg.Lifetime))
	if unbound && code.CheckPassword(s.keyed(secret), password, a.Verifier) {
		return true
	}
	legacy := a.CreatedAt.Before(s.cfg.PepperSince) && s.cfg.Now().Before(s.cfg.PepperSince.Add(s.cfg.Lifetime))
	return legacy && code.CheckPassword(secret, password, a.Verifier)
}

// legacySeal reports whether a package may have been sealed before the
// pepper existed (a gateway upgraded while it waited for its
// confirmation).
func (s *Service) legacySeal(a store.Activation) bool {
	return a.CreatedAt.Before(s.cfg.PepperSince) && s.cfg.Now().Before(s.cfg.PepperSince.Add(s.cfg.Lifetime+s.cfg.ConfirmWindow))
}

// Service runs enrollments and redemptions.
type Service struct {
	cfg      Config
	refusals onceSet
	// holder names this process in the claims it makes (random per
	// start: a restarted process does not renew a dead one's leases).
	holder string
	// issuing holds the redemption ids of the claims this process's calls
	// are issuing now: KeepLeases renews those and no other, so that a
	// claim a call left behind lapses.
	issuing sync.Map
}

// onceSet remembers keys, the newest maxOnce of them: what was recorded
// once is not recorded again while it is remembered.
type onceSet struct {
	mu    sync.Mutex
	seen  map[string]struct{}
	order []string
}

const maxOnce = 10000

// first reports whether key is new, and remembers it.
func (o *onceSet) first(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[key]; ok {
		return false
	}
	if o.seen == nil {
		o.seen = map[string]struct{}{}
	}
	if len(o.order) >= maxOnce {
		delete(o.seen, o.order[0])
		o.order = o.order[1:]
	}
	o.seen[key] = struct{}{}
	o.order = append(o.order, key)
	return true
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Issuer == nil || cfg.Escrow == nil || cfg.Verifier == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("activation: needs a store, an issuer, an escrow, a card verifier, an audit log and a logger")
	}
	if len(cfg.Pepper) != 32 {
		return nil, errors.New("activation: needs the gateway's 32-byte pepper (issuance.Escrow.GatewaySecret)")
	}
	if cfg.Gateway == "" || len(cfg.Pin) != sha256.Size {
		return nil, errors.New("activation: needs the gateway address and the SHA-256 pin of its TLS anchor")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Lifetime, DefaultLifetime)
	def(&cfg.SessionMaxAge, DefaultSessionMaxAge)
	def(&cfg.ConfirmWindow, DefaultConfirmWindow)
	if cfg.PasswordDigits == 0 {
		cfg.PasswordDigits = code.DefaultPasswordDigits
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxSets == 0 {
		cfg.MaxSets = DefaultMaxSets
	}
	if cfg.RenewalPercent == 0 {
		cfg.RenewalPercent = DefaultRenewalPercent
	}
	switch {
	case cfg.PasswordDigits < code.MinPasswordDigits || cfg.PasswordDigits > code.MaxPasswordDigits:
		return nil, fmt.Errorf("activation: password digits %d: 6 to 12", cfg.PasswordDigits)
	case cfg.MaxAttempts < 1 || cfg.MaxAttempts > 10:
		return nil, fmt.Errorf("activation: max attempts %d: 1 to 10 (SP 800-157r1 §3.1.4)", cfg.MaxAttempts)
	case cfg.Lifetime > 10*time.Minute:
		return nil, fmt.Errorf("activation: lifetime %s: at most 10 minutes (SP 800-63B-4 §6.1.2.4)", cfg.Lifetime)
	case cfg.SessionMaxAge > 20*time.Minute:
		return nil, fmt.Errorf("activation: session age %s: at most 20 minutes", cfg.SessionMaxAge)
	}
	if cfg.CredentialTypes == nil {
		cfg.CredentialTypes = map[string][]issuance.Profile{DefaultCredentialType: issuance.Profiles()}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	holder, err := randomID()
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, holder: holder}, nil
}

// DeviceProfiles are the profiles whose keys the device makes (CSRs): the
// key-management key is made and escrowed by credgw.
func (s *Service) DeviceProfiles(credentialType string) ([]issuance.Profile, error) {
	ps, ok := s.cfg.CredentialTypes[credentialType]
	if !ok {
		return nil, fmt.Errorf("%w: credential type %q is not configured", ErrInvalid, credentialType)
	}
	var out []issuance.Profile
	for _, p := range ps {
		if p != issuance.KeyManagement {
			out = append(out, p)
		}
	}
	return out, nil
}

// CredentialTypes lists the configured credential types.
func (s *Service) CredentialTypes() []string {
	out := make([]string, 0, len(s.cfg.CredentialTypes))
	for t := range s.cfg.CredentialTypes {
		out = append(out, t)
	}
	return out
}
