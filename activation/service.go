package activation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
)

// Errors a caller (the gRPC edge) maps to codes.
var (
	// ErrNotAccepted: unknown activation id or wrong secret. It never says
	// which.
	ErrNotAccepted = errors.New("activation: activation code not accepted")
	// ErrLocked: too many wrong passwords; the person enrolls again.
	ErrLocked = errors.New("activation: locked after too many wrong passwords; enroll again with the card")
	// ErrExpired: the activation's lifetime passed.
	ErrExpired = errors.New("activation: the activation code expired; enroll again with the card")
	// ErrAlreadyRedeemed: single use.
	ErrAlreadyRedeemed = errors.New("activation: the activation code was redeemed already")
	// ErrInProgress: another call is issuing right now.
	ErrInProgress = errors.New("activation: the credentials are being issued; retry in a moment to resume")
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

// WrongPasswordError is a wrong password with the attempts left.
type WrongPasswordError struct{ AttemptsLeft int }

func (e *WrongPasswordError) Error() string {
	return fmt.Sprintf("activation: wrong password; %d attempts left before the code locks for good", e.AttemptsLeft)
}

// StuckRedemption is how long a redemption may run without storing its
// package before the sweep gives the activation back.
const StuckRedemption = 5 * time.Minute

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
	// Verifier re-checks the card behind a renewal.
	Verifier *piv.Verifier
	Audit    *audit.Log
	Notify   *notify.Outbox
	Log      *slog.Logger
	Now      func() time.Time
}

// Service runs enrollments and redemptions.
type Service struct{ cfg Config }

// New checks cfg and fills in defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Issuer == nil || cfg.Escrow == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("activation: needs a store, an issuer, an escrow, an audit log and a logger")
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
	return &Service{cfg: cfg}, nil
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

// Enrollment is what the person sees: the QR code and the password.
type Enrollment struct {
	ActivationID    string
	CredentialSetID string
	Payload         string
	PNG             []byte
	Text            string
	Password        string
	ExpiresAt       time.Time
	CredentialType  string
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func validName(n string) bool {
	if len([]rune(n)) < 1 || len([]rune(n)) > 64 {
		return false
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// enroll turns a fresh PIV session into an activation. The escrowed
// encryption key is made now, before anything is issued.
func (s *Service) enroll(ctx context.Context, sess store.PIVSession, identityName, credentialType string) (*Enrollment, error) {
	now := s.cfg.Now()
	if credentialType == "" {
		credentialType = DefaultCredentialType
	}
	profiles, ok := s.cfg.CredentialTypes[credentialType]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: credential type %q is not configured", ErrInvalid, credentialType)
	case !validName(identityName):
		return nil, fmt.Errorf("%w: identity name: 1 to 64 printable characters, e.g. \"Entrust Derived Cred\"", ErrInvalid)
	case now.Sub(sess.CreatedAt) > s.cfg.SessionMaxAge || !now.Before(sess.ExpiresAt):
		return nil, ErrSessionTooOld
	}
	if err := s.checkNotTerminated(ctx, sess.FASCN, sess.CardUUID, sess.PersonID); err != nil {
		return nil, err
	}
	for _, p := range profiles {
		if p != issuance.DerivedPIVAuth && sess.Email == "" {
			return nil, fmt.Errorf("%w: %s", issuance.ErrNoEmail, "the S/MIME certificates need the email of record, and the card gave none")
		}
	}
	n, err := s.cfg.Store.CountLiveSets(ctx, sess.PersonID)
	if err != nil {
		return nil, err
	}
	if n >= s.cfg.MaxSets {
		return nil, fmt.Errorf("%w (%d); revoke one (lost or replaced device) first", ErrCap, s.cfg.MaxSets)
	}
	cert, err := s.cfg.Store.PIVCertificate(ctx, sess.CertSHA256)
	if err != nil {
		return nil, err
	}
	pivCert, err := x509.ParseCertificate(cert.DER)
	if err != nil {
		return nil, err
	}
	escrowID := ""
	for _, p := range profiles {
		if p == issuance.KeyManagement {
			k, err := s.cfg.Escrow.NewKey(ctx, sess.PersonID)
			if err != nil {
				return nil, err
			}
			escrowID = k.ID
		}
	}
	secret, err := code.NewSecret()
	if err != nil {
		return nil, err
	}
	password, err := code.NewPassword(s.cfg.PasswordDigits)
	if err != nil {
		return nil, err
	}
	actID, err := randomID()
	if err != nil {
		return nil, err
	}
	setID, err := randomID()
	if err != nil {
		return nil, err
	}
	expires := now.Add(s.cfg.Lifetime)
	err = s.cfg.Store.CreateEnrollment(ctx, store.CredentialSet{
		ID: setID, PersonID: sess.PersonID, PIVCertSHA256: sess.CertSHA256, FASCN: sess.FASCN, CardUUID: sess.CardUUID,
		RawSubject: pivCert.RawSubject, Email: sess.Email, UPN: sess.UPN, IdentityName: identityName,
		CredentialType: credentialType, EscrowKeyID: escrowID, State: store.SetPending, CreatedAt: now,
	}, store.Activation{
		ID: actID, LookupHash: code.LookupHash(secret), Verifier: code.Verifier(secret, password),
		MaxAttempts: s.cfg.MaxAttempts, CreatedAt: now, ExpiresAt: expires,
	}, s.cfg.MaxSets)
	if errors.Is(err, store.ErrLimit) {
		return nil, fmt.Errorf("%w (%d); revoke one (lost or replaced device) first", ErrCap, s.cfg.MaxSets)
	}
	if err != nil {
		return nil, err
	}
	payload := code.Payload{Gateway: s.cfg.Gateway, ID: actID, Secret: secret, Pin: s.cfg.Pin}.String()
	png, text, err := code.QR(payload, -6) // 6 pixels a module: integer scaling decodes reliably
	if err != nil {
		return nil, err
	}
	return &Enrollment{ActivationID: actID, CredentialSetID: setID, Payload: payload, PNG: png, Text: text,
		Password: password, ExpiresAt: expires, CredentialType: credentialType}, nil
}

// RedeemRequest is what the device sends.
type RedeemRequest struct {
	ActivationID string
	Secret       []byte
	Password     string
	Device       string // JSON description, stored
	CSRs         map[issuance.Profile]*x509.CertificateRequest
	Hardware     bool
}

// Delivery is a credential package ready to stream.
type Delivery struct {
	RedemptionID string
	Manifest     *credgwv1.Manifest
	Package      []byte // serialised CredentialPackage
	SHA256       []byte
	// Resumed is true when the package was built by an earlier call.
	Resumed bool
}

// Progress reports a stage ("issuing 1/3").
type Progress func(stage credgwv1.Stage, current, total int, message string)

// check finds the activation and checks the secret and the password,
// counting a wrong password.
func (s *Service) check(ctx context.Context, id string, secret []byte, password string) (store.Activation, string, error) {
	a, err := s.cfg.Store.ActivationByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return a, "", ErrNotAccepted
	}
	if err != nil {
		return a, "", err
	}
	if subtle.ConstantTimeCompare([]byte(code.LookupHash(secret)), []byte(a.LookupHash)) != 1 {
		return a, "", ErrNotAccepted
	}
	switch a.State {
	case store.ActLocked:
		return a, "", ErrLocked
	case store.ActExpired:
		return a, "", ErrExpired
	case store.ActCompleted:
		return a, "", ErrAlreadyRedeemed
	case store.ActPending:
		if !s.cfg.Now().Before(a.ExpiresAt) {
			return a, "", ErrExpired
		}
	}
	pw, ferr := code.NormalizePassword(password)
	if ferr != nil || !code.CheckPassword(secret, pw, a.Verifier) {
		n, state, err := s.cfg.Store.RecordFailedAttempt(ctx, a.ID)
		switch {
		case errors.Is(err, store.ErrAlreadyUsed):
			return a, "", ErrAlreadyRedeemed
		case err != nil:
			return a, "", err
		case state == store.ActLocked:
			if a.State == store.ActRedeeming {
				// Locked with a package waiting: what it carried is revoked
				// (someone is guessing). The set is abandoned by the lock,
				// so a revocation that fails here is finished by the sweep.
				if err := s.revokeSet(context.WithoutCancel(ctx), a.CredentialSetID, time.Time{}, issuance.ReasonKeyCompromise); err != nil {
					s.cfg.Log.Error("locked with a package waiting: revoking what it carried failed; the sweep retries",
						"credential_set_id", a.CredentialSetID, "cause", err.Error())
				}
			}
			return a, "", ErrLocked
		}
		return a, "", &WrongPasswordError{AttemptsLeft: a.MaxAttempts - n}
	}
	return a, pw, nil
}

// redeem checks the activation and either builds the package (issuing the
// certificates, once) or returns the one an earlier call built (resume).
func (s *Service) redeem(ctx context.Context, req RedeemRequest, progress Progress) (*Delivery, error) {
	if progress == nil {
		progress = func(credgwv1.Stage, int, int, string) {}
	}
	a, password, err := s.check(ctx, req.ActivationID, req.Secret, req.Password)
	if err != nil {
		return nil, err
	}
	aead, err := code.SealKey(req.Secret, password)
	if err != nil {
		return nil, err
	}
	if a.State == store.ActRedeeming {
		if a.Package == nil {
			return nil, ErrInProgress
		}
		if err := s.checkSetNotTerminated(ctx, a.CredentialSetID); err != nil {
			return nil, err
		}
		return s.resume(a, aead)
	}
	progress(credgwv1.Stage_STAGE_VALIDATING, 1, 1, "checking the certificate requests")
	cs, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID)
	if err != nil {
		return nil, err
	}
	if err := s.checkNotTerminated(ctx, cs.FASCN, cs.CardUUID, cs.PersonID); err != nil {
		return nil, err
	}
	devProfiles, err := s.DeviceProfiles(cs.CredentialType)
	if err != nil {
		return nil, err
	}
	for _, p := range devProfiles {
		if req.CSRs[p] == nil {
			return nil, fmt.Errorf("%w: a CSR for %s is required", ErrInvalid, p)
		}
	}
	for p := range req.CSRs {
		if !contains(devProfiles, p) {
			return nil, fmt.Errorf("%w: no CSR is taken for %s (credgw makes and escrows that key)", ErrInvalid, p)
		}
	}
	rid, err := randomID()
	if err != nil {
		return nil, err
	}
	// The transition to redeeming happens once (one conditional UPDATE).
	if err := s.cfg.Store.BeginRedemption(ctx, a.ID, rid, s.cfg.Now()); err != nil {
		if errors.Is(err, store.ErrAlreadyUsed) {
			return nil, ErrAlreadyRedeemed
		}
		return nil, err
	}
	if req.Device != "" {
		if err := s.cfg.Store.SetDevice(ctx, cs.ID, req.Device); err != nil {
			_ = s.cfg.Store.AbortRedemption(context.WithoutCancel(ctx), a.ID, rid)
			return nil, err
		}
	}
	d, err := s.issue(ctx, a, cs, rid, req, aead, progress)
	if err != nil {
		// Nothing was delivered: revoke what was issued, give the set a new
		// escrow key (the old one may be certified already) and the
		// activation back, so that a corrected request can redeem it. The
		// caller may have gone: this work must not depend on its context.
		bg := context.WithoutCancel(ctx)
		if rerr := s.revokeSet(bg, cs.ID, time.Time{}, issuance.ReasonCessationOfOperation); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if cs.EscrowKeyID != "" {
			if k, kerr := s.cfg.Escrow.NewKey(bg, cs.PersonID); kerr != nil {
				err = errors.Join(err, kerr)
			} else if kerr := s.cfg.Store.SetEscrowKey(bg, cs.ID, k.ID); kerr != nil {
				err = errors.Join(err, kerr)
			}
		}
		if aerr := s.cfg.Store.AbortRedemption(bg, a.ID, rid); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return nil, err
	}
	return d, nil
}

// revokeSet revokes the unrevoked certificates of a set created before
// before (zero: all), and reports the first failure.
func (s *Service) revokeSet(ctx context.Context, setID string, before time.Time, reason issuance.RevocationReason) error {
	recs, err := s.cfg.Store.CertificatesOfSet(ctx, setID)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if r.Revoked() || (!before.IsZero() && !r.CreatedAt.Before(before)) {
			continue
		}
		if err := s.cfg.Issuer.Revoke(ctx, r.Serial, reason); err != nil && !errors.Is(err, issuance.ErrAlreadyRevoked) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func contains(ps []issuance.Profile, p issuance.Profile) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func (s *Service) resume(a store.Activation, aead cipher.AEAD) (*Delivery, error) {
	n := aead.NonceSize()
	if len(a.Package) < n {
		return nil, errors.New("activation: stored package is damaged")
	}
	pkg, err := aead.Open(nil, a.Package[:n], a.Package[n:], []byte(a.ID))
	if err != nil {
		return nil, errors.New("activation: stored package does not open")
	}
	var m credgwv1.Manifest
	if err := proto.Unmarshal(a.Manifest, &m); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pkg)
	return &Delivery{RedemptionID: a.RedemptionID, Manifest: &m, Package: pkg, SHA256: sum[:], Resumed: true}, nil
}

// issue makes every certificate of the set and the sealed package.
func (s *Service) issue(ctx context.Context, a store.Activation, cs store.CredentialSet, rid string, req RedeemRequest, aead cipher.AEAD, progress Progress) (*Delivery, error) {
	pivRec, err := s.cfg.Store.PIVCertificate(ctx, cs.PIVCertSHA256)
	if err != nil {
		return nil, err
	}
	pivCert, err := x509.ParseCertificate(pivRec.DER)
	if err != nil {
		return nil, err
	}
	id := issuance.Identity{RawSubject: cs.RawSubject, Email: cs.Email, UPN: cs.UPN, PIVCertSHA256: cs.PIVCertSHA256,
		FASCN: cs.FASCN, CardUUID: cs.CardUUID, PersonID: cs.PersonID, CardKey: pivCert.PublicKey}
	profiles := s.cfg.CredentialTypes[cs.CredentialType]
	othersThan := func(p issuance.Profile) []crypto.PublicKey {
		var out []crypto.PublicKey
		for q, c := range req.CSRs {
			if q != p {
				out = append(out, c.PublicKey)
			}
		}
		return out
	}
	pkg := code.NewPackage(cs.ID)
	add := pkg.Add
	// The certificates are independent: they are issued side by side (a
	// redemption takes as long as its slowest issuance, not their sum).
	// All finish before this returns, so that on any failure the caller
	// revokes every certificate that was recorded.
	var mu sync.Mutex // progress and the results
	issued := make([]*issuance.Issued, len(profiles))
	escrowed := make([]*issuance.EscrowedKey, len(profiles))
	done := 0
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range profiles {
		g.Go(func() error {
			csr := req.CSRs[p]
			if p == issuance.KeyManagement {
				k, err := s.cfg.Escrow.Key(gctx, cs.EscrowKeyID, cs.PersonID)
				if err != nil {
					return err
				}
				der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k.Key)
				if err != nil {
					return err
				}
				if csr, err = x509.ParseCertificateRequest(der); err != nil {
					return err
				}
				escrowed[i] = k
			}
			got, err := s.cfg.Issuer.Issue(gctx, issuance.Request{Profile: p, CSR: csr, Identity: id, CredentialSetID: cs.ID,
				HardwareBacked: req.Hardware, OtherKeys: othersThan(p)})
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			issued[i] = got
			done++
			progress(credgwv1.Stage_STAGE_ISSUING, done, len(profiles), "issued the "+string(p)+" certificate")
			return nil
		})
	}
	// The key history is unsealed meanwhile: it does not depend on what
	// is being issued.
	var history []*issuance.EscrowedKey
	if cs.EscrowKeyID != "" {
		g.Go(func() error {
			h, err := s.cfg.Escrow.History(gctx, cs.PersonID, cs.EscrowKeyID, MaxKeyHistory)
			if err != nil {
				return fmt.Errorf("activation: the key history: %w", err)
			}
			history = h
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var chain [][]byte
	for _, c := range issued[0].Chain {
		chain = append(chain, c.Raw)
	}
	for i, p := range profiles {
		got := issued[i]
		serial := got.Certificate.SerialNumber.Text(16)
		if escrowed[i] == nil {
			add(string(p)+".crt", credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, protoProfile(p), serial, got.Certificate.Raw, nil, 0)
			continue
		}
		if err := s.cfg.Escrow.Certified(ctx, escrowed[i].ID, serial, got.Certificate.NotAfter); err != nil {
			return nil, err
		}
		if err := addKeyHistory(escrowed[i], got.Certificate, history, req.Secret, req.Password, add, got.Chain); err != nil {
			return nil, err
		}
	}
	progress(credgwv1.Stage_STAGE_PACKAGING, 1, 1, "sealing the package")
	add("chain.der", credgwv1.ItemKind_ITEM_KIND_CHAIN, credgwv1.Profile_PROFILE_UNSPECIFIED, "", nil, chain, 0)
	plain, manifest, err := pkg.Marshal()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sealed := aead.Seal(nonce, nonce, plain, []byte(a.ID))
	sum := sha256.Sum256(plain)
	if err := s.cfg.Store.StorePackage(ctx, a.ID, rid, sealed, hex.EncodeToString(sum[:]), int64(len(plain)), manifest,
		s.cfg.Now().Add(s.cfg.ConfirmWindow)); err != nil {
		return nil, err
	}
	return &Delivery{RedemptionID: rid, Manifest: pkg.Manifest(), Package: plain, SHA256: sum[:]}, nil
}

// addKeyHistory adds the person's escrowed key-management keys as one
// PKCS#12, encryption.p12: the current key (just certified) first, then
// the history newest first, each with its certificate and a friendly name
// that says which it is. Its password is derived from the QR secret and the
// typed password (see TransportPKCS12Iterations).
//
// A PIV card holds at most 20 retired key-management keys (FIPS 201-3
// §4.2.2, keys 82–95); the device gets the current key and the 20 newest
// before it (MaxKeyHistory). Older keys stay in escrow for recovery.
func addKeyHistory(current *issuance.EscrowedKey, cert *x509.Certificate, history []*issuance.EscrowedKey, secret []byte, password string,
	add func(string, credgwv1.ItemKind, credgwv1.Profile, string, []byte, [][]byte, int32), caChain []*x509.Certificate) error {
	pw, err := code.NormalizePassword(password)
	if err != nil {
		return err
	}
	p12pw, err := code.PKCS12Password(secret, pw)
	if err != nil {
		return err
	}
	entries := make([]pfx.Entry, 0, 1+len(history))
	entries = append(entries, pfx.Entry{Key: current.Key, Certificate: cert, FriendlyName: code.KeyHistoryName(0, cert)})
	for _, k := range history {
		c, err := x509.ParseCertificate(k.CertDER)
		if err != nil {
			return fmt.Errorf("activation: the certificate of escrowed key %s: %w", k.ID, err)
		}
		if !k.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
			return fmt.Errorf("activation: escrowed key %s is not the key of its recorded certificate %s (check the escrow row and the certificates table)", k.ID, k.CertSerial)
		}
		entries = append(entries, pfx.Entry{Key: k.Key, Certificate: c, FriendlyName: code.KeyHistoryName(len(entries), c)})
	}
	p12, err := pfx.Encode(entries, caChain, p12pw, code.TransportPKCS12Iterations)
	if err != nil {
		return fmt.Errorf("activation: PKCS#12: %w", err)
	}
	add("encryption.p12", credgwv1.ItemKind_ITEM_KIND_PKCS12, credgwv1.Profile_PROFILE_KEY_MANAGEMENT, cert.SerialNumber.Text(16), p12, nil, int32(len(entries)))
	return nil
}

func protoProfile(p issuance.Profile) credgwv1.Profile {
	switch p {
	case issuance.DerivedPIVAuth:
		return credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH
	case issuance.DigitalSignature:
		return credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE
	case issuance.KeyManagement:
		return credgwv1.Profile_PROFILE_KEY_MANAGEMENT
	}
	return credgwv1.Profile_PROFILE_UNSPECIFIED
}

// confirm completes a redemption: the device proves the secret again and
// names the SHA-256 of what it installed. The package is deleted.
func (s *Service) confirm(ctx context.Context, redemptionID string, secret, sum []byte) (*store.CredentialSet, error) {
	a, err := s.cfg.Store.ActivationByRedemption(ctx, redemptionID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotAccepted
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(code.LookupHash(secret)), []byte(a.LookupHash)) != 1 {
		return nil, ErrNotAccepted
	}
	if err := s.checkSetNotTerminated(ctx, a.CredentialSetID); err != nil {
		return nil, err
	}
	if a.State == store.ActCompleted {
		return nil, ErrAlreadyRedeemed
	}
	if a.State != store.ActRedeeming || a.Package == nil || !s.cfg.Now().Before(a.ConfirmBy) {
		return nil, ErrExpired
	}
	if !bytes.Equal([]byte(hex.EncodeToString(sum)), []byte(a.PackageSHA256)) {
		return nil, ErrHashMismatch
	}
	if err := s.cfg.Store.Confirm(ctx, redemptionID, s.cfg.Now()); err != nil {
		if errors.Is(err, store.ErrAlreadyUsed) {
			return nil, ErrAlreadyRedeemed
		}
		return nil, err
	}
	cs, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID)
	return &cs, err
}

// Sweep expires pending activations and revokes (superseded) what
// unconfirmed packages carried, deleting the packages. Safe on every
// replica: each row is claimed by one conditional UPDATE.
func (s *Service) Sweep(ctx context.Context) (revoked int, err error) {
	now := s.cfg.Now()
	if _, err := s.cfg.Store.ExpirePending(ctx, now); err != nil {
		return 0, err
	}
	sets, err := s.cfg.Store.ClaimUnconfirmed(ctx, now)
	if err != nil {
		return 0, err
	}
	// A redemption whose issuing call died (the database went away before
	// the package or the abort could be written) is given back: what it
	// issued is revoked, and the code can be redeemed again while it lives.
	stuck, err := s.cfg.Store.ReleaseStuckRedemptions(ctx, now.Add(-StuckRedemption))
	if err != nil {
		return 0, err
	}
	// Only certificates made before the claim: a redemption that starts
	// right after a stuck one is given back keeps its own.
	var errs []error
	for _, id := range stuck {
		errs = append(errs, s.revokeSet(ctx, id, now, issuance.ReasonCessationOfOperation))
	}
	// Sets marked revoked whose certificates were not all revoked (the CA
	// failed half way, e.g. after a renewal was confirmed): finish the job.
	unfinished, err := s.cfg.Store.RevokedSetsWithLiveCertificates(ctx, 100)
	if err != nil {
		return 0, err
	}
	for _, id := range unfinished {
		errs = append(errs, s.revokeSet(ctx, id, time.Time{}, issuance.ReasonCessationOfOperation))
	}
	for _, id := range sets {
		err := s.revokeSet(ctx, id, now, issuance.ReasonSuperseded)
		errs = append(errs, err)
		if err == nil {
			s.undelivered(ctx, id)
		}
	}
	return len(stuck) + len(sets), errors.Join(errs...)
}

// ErrNotYours means a credential set belongs to another person.
var ErrNotYours = errors.New("activation: no such credential set of yours")

// RevokeSet revokes every certificate of one of the person's credential
// sets (lost or replaced device) and marks it revoked. Revoking a revoked set
// is not an error.
func (s *Service) RevokeSet(ctx context.Context, personID, setID string, reason issuance.RevocationReason) (*store.CredentialSet, error) {
	cs, err := s.cfg.Store.CredentialSet(ctx, setID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && cs.PersonID != personID) {
		return nil, ErrNotYours
	}
	if err != nil {
		return nil, err
	}
	// The activation is ended first, so nothing can be redeemed after.
	if err := s.cfg.Store.RevokeCredentialSet(ctx, setID, s.cfg.Now()); err != nil {
		return nil, err
	}
	if err := s.revokeSet(ctx, setID, time.Time{}, reason); err != nil {
		return nil, err
	}
	cs.State = store.SetRevoked
	return &cs, nil
}

func (s *Service) checkNotTerminated(ctx context.Context, fascn []byte, cardUUID, personID string) error {
	t, err := s.cfg.Store.Terminated(ctx, fascn, cardUUID, personID)
	if err != nil {
		return err
	}
	if t {
		return ErrTerminated
	}
	return nil
}

func (s *Service) checkSetNotTerminated(ctx context.Context, setID string) error {
	cs, err := s.cfg.Store.CredentialSet(ctx, setID)
	if err != nil {
		return err
	}
	return s.checkNotTerminated(ctx, cs.FASCN, cs.CardUUID, cs.PersonID)
}

// RevokeIdentity revokes every derived credential of a PIV identity (a card
// or a person) and returns the serials it revoked. With terminate, the
// identity is recorded as terminated first, so that no enrollment or
// redemption racing with the revocation can issue after it. It does not
// stop at the caller's cancellation (a half-done termination is worse than
// a late one), and it goes through every set even when one fails — sets
// already marked revoked or abandoned too, since their certificates may not
// all be revoked yet (an earlier attempt that failed at the CA) — and
// reports all failures; calling it again finishes the job.
func (s *Service) RevokeIdentity(ctx context.Context, sel store.IdentitySelector, reason issuance.RevocationReason, terminate bool, comment string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if terminate {
		if err := s.cfg.Store.Terminate(ctx, store.Termination{Selector: sel, TerminatedAt: s.cfg.Now(), Comment: comment}); err != nil {
			return nil, err
		}
	}
	sets, err := s.cfg.Store.CredentialSetsOfIdentity(ctx, sel)
	if err != nil {
		return nil, err
	}
	var serials []string
	var errs []error
	for _, cs := range sets {
		before, err := s.cfg.Store.CertificatesOfSet(ctx, cs.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("credential set %s: %w", cs.ID, err))
			continue
		}
		live := map[string]bool{}
		for _, r := range before {
			if !r.Revoked() {
				live[r.Serial] = true
			}
		}
		switch cs.State {
		case store.SetPending, store.SetRedeeming, store.SetActive:
			// The activation is ended first, so nothing can be redeemed after.
			if err := s.cfg.Store.RevokeCredentialSet(ctx, cs.ID, s.cfg.Now()); err != nil {
				errs = append(errs, fmt.Errorf("credential set %s: %w", cs.ID, err))
				continue
			}
		}
		if len(live) == 0 {
			continue
		}
		if err := s.revokeSet(ctx, cs.ID, time.Time{}, reason); err != nil {
			errs = append(errs, fmt.Errorf("credential set %s: %w", cs.ID, err))
		}
		after, err := s.cfg.Store.CertificatesOfSet(ctx, cs.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("credential set %s: %w", cs.ID, err))
			continue
		}
		for _, r := range after {
			if live[r.Serial] && r.Revoked() {
				serials = append(serials, r.Serial)
			}
		}
	}
	return serials, errors.Join(errs...)
}

// CredentialTypes lists the configured credential types.
func (s *Service) CredentialTypes() []string {
	out := make([]string, 0, len(s.cfg.CredentialTypes))
	for t := range s.cfg.CredentialTypes {
		out = append(out, t)
	}
	return out
}
