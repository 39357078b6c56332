package activation

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// RenewalCredential checks the certificate a device authenticated with
// (its TLS client certificate): one of this gateway's derived PIV
// Authentication certificates, valid now, recorded, not revoked, of an
// active set. It returns the record and the set. (Termination is checked
// where a renewal is made and confirmed.)
func (s *Service) RenewalCredential(ctx context.Context, leaf *x509.Certificate) (store.CertificateRecord, store.CredentialSet, error) {
	rec, err := s.derivedAuth(ctx, leaf)
	if err != nil {
		return store.CertificateRecord{}, store.CredentialSet{}, err
	}
	if rec.Revoked() {
		return store.CertificateRecord{}, store.CredentialSet{}, denied("the derived PIV Authentication certificate is revoked: enroll again with the card")
	}
	cs, err := s.cfg.Store.CredentialSet(ctx, rec.CredentialSetID)
	if err != nil {
		return store.CertificateRecord{}, store.CredentialSet{}, err
	}
	if cs.State != store.SetActive {
		return store.CertificateRecord{}, store.CredentialSet{}, notNow("the credential set is %s, not active", cs.State)
	}
	return rec, cs, nil
}

// derivedAuth is the record of leaf, a derived PIV Authentication
// certificate this gateway issued (revoked or not).
func (s *Service) derivedAuth(ctx context.Context, leaf *x509.Certificate) (store.CertificateRecord, error) {
	var none store.CertificateRecord
	chain := s.cfg.Issuer.Chain()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	// A certificate of an earlier key that still answers for what it
	// issued (ca.retired) renews onto the key in use: confirming revokes
	// it on that key's CRL.
	for _, c := range s.cfg.RetiredCAs {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return none, denied("the TLS client certificate is not a valid derived credential of this gateway: %v", err)
	}
	rec, err := s.cfg.Store.Certificate(ctx, NormalizeSerial(leaf.SerialNumber.Text(16)))
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && !bytes.Equal(rec.DER, leaf.Raw)):
		return none, denied("the TLS client certificate is not one this gateway issued")
	case err != nil:
		return none, err
	case rec.Profile != string(issuance.DerivedPIVAuth):
		return none, denied("renewal is authenticated with the derived PIV Authentication certificate, not the %s one", rec.Profile)
	}
	return rec, nil
}

// RekeyRequest is a device re-keying the credentials its certificate
// belongs to.
type RekeyRequest struct {
	// Current is the device's TLS client certificate.
	Current *x509.Certificate
	// RedemptionID resumes a renewal begun earlier ("" for a new one).
	RedemptionID string
	Secret       []byte
	Password     string
	// CSRs are read (ParseCSRs) once the caller's right to renew is
	// established: who calls is checked before what the request carries.
	CSRs []*credgwv1.CertificateRequest
}

// Rekey issues new certificates for new device keys (Common Policy §3.3.1:
// identity by the current key), from RenewalPercent of the current derived
// PIV Authentication certificate's lifetime, while the card is still good
// (checked now, OCSP then CRL) and not terminated. A repeated call with the
// redemption id resumes the same package.
func (s *Service) Rekey(ctx context.Context, req RekeyRequest, progress Progress) (*Delivery, error) {
	rec, old, err := s.RenewalCredential(ctx, req.Current)
	if err != nil {
		return nil, err
	}
	var actID string
	bySecret := false
	var csrs map[issuance.Profile]*x509.CertificateRequest
	var atts map[issuance.Profile]Attestation
	if req.RedemptionID != "" {
		// A resume: the same activation, proven by the same secret.
		a, err := s.cfg.Store.ActivationByRedemption(ctx, req.RedemptionID)
		if err != nil {
			return nil, ErrNotAccepted
		}
		if _, err := s.renewalOf(ctx, a, old); err != nil {
			return nil, err
		}
		if csrs, atts, err = ParseCSRs(req.CSRs); err != nil {
			return nil, err
		}
		actID = a.ID
	} else if a, ok, err := s.renewalBySecret(ctx, old, req.Secret); err != nil {
		return nil, err
	} else if ok {
		// The same request again, whose first answer (the redemption
		// id) was lost: a resume, as with the id.
		if csrs, atts, err = ParseCSRs(req.CSRs); err != nil {
			return nil, err
		}
		actID, bySecret = a.ID, true
	} else {
		pct := s.cfg.RenewalPercent
		if opens := RenewalOpens(rec.NotBefore, rec.NotAfter, pct); s.cfg.Now().Before(opens) {
			return nil, notNow("renewal opens at %s (%d %% of the certificate's lifetime)", opens.UTC().Format("2006-01-02 15:04 MST"), pct)
		}
		if old.EscrowKeyID != "" {
			if err := s.escrowDeliveryTold(); err != nil {
				return nil, err
			}
		}
		if err := s.checkCard(ctx, old.PIVCertSHA256); err != nil {
			return nil, err
		}
		if csrs, atts, err = ParseCSRs(req.CSRs); err != nil {
			return nil, err
		}
		// Attestations are checked before the renewal exists: a refused
		// one leaves nothing in progress that would block the retry.
		if _, err := s.verifyAttestations(atts, csrs, code.AttestationChallenge(req.Secret, rekeyContext(req.Current))); err != nil {
			// Recorded as a redemption's refusal is: a stolen credential
			// tried with leaked attestation keys or unlocked phones.
			s.cfg.Audit.Refused(ctx, "device", "rekey", old.ID, "renews="+old.ID+"; refused: "+err.Error())
			return nil, err
		}
		if actID, err = s.enrollRenewal(ctx, old, req.Secret, req.Password); err != nil {
			return nil, err
		}
	}
	d, err := s.redeem(ctx, RedeemRequest{
		ActivationID: actID, Secret: req.Secret, Password: req.Password, Device: old.Device, CSRs: csrs, Attestations: atts,
		AttestationContext: rekeyContext(req.Current), SoftwareRenewal: !issuance.AssertsHardwareBacked(req.Current),
	}, progress)
	if err != nil {
		s.auditRefusal(ctx, actID, err)
		if req.RedemptionID == "" && !bySecret {
			// The device never got a redemption id to resume with: a
			// renewal left pending would refuse its retry (a new secret)
			// until it expired.
			s.abandonRenewal(context.WithoutCancel(ctx), actID)
		}
		return nil, err
	}
	if d.Resumed && !d.unrecorded {
		if err := s.deliveredAgain(ctx, "rekey", "renews="+old.ID, d); err != nil {
			return nil, err
		}
		return d, nil
	}
	if err := s.recordDelivery(ctx, "rekey", d, "renews="+old.ID+"; redemption_id="+d.RedemptionID+"; "+d.Attestation+d.late()); err != nil {
		return nil, err
	}
	return d, nil
}

// abandonRenewal ends a renewal a refused Rekey made and left pending
// (nothing was delivered; what was issued is revoked).
func (s *Service) abandonRenewal(ctx context.Context, actID string) {
	a, err := s.cfg.Store.ActivationByID(ctx, actID)
	if err != nil || a.State != store.ActPending {
		return
	}
	_, err = s.cfg.Store.RevokeCredentialSet(ctx, a.CredentialSetID, s.cfg.Now()) // pending: no package
	if err == nil {
		// The agent sends the same request again (same secret) when
		// a Rekey fails: the ended code must not hold the secret.
		err = s.cfg.Store.ForgetCode(ctx, actID)
	}
	if err == nil {
		err = s.revokeSet(ctx, a.CredentialSetID, time.Time{}, issuance.ReasonCessationOfOperation)
	}
	if err != nil {
		s.cfg.Log.WarnContext(ctx, "abandoning a refused renewal", "credential_set_id", a.CredentialSetID, "err", err.Error())
	}
}

// rekeyContext is a renewal's attestation challenge context.
func rekeyContext(current *x509.Certificate) string {
	return code.RekeyAttestationContext(NormalizeSerial(current.SerialNumber.Text(16)))
}

// ConfirmRekey completes a re-key: the new set becomes active and the one
// the calling certificate belongs to is revoked (superseded).
func (s *Service) ConfirmRekey(ctx context.Context, current *x509.Certificate, redemptionID string, secret, sum []byte) (*Confirmed, error) {
	_, old, err := s.RenewalCredential(ctx, current)
	repeated := false
	if err != nil {
		// A repeat whose first answer was lost: the first revoked the
		// calling certificate's set (superseded), so the certificate no
		// longer renews. The rest of the checks below still hold (the
		// renewal of that set, its secret, the same package), and the
		// same device gets the first answer again.
		set, repeat, serr := s.supersededBy(ctx, current, redemptionID)
		if serr != nil {
			// Not known to be a refusal: the device asks again.
			return nil, serr
		}
		if !repeat {
			return nil, err
		}
		old, repeated = set, true
	}
	if redemptionID == "" || len(sum) != 32 {
		return nil, invalid("redemption_id and the 32-byte sha256 of the installed package are required")
	}
	// Only the renewal of the calling certificate's set, checked before
	// anything changes.
	a, err := s.cfg.Store.ActivationByRedemption(ctx, redemptionID)
	if err != nil {
		return nil, ErrNotAccepted
	}
	renewal, err := s.renewalOf(ctx, a, old)
	if err != nil {
		return nil, err
	}
	if repeated && renewal.State != store.SetActive {
		// Revoked since the first confirmation (a lost device): nothing
		// to answer as the first did.
		return nil, notNow("the renewed credentials are %s", renewal.State)
	}
	cs, again, err := s.confirm(ctx, a, renewal, redemptionID, secret, sum)
	if err != nil {
		return nil, err
	}
	// Told first, and on every repeat (once), as Confirm.
	if err := s.tellConfirmed(ctx, *cs, redemptionID, "Your derived PIV credentials were renewed",
		"Your derived PIV credentials were re-keyed on the device that held them; the previous ones are revoked (superseded).",
		"A new escrowed S/MIME encryption key and your key history were delivered to the device that renewed its credentials."); err != nil {
		return nil, err
	}
	if _, err := s.RevokeSet(ctx, old.PersonID, old.ID, issuance.ReasonSuperseded); err != nil {
		return nil, err
	}
	out, err := s.confirmed(ctx, cs.ID, cs.PersonID)
	if err != nil {
		return nil, err
	}
	if again && s.confirmRecorded(ctx, cs.PersonID, "rekey-confirm", redemptionID) {
		return out, nil
	}
	s.cfg.Audit.Set(ctx, "device", "rekey-confirm", cs.ID, "superseded="+old.ID+"; redemption_id="+redemptionID)
	if !again {
		s.cfg.Log.InfoContext(ctx, "credentials renewed", "credential_set_id", cs.ID, "superseded", old.ID, "person_id", cs.PersonID)
	}
	return out, nil
}

// supersededBy is the set of current, a derived PIV Authentication
// certificate of this gateway, when redemptionID is a completed
// confirmation (of a renewal of that set, ConfirmRekey checks). An error
// is one of the store's, not an answer.
func (s *Service) supersededBy(ctx context.Context, current *x509.Certificate, redemptionID string) (store.CredentialSet, bool, error) {
	rec, err := s.derivedAuth(ctx, current)
	if err != nil || redemptionID == "" {
		return store.CredentialSet{}, false, nil
	}
	a, err := s.cfg.Store.ActivationByRedemption(ctx, redemptionID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.CredentialSet{}, false, nil
	case err != nil:
		return store.CredentialSet{}, false, err
	case a.State != store.ActCompleted:
		return store.CredentialSet{}, false, nil
	}
	old, err := s.cfg.Store.CredentialSet(ctx, rec.CredentialSetID)
	if err != nil {
		return store.CredentialSet{}, false, err
	}
	return old, true, nil
}

// renewalOf refuses an activation that is not the renewal of old.
// renewalBySecret finds the live renewal of old whose code is secret's:
// one begun by a request whose answer was lost.
func (s *Service) renewalBySecret(ctx context.Context, old store.CredentialSet, secret []byte) (store.Activation, bool, error) {
	live, err := s.cfg.Store.LiveRenewals(ctx, old.ID)
	if err != nil {
		return store.Activation{}, false, err
	}
	want := code.LookupHash(secret)
	for _, r := range live {
		a, err := s.cfg.Store.ActivationOfSet(ctx, r.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return store.Activation{}, false, err
		}
		if subtle.ConstantTimeCompare([]byte(a.LookupHash), []byte(want)) == 1 {
			return a, true, nil
		}
	}
	return store.Activation{}, false, nil
}

func (s *Service) renewalOf(ctx context.Context, a store.Activation, old store.CredentialSet) (store.CredentialSet, error) {
	cs, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID)
	if err != nil {
		return store.CredentialSet{}, err
	}
	if cs.RenewsSetID != old.ID {
		return store.CredentialSet{}, denied("that redemption is not a renewal of the calling certificate's credentials")
	}
	return cs, nil
}

// NormalizeSerial is a serial as the store keeps it: lower-case hex,
// without colons or leading zeros.
func NormalizeSerial(s string) string {
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}
