package activation

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/store"
)

// EnrollRequest is a signed-in person asking for derived credentials.
type EnrollRequest struct {
	Session        store.PIVSession
	IdentityName   string
	CredentialType string
	// Portal is true when the request came through the self-service
	// portal (recorded in the audit log).
	Portal bool
}

// Enroll turns a fresh PIV session into an activation (the QR code and the
// password) and records it.
func (s *Service) Enroll(ctx context.Context, req EnrollRequest) (*Enrollment, error) {
	en, err := s.enroll(ctx, req.Session, req.IdentityName, req.CredentialType)
	if err != nil {
		return nil, err
	}
	sess := req.Session
	detail := "activation_id=" + en.ActivationID
	if req.Portal {
		detail += "; portal"
	}
	// A new set: no certificates yet.
	s.cfg.Audit.SetOf(ctx, "piv:"+sess.PersonID, "enroll", store.CredentialSet{ID: en.CredentialSetID, PersonID: sess.PersonID, CardUUID: sess.CardUUID}, nil, detail)
	s.cfg.Log.InfoContext(ctx, "enrollment created", "person_id", sess.PersonID, "card_uuid", sess.CardUUID, "portal", req.Portal,
		"activation_id", en.ActivationID, "credential_set_id", en.CredentialSetID, "credential_type", en.CredentialType)
	return en, nil
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

// validName: 1 to 64 printable characters of valid UTF-8. Ranging over
// invalid UTF-8 yields U+FFFD, which is printable, so validity is checked
// first: a name the database's text type refuses is the caller's mistake,
// not the gateway's (PostgreSQL answers invalid UTF-8 with an error).
func validName(n string) bool {
	if !utf8.ValidString(n) || len([]rune(n)) < 1 || len([]rune(n)) > 64 {
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
	if slices.Contains(profiles, issuance.KeyManagement) {
		if err := s.escrowDeliveryTold(); err != nil {
			return nil, err
		}
	}
	if err := s.checkNotTerminated(ctx, sess.FASCN, sess.CardUUID, sess.PersonID); err != nil {
		return nil, err
	}
	for _, p := range profiles {
		if p != issuance.DerivedPIVAuth && sess.Email == "" && sess.EmailSource == session.EmailSourceUnbound {
			return nil, fmt.Errorf("%w: the S/MIME certificates need the email of record; the card's Digital Signature certificate has one, "+
				"but it is not shown to be this card's (its CA is neither the PIV Authentication certificate's nor a sibling of it, and it names no card UUID), "+
				"so credgw does not take it; signing in again will not change that: ask the credgw operators (or your badge office)", issuance.ErrNoEmail)
		}
		if p != issuance.DerivedPIVAuth && sess.Email == "" {
			return nil, fmt.Errorf("%w: %s", issuance.ErrNoEmail, "the S/MIME certificates need the email of record, and the card gave none")
		}
		if p != issuance.DerivedPIVAuth && !notify.Mailbox(sess.Email) {
			// The escrowed key's delivery must be told there (Common
			// Policy §4.12.1), and no mail can go to it.
			return nil, fmt.Errorf("%w: the email of record on the card, %q, is not one mailbox address, so no notice can reach it; ask your badge office", issuance.ErrNoEmail, sess.Email)
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
	// The card may have been revoked since the sign-in.
	if _, err := s.cfg.Verifier.VerifyPIVAuth(ctx, pivCert, nil); err != nil {
		return nil, fmt.Errorf("the card's PIV Authentication certificate: %w", err)
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
	cs := store.CredentialSet{
		ID: setID, PersonID: sess.PersonID, PIVCertSHA256: sess.CertSHA256, FASCN: sess.FASCN, CardUUID: sess.CardUUID,
		RawSubject: pivCert.RawSubject, Email: sess.Email, UPN: sess.UPN, IdentityName: identityName,
		CredentialType: credentialType, EscrowKeyID: escrowID, State: store.SetPending, CreatedAt: now,
	}
	err = s.cfg.Store.CreateEnrollment(ctx, cs, store.Activation{
		ID: actID, LookupHash: code.LookupHash(secret), Verifier: s.verifier(secret, password, cs),
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
