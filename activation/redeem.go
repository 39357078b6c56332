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
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
)

// Redeem checks the activation code and either builds the package (issuing
// the certificates, once) or returns the one an earlier call built (resume).
// Wrong passwords and lockouts are recorded, and a lockout is notified.
func (s *Service) Redeem(ctx context.Context, req RedeemRequest, progress Progress) (*Delivery, error) {
	d, err := s.redeem(ctx, req, progress)
	if err != nil {
		s.auditRefusal(ctx, req.ActivationID, err)
		return nil, err
	}
	if d.Resumed && !d.unrecorded {
		if err := s.deliveredAgain(ctx, "redeem", "activation_id="+req.ActivationID, d); err != nil {
			return nil, err
		}
		return d, nil
	}
	if err := s.recordDelivery(ctx, "redeem", d, "activation_id="+req.ActivationID+"; redemption_id="+d.RedemptionID+"; issued; "+d.Attestation+d.late()); err != nil {
		return nil, err
	}
	s.cfg.Log.InfoContext(ctx, "credentials issued", "activation_id", req.ActivationID, "redemption_id", d.RedemptionID,
		"credential_set_id", d.Manifest.GetCredentialSetId(), "bytes", len(d.Package))
	return d, nil
}

// deliveredAgain records a stored package sent again (a resume): it
// carries the escrowed key history, so every delivery is an audit event,
// not only the first.
func (s *Service) deliveredAgain(ctx context.Context, action, detail string, d *Delivery) error {
	setID := d.Manifest.GetCredentialSetId()
	if err := s.recordDelivery(ctx, action, d, detail+"; redemption_id="+d.RedemptionID+"; resumed; "+d.Attestation); err != nil {
		return err
	}
	s.cfg.Log.InfoContext(ctx, "stored credential package delivered again", "action", action, "redemption_id", d.RedemptionID,
		"resumed", true, "credential_set_id", setID, "bytes", len(d.Package))
	return nil
}

// recordDelivery writes the audit event of a delivery. One carrying
// escrowed keys is a key recovery (Common Policy §4.12.1, §5.4.1): its
// event names the earlier keys' certificates, and if it cannot be written
// nothing is delivered (ErrAuditUnavailable; the package stays stored and
// the device's retry resumes it).
func (s *Service) recordDelivery(ctx context.Context, action string, d *Delivery, detail string) error {
	err := s.cfg.Audit.SetChecked(ctx, "device", action, d.Manifest.GetCredentialSetId(), detail+d.keyHistoryDetail())
	if err != nil && d.Escrowed {
		return ErrAuditUnavailable // the cause is in the log (the database's text is not the device's)
	}
	return nil
}

// auditRefusal records refused redemptions of a code whose secret was
// right: wrong passwords (at most max_attempts), the lock (once, when it
// happens), and refusals as expired, redeemed already or terminated, once
// per activation (on each replica): a device repeating itself does not
// grow the log.
func (s *Service) auditRefusal(ctx context.Context, activationID string, err error) {
	var wrong *WrongPasswordError
	outcome, failed := "", false
	switch {
	case errors.Is(err, ErrExpired):
		outcome = "expired"
	case errors.Is(err, ErrAlreadyRedeemed):
		outcome = "redeemed already"
	case errors.As(err, &wrong):
		outcome = fmt.Sprintf("wrong password (%s left)", attemptsLeft(wrong.AttemptsLeft))
	case errors.Is(err, errLockedNow):
		outcome = "locked"
	case errors.Is(err, ErrLocked):
		// Locked before: the lock was recorded and told when it happened;
		// a caller repeating itself does not grow the log or the outbox.
		s.cfg.Log.InfoContext(ctx, "redemption of a locked code refused", "activation_id", activationID)
		return
	case errors.Is(err, ErrTerminated):
		outcome = "terminated"
	case errors.Is(err, ErrNotAccepted), errors.Is(err, ErrInProgress),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// No code (nothing to attach it to, and anyone can send it), a
		// resume too early, or a caller that went away.
		return
	case errors.As(err, new(*anchorsRefusal)):
		// One event per activation: the message names roots of the
		// caller's choosing.
		outcome = "refused: the device trusts none of the roots the credentials chain to; nothing issued"
	case refusedRequest(err):
		outcome = err.Error()
	default:
		outcome = err.Error()
		failed = true
	}
	if (wrong == nil && !errors.Is(err, errLockedNow)) && !s.refusals.first(activationID+"\x00"+outcome) {
		return
	}
	a, aerr := s.cfg.Store.ActivationByID(ctx, activationID)
	if aerr != nil {
		return // an unknown id: nothing to attach it to
	}
	if failed {
		// The gateway could not do it (an HSM, CA or status responder
		// failing): the device may retry; the investigator sees why.
		s.cfg.Audit.Failed(ctx, "device", "redeem", a.CredentialSetID, "activation_id="+activationID+"; error: "+outcome)
		return
	}
	s.cfg.Audit.Refused(ctx, "device", "redeem", a.CredentialSetID, "activation_id="+activationID+"; refused: "+outcome)
	if wrong != nil {
		// Every attempt at the person's escrowed keys is told, the
		// failed ones too (Common Policy §4.12.1); the lock is told below.
		s.cfg.Notify.Set(ctx, "failed-attempt", a.CredentialSetID, "A wrong password was typed for your activation code",
			fmt.Sprintf("A device presented your activation code with a wrong password; %s left before the code locks. "+
				"If you are setting up a device, type the password shown with the code. If not, someone else has your code: "+
				"tell your help desk or badge office.", attemptsLeft(wrong.AttemptsLeft)))
	}
	if l := (lockedNow{}); errors.As(err, &l) {
		switch {
		case l.issuing:
			s.cfg.Audit.Set(ctx, "system", "revoke", a.CredentialSetID,
				"activation_id="+activationID+"; locked while its package was being made: what was issued is revoked; nothing was downloaded")
			s.cfg.Notify.Set(ctx, "lockout", a.CredentialSetID, "A derived credential code was locked",
				"A device gave the right password for your activation code, then too many wrong passwords were typed while its "+
					"credentials were being issued: the code is locked, what was issued is revoked, and nothing was downloaded. "+
					"Sign in with your card to enroll again.")
			return
		case !l.withPackage:
			s.cfg.Notify.Set(ctx, "lockout", a.CredentialSetID, "A derived credential code was locked",
				"Too many wrong passwords were typed for your activation code; it is locked and nothing was issued. Sign in with your card to enroll again.")
			return
		}
		// A device had given the right password and its package was
		// waiting or being made: the person's escrowed keys may have
		// left escrow. Both what happened and the key delivery are told
		// (Common Policy §4.12.1: every key recovery is told).
		s.cfg.Notify.Set(ctx, "lockout", a.CredentialSetID, "A derived credential code was locked after a download began",
			"A device gave the right password for your activation code and began downloading your derived credentials, "+
				"with copies of your escrowed encryption keys; then too many wrong passwords were typed, so the code is locked "+
				"and the credentials it carried are revoked. If that device was not yours, your encryption keys may have been copied: "+
				"tell your security office. Sign in with your card to enroll again.")
		s.cfg.Audit.Set(ctx, "system", "undelivered", a.CredentialSetID, "locked with a package waiting or being made; its certificates are revoked")
		s.cfg.Notify.Set(ctx, "key-delivery", a.CredentialSetID, "Your encryption keys may have been delivered to a device",
			"A device downloaded, or began to download, your derived credentials and copies of your escrowed encryption keys, "+
				"and never confirmed installing them; the code was then locked and the credentials revoked.")
	}
}

// refusedRequest tells a request refused for what it is or asks (a
// refusal) from one the gateway failed to serve (an error).
func refusedRequest(err error) bool {
	for _, kind := range []error{ErrInvalid, ErrPermission, ErrPrecondition, ErrNoSuch, ErrCap, ErrSessionTooOld,
		ErrHashMismatch, ErrRenewalInProgress, issuance.ErrBadRequest, issuance.ErrNoEmail, issuance.ErrRefused,
		piv.ErrMalformed, piv.ErrUntrusted, piv.ErrExpired, piv.ErrNotYetValid, piv.ErrPolicy, piv.ErrKeyUsage, piv.ErrKey, piv.ErrRevoked} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// undelivered records and reports a package the device never confirmed:
// the escrowed-key delivery failed, and what it carried is revoked.
func (s *Service) undelivered(ctx context.Context, setID string) {
	s.cfg.Audit.Set(ctx, "system", "undelivered", setID, "not confirmed in time; its certificates are being revoked")
	s.cfg.Notify.Set(ctx, "key-delivery", setID, "Delivery of your derived credentials failed",
		"A device downloaded your derived credentials and escrowed encryption keys but never confirmed installing them, so they are revoked. Sign in with your card and enroll again.")
}

// RedeemRequest is what the device sends.
type RedeemRequest struct {
	ActivationID string
	Secret       []byte
	Password     string
	Device       string // JSON description, stored
	CSRs         map[issuance.Profile]*x509.CertificateRequest
	// Attestations of CSR keys, by profile (code.AttestationChallenge of
	// the secret and the activation id).
	Attestations map[issuance.Profile]Attestation
	// AttestationContext is the challenge's context ("": the activation
	// id; a renewal's: code.RekeyAttestationContext).
	AttestationContext string
	// SoftwareRenewal: a renewal of a derived PIV Authentication
	// certificate that does not assert …3.41. Its key vouches for no
	// hardware module, so the new one is …3.40 whatever its attestation
	// says (Common Policy §3.3.1: a new module is a new registration).
	SoftwareRenewal bool
	// TrustAnchors are the device's roots (none: not checked). The
	// issuing CA must chain to one of them through the chain the package
	// carries, or nothing is issued.
	TrustAnchors []*x509.Certificate
}

// chainsToDevice refuses, before anything is issued or counted, a device
// whose trust anchors the credentials would not chain to: it would refuse
// the package after the issuance, and the code would be spent.
func (s *Service) chainsToDevice(anchors []*x509.Certificate) error {
	if len(anchors) == 0 {
		return nil
	}
	chain := s.cfg.Issuer.Chain()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range chain {
		inter.AddCert(c) // what the package carries, as the device uses it
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return &anchorsRefusal{notNow("the device trusts none of the roots this gateway's credentials chain to (its issuing CA %q chains to %q; the device's anchors: %s): "+
			"nothing was issued and the code is still good: give the device the root of the agency's PKI as its trust anchor, then redeem again",
			chain[0].Subject.String(), chain[len(chain)-1].Subject.String(), anchorNames(anchors))}
	}
	return nil
}

// anchorsRefusal is chainsToDevice's refusal: its message names the roots
// the caller sent, so its audit event does not (auditRefusal).
type anchorsRefusal struct{ error }

func (e *anchorsRefusal) Unwrap() error { return e.error }

// anchorNames lists the subjects of anchors, for a message.
func anchorNames(anchors []*x509.Certificate) string {
	var names []string
	for _, a := range anchors {
		names = append(names, fmt.Sprintf("%q", a.Subject.String()))
	}
	return strings.Join(names, ", ")
}

// Delivery is a credential package ready to stream.
type Delivery struct {
	RedemptionID string
	Manifest     *credgwv1.Manifest
	Package      []byte // serialised CredentialPackage
	SHA256       []byte
	// Resumed is true when the package was built by an earlier call.
	Resumed bool
	// Attestation sums up the verified key attestations (the audit's
	// account: "attestation=none" or each key's level and boot state).
	Attestation string
	// Escrowed: the package carries escrowed keys (the encryption key,
	// and KeyHistory's), so delivering it is a key recovery, delivered
	// only once its audit event is written.
	Escrowed bool
	// KeyHistory are the certificate serials of the earlier keys the
	// package carries.
	KeyHistory []string
	// unrecorded: a resume of a package whose first delivery has no audit
	// event (it could not be written, and an escrowed package was held
	// back): this delivery's event is the account of the issuance.
	unrecorded bool
}

// late is what an issuance's event adds when a resume writes it.
func (d *Delivery) late() string {
	if d.unrecorded {
		return "; recorded on a resume (the first delivery's event could not be written)"
	}
	return ""
}

// issuanceRecorded tells whether the audit log holds the event of
// redemption rid's first delivery (an event of it that is no resume). A
// log that cannot be read counts as recorded: the resume's event says
// "resumed" and carries the verdict all the same.
func (s *Service) issuanceRecorded(ctx context.Context, personID, rid string) bool {
	evs, err := s.cfg.Store.AuditEvents(ctx, 0, 0, personID)
	if err != nil {
		return true
	}
	for _, ev := range evs {
		if (ev.Action == "redeem" || ev.Action == "rekey") && strings.Contains(ev.Detail, "redemption_id="+rid+";") &&
			!strings.Contains(ev.Detail, "; resumed") {
			return true
		}
	}
	return false
}

// attestationSummary is the audit's account of a stored set's verdicts.
func attestationSummary(stored string) string {
	var v Verdicts
	if err := json.Unmarshal([]byte(stored), &v); err != nil {
		return "attestation=unreadable"
	}
	return v.Summary()
}

// keyHistoryDetail is the audit's account of the earlier keys a package
// carries ("" for a package without escrowed keys).
func (d *Delivery) keyHistoryDetail() string {
	if !d.Escrowed {
		return ""
	}
	if len(d.KeyHistory) == 0 {
		return "; key_history=none"
	}
	return "; key_history=" + strings.Join(d.KeyHistory, ",")
}

// Progress reports a stage ("issuing 1/3").
type Progress func(stage credgwv1.Stage, current, total int, message string)

// check finds the activation and checks the secret and the password. The
// attempt is counted before the password is compared and given back when it
// is right: of any number of concurrent guesses, on any number of replicas,
// at most MaxAttempts are compared, and a guess that finds none left is
// refused with ErrLocked without a comparison.
//
// It also returns the credential set the code unlocks, as the password's
// verifier was checked against (its binding, keyedFor): a later read of
// the set must agree with it (sameBinding).
//
// beforeAttempt, if set, runs once the secret and the state are checked and
// before an attempt is counted.
func (s *Service) check(ctx context.Context, id string, secret []byte, password string, beforeAttempt func(store.Activation) error) (store.Activation, store.CredentialSet, string, error) {
	var cs store.CredentialSet
	a, err := s.cfg.Store.ActivationByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return a, cs, "", ErrNotAccepted
	}
	if err != nil {
		return a, cs, "", err
	}
	if subtle.ConstantTimeCompare([]byte(code.LookupHash(secret)), []byte(a.LookupHash)) != 1 {
		return a, cs, "", ErrNotAccepted
	}
	if err := s.stateError(a); err != nil {
		return a, cs, "", err
	}
	if cs, err = s.cfg.Store.CredentialSet(ctx, a.CredentialSetID); err != nil {
		return a, cs, "", err
	}
	if beforeAttempt != nil {
		if err := beforeAttempt(a); err != nil {
			return a, cs, "", err
		}
	}
	// Counted while pending and while redeeming (a resume needs the
	// password too): a photo of the QR code gives no unlimited guesses.
	a, err = s.reserve(ctx, id)
	if err != nil {
		return a, cs, "", s.refused(ctx, id, err)
	}
	// The reservation is settled whatever the caller does meanwhile.
	bg := context.WithoutCancel(ctx)
	pw, ferr := code.NormalizePassword(password)
	if ferr == nil && a.CredentialSetID == cs.ID && s.passwordMatches(a, cs, secret, pw) {
		back, err := s.cfg.Store.ReturnAttempt(bg, id)
		if err != nil {
			// Locked (or expired, or confirmed) since the reservation.
			return a, cs, "", s.refused(bg, id, err)
		}
		return back, cs, pw, nil
	}
	locked, redeeming, err := s.cfg.Store.LockIfSpent(bg, id)
	if err != nil {
		return a, cs, "", err
	}
	if locked {
		if s.cfg.Lockout != nil {
			s.cfg.Lockout()
		}
		if redeeming {
			// Locked with a package waiting or being made: what it
			// carried is revoked (someone is guessing). The set is
			// abandoned by the lock, so a revocation that fails here is
			// finished by the sweep.
			if err := s.revokeSet(bg, a.CredentialSetID, time.Time{}, issuance.ReasonKeyCompromise); err != nil {
				s.cfg.Log.ErrorContext(ctx, "locked with a package waiting: revoking what it carried failed; the sweep retries",
					"credential_set_id", a.CredentialSetID, "cause", err.Error())
			}
			// Stored, the package may have been downloaded; still being
			// made, it can no longer be stored (the lock took the
			// redemption): nothing left escrow.
			if now, err := s.cfg.Store.ActivationByID(bg, id); err != nil || now.PackageSHA256 != "" {
				return a, cs, "", errLockedNowWithPackage
			}
			return a, cs, "", errLockedNowIssuing
		}
		return a, cs, "", errLockedNow
	}
	// Not locked although this reservation was the last: a right password
	// counted meanwhile gave its attempt back, which is the one left.
	return a, cs, "", &WrongPasswordError{AttemptsLeft: max(a.MaxAttempts-a.FailedAttempts, 1)}
}

// sameSet refuses a set whose binding changed between the password check
// and this read: its row was written by something other than credgw.
func (s *Service) sameSet(ctx context.Context, checked, now store.CredentialSet) error {
	if sameBinding(checked, now) {
		return nil
	}
	s.cfg.Log.ErrorContext(ctx, "credential set changed in the database during a redemption: refused (who or what it is for is not what the code was made for)",
		"credential_set_id", checked.ID)
	return denied("this code's credential set changed in the database during the redemption: nothing was issued; tell the credgw operators")
}

// reserveWait is how long a guess waits for the attempts being compared
// to settle before it answers ErrLocked.
const reserveWait = 2 * time.Second

// reserve counts an attempt. When every attempt is counted but the code is
// not locked, passwords are being compared and a right one gives its
// attempt back: it waits for them (briefly) rather than call the code
// locked, so concurrent right passwords are not refused.
func (s *Service) reserve(ctx context.Context, id string) (store.Activation, error) {
	deadline := time.Now().Add(reserveWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		a, err := s.cfg.Store.ReserveAttempt(ctx, id)
		if !errors.Is(err, store.ErrBusy) || time.Now().After(deadline) {
			return a, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return a, ctx.Err()
		case <-t.C:
		}
	}
}

// stateError is the refusal of an activation in a state that takes no
// password (nil for pending or redeeming).
func (s *Service) stateError(a store.Activation) error {
	switch a.State {
	case store.ActLocked:
		return ErrLocked
	case store.ActExpired:
		return ErrExpired
	case store.ActCompleted:
		return ErrAlreadyRedeemed
	case store.ActPending:
		if !s.cfg.Now().Before(a.ExpiresAt) {
			return ErrExpired
		}
	}
	return nil
}

// refused maps a transition the store refused to the activation's state
// now: a locked code answers ErrLocked, never "redeemed already".
func (s *Service) refused(ctx context.Context, id string, err error) error {
	if errors.Is(err, store.ErrLocked) || errors.Is(err, store.ErrBusy) {
		return ErrLocked
	}
	if !errors.Is(err, store.ErrAlreadyUsed) {
		return err
	}
	a, rerr := s.cfg.Store.ActivationByID(ctx, id)
	if rerr != nil {
		return rerr
	}
	if serr := s.stateError(a); serr != nil {
		return serr
	}
	return ErrAlreadyRedeemed
}

// redeem checks the activation and either builds the package (issuing the
// certificates, once) or returns the one an earlier call built (resume).
func (s *Service) redeem(ctx context.Context, req RedeemRequest, progress Progress) (*Delivery, error) {
	if progress == nil {
		progress = func(credgwv1.Stage, int, int, string) {}
	}
	// Checked once the secret is (anyone can send an activation id), and
	// before the password: no attempt is counted for a device that trusts
	// another PKI, or for keys that are not the device's a stored package
	// was made for (a photo of the QR code cannot lock it).
	beforeAttempt := func(a store.Activation) error {
		if err := s.chainsToDevice(req.TrustAnchors); err != nil {
			return err
		}
		if a.State == store.ActRedeeming && a.Package != nil {
			return s.sameDevice(ctx, a, req.CSRs)
		}
		return nil
	}
	a, bound, password, err := s.check(ctx, req.ActivationID, req.Secret, req.Password, beforeAttempt)
	if err != nil {
		return nil, err
	}
	// A code made while notifications were configured, redeemed by a
	// gateway (or a replica) that sends none: its package carries escrowed
	// keys, delivered only where every attempt is told.
	if bound.EscrowKeyID != "" {
		if err := s.escrowDeliveryTold(); err != nil {
			return nil, err
		}
	}
	aead, err := code.SealKey(s.keyed(req.Secret), password)
	if err != nil {
		return nil, err
	}
	if a.State == store.ActRedeeming {
		if a.Package == nil {
			return nil, ErrInProgress
		}
		// Past the confirmation window the package is undelivered (the
		// sweep revokes what it carried): Confirm refuses it, so does a
		// resume.
		if !s.cfg.Now().Before(a.ConfirmBy) {
			return nil, ErrExpired
		}
		if err := s.sameDevice(ctx, a, req.CSRs); err != nil {
			return nil, err
		}
		// The package carries the escrowed key history: the identity's
		// termination and the card are checked again before it goes out
		// (a terminated identity's set is ended and revoked here, in case
		// the call that stored the package could not finish that).
		if cs, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID); err != nil {
			return nil, err
		} else if err := s.refuseIfTerminated(context.WithoutCancel(ctx), cs, true); err != nil {
			return nil, err
		} else if err := s.sameSet(ctx, bound, cs); err != nil {
			return nil, err
		} else if err := s.checkCard(ctx, cs.PIVCertSHA256); err != nil {
			return nil, err
		}
		d, err := s.resume(a, aead)
		if err != nil && s.legacySeal(a) {
			// A package sealed before the pepper (a gateway upgraded
			// while it waited for its confirmation).
			if aead, err = code.SealKey(req.Secret, password); err != nil {
				return nil, err
			}
			d, err = s.resume(a, aead)
		}
		if err != nil {
			return nil, err
		}
		if bound.EscrowKeyID != "" {
			d.Escrowed, d.KeyHistory = true, packageKeyHistory(d.Package, req.Secret, password)
		}
		d.Attestation = attestationSummary(bound.Attestation)
		d.unrecorded = !s.issuanceRecorded(ctx, bound.PersonID, d.RedemptionID)
		return d, nil
	}
	progress(credgwv1.Stage_STAGE_VALIDATING, 1, 1, "checking the certificate requests")
	cs, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID)
	if err != nil {
		return nil, err
	}
	if err := s.sameSet(ctx, bound, cs); err != nil {
		return nil, err
	}
	if err := s.checkNotTerminated(ctx, cs.FASCN, cs.CardUUID, cs.PersonID); err != nil {
		return nil, err
	}
	// The card may have been revoked since the enrollment.
	if err := s.checkCard(ctx, cs.PIVCertSHA256); err != nil {
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
	attCtx := req.AttestationContext
	if attCtx == "" {
		attCtx = a.ID
	}
	verdicts, err := s.verifyAttestations(req.Attestations, req.CSRs, code.AttestationChallenge(req.Secret, attCtx))
	if err != nil {
		return nil, err
	}
	// Every CSR is checked before anything is issued: the CA refusing one
	// while the others are signed beside it would leave them issued and
	// revoked (and the code given back, for another try).
	id, err := s.issuanceIdentity(ctx, cs)
	if err != nil {
		return nil, err
	}
	for _, p := range devProfiles {
		if err := s.cfg.Issuer.CheckCSR(ctx, issuance.Request{Profile: p, CSR: req.CSRs[p], Identity: id, OtherKeys: otherKeys(req.CSRs, p)}); err != nil {
			return nil, err
		}
	}
	// The key history is read before anything is issued: a key in it that
	// no configured CA signed (a re-key without
	// ca.previous_certificate_files), or one the escrow cannot open, would
	// fail the redemption after its certificates were issued.
	var history []*issuance.EscrowedKey
	if cs.EscrowKeyID != "" {
		if history, err = s.keyHistory(ctx, cs); err != nil {
			return nil, err
		}
	}
	rid, err := randomID()
	if err != nil {
		return nil, err
	}
	// The transition to redeeming happens once (one conditional UPDATE).
	now := s.cfg.Now()
	if err := s.cfg.Store.BeginRedemption(ctx, a.ID, rid, now, store.Lease{Holder: s.holder, Until: now.Add(RedemptionLease)}); err != nil {
		err = s.refused(ctx, a.ID, err)
		if errors.Is(err, ErrAlreadyRedeemed) || errors.Is(err, ErrInProgress) {
			// Another call with the right password took the activation
			// first: recorded once per lost race (a retry finds the
			// activation redeeming and is not recorded again).
			s.cfg.Audit.Refused(ctx, "device", "redeem", a.CredentialSetID, "activation_id="+a.ID+"; refused: lost the race to another redemption")
		}
		return nil, err
	}
	s.issuing.Store(rid, struct{}{})
	defer s.issuing.Delete(rid)
	// This call's device and verdict replace an earlier, failed call's.
	if err := s.cfg.Store.SetDevice(ctx, cs.ID, req.Device, verdicts.JSON()); err != nil {
		_ = s.cfg.Store.AbortRedemption(context.WithoutCancel(ctx), a.ID, rid)
		return nil, err
	}
	var made []string
	d, err := s.issue(ctx, a, cs, id, rid, req, verdicts, history, aead, progress, &made)
	if ps := (packageStored{}); errors.As(err, &ps) {
		return nil, ps.error // stored and resumable: nothing to give back
	}
	if err != nil {
		// Bounded: while it runs this process renews the claim, so a CA
		// that never answers would otherwise hold the code for good. Past
		// it, the claim lapses and the lease keeper gives it back.
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveBackTimeout)
		defer cancel()
		return nil, s.giveBack(gctx, a.ID, rid, cs, made, err)
	}
	return d, nil
}

// issuanceIdentity is the verified PIV identity of a set, as its
// certificates are issued for it.
func (s *Service) issuanceIdentity(ctx context.Context, cs store.CredentialSet) (issuance.Identity, error) {
	pivRec, err := s.cfg.Store.PIVCertificate(ctx, cs.PIVCertSHA256)
	if err != nil {
		return issuance.Identity{}, err
	}
	pivCert, err := x509.ParseCertificate(pivRec.DER)
	if err != nil {
		return issuance.Identity{}, err
	}
	return issuance.Identity{RawSubject: cs.RawSubject, Email: cs.Email, UPN: cs.UPN, PIVCertSHA256: cs.PIVCertSHA256,
		FASCN: cs.FASCN, CardUUID: cs.CardUUID, PersonID: cs.PersonID, CardKey: pivCert.PublicKey}, nil
}

// otherKeys are the keys of the CSRs for profiles other than p.
func otherKeys(csrs map[issuance.Profile]*x509.CertificateRequest, p issuance.Profile) []crypto.PublicKey {
	var out []crypto.PublicKey
	for q, c := range csrs {
		if q != p {
			out = append(out, c.PublicKey)
		}
	}
	return out
}

// packageStored is an error after the package was stored: the redemption
// is not given back (the device's retry resumes it).
type packageStored struct{ error }

func (e packageStored) Unwrap() error { return e.error }

// giveBackTimeout bounds a give-back's revocations (giveBack), and
// giveBackStoreTimeout what follows them: the new escrowed key and the
// release.
const (
	giveBackTimeout      = time.Minute
	giveBackStoreTimeout = 15 * time.Second
)

// giveBack undoes a redemption that delivered nothing, so that a corrected
// request (or the device's retry) can redeem the code: what was issued is
// revoked, and the set gets a new escrow key (the old one may be certified
// already) in the transaction that returns the activation to pending; if
// the escrow cannot make one, the claim lapses for KeepLeases to give back
// later. The caller may have gone: ctx must not depend on it.
//
// Only while this call still holds its claim does it touch the set: a claim
// whose lease ran out (the process was thought dead) may have been released
// and redeemed by another process since; then only the certificates this
// call made (made) are revoked.
func (s *Service) giveBack(ctx context.Context, activationID, rid string, cs store.CredentialSet, made []string, cause error) error {
	err := cause
	cur, rerr := s.cfg.Store.ActivationByID(ctx, activationID)
	if rerr == nil && cur.State == store.ActLocked {
		// Wrong passwords locked the code while it issued: its set is
		// abandoned; everything in it goes (the lock revoked what was
		// there then), and the answer is the lock.
		if rerr := s.revokeSet(ctx, cs.ID, time.Time{}, issuance.ReasonCessationOfOperation); rerr != nil {
			return errors.Join(ErrLocked, rerr)
		}
		return ErrLocked
	}
	if rerr != nil {
		// Whether this call's package was stored is not known (the
		// database away): nothing is revoked here. The claim lapses (this
		// call no longer renews it), and the lease keeper gives the code
		// back, revoking what was issued, unless a package was stored:
		// that one is the device's to resume.
		return errors.Join(err, rerr)
	}
	if cur.State == store.ActRedeeming && cur.RedemptionID == rid && cur.Package != nil {
		// This call's package was stored, and the store's answer lost
		// (a connection cut as the UPDATE committed): it is the
		// device's to resume, nothing is given back or revoked.
		return packageStored{cause}
	}
	if cur.State != store.ActRedeeming || cur.RedemptionID != rid || cur.Package != nil {
		for _, serial := range made {
			if rerr := s.cfg.Issuer.Revoke(ctx, serial, issuance.ReasonCessationOfOperation); rerr != nil && !errors.Is(rerr, issuance.ErrAlreadyRevoked) {
				err = errors.Join(err, rerr)
			}
		}
		return err
	}
	if rerr := s.revokeSet(ctx, cs.ID, time.Time{}, issuance.ReasonCessationOfOperation); rerr != nil {
		err = errors.Join(err, rerr)
	}
	// The revocations may have used up ctx (a slow CA): giving the code
	// back gets a time of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveBackStoreTimeout)
	defer cancel()
	r := store.Redemption{ActivationID: activationID, RedemptionID: rid, CredentialSetID: cs.ID}
	keyID := ""
	if cs.EscrowKeyID != "" {
		k, kerr := s.cfg.Escrow.NewKey(ctx, cs.PersonID)
		switch {
		case kerr == nil:
			keyID = k.ID
		case cs.RenewsSetID == "" && s.escrowKeyCertified(ctx, cs):
			// The escrow is failing too (its HSM gone, say), and this
			// issuance certified the old key (an intent counts): given
			// back with it, the code could never be redeemed again. The
			// claim lapses instead: the device hears "being issued" and
			// waits, and the lease keeper (KeepLeases) gives the code
			// back with a new key once the escrow works.
			err = errors.Join(err, kerr)
			if lerr := s.cfg.Store.LapseClaim(ctx, r, s.cfg.Now()); lerr != nil {
				err = errors.Join(err, lerr)
			}
			return err
		default:
			// Not certified: the old key serves the retry. (A renewal's
			// set is given back too: the refused Rekey abandons it at
			// once, and the device's retry makes a new one.)
			err = errors.Join(err, kerr)
		}
	}
	if _, aerr := s.cfg.Store.ReleaseRedemption(ctx, r, keyID, time.Time{}); aerr != nil {
		err = errors.Join(err, aerr)
	}
	return err
}

// escrowKeyCertified reports whether the set's escrowed key has an intent
// or a certificate; when that cannot be read, it says yes (the cautious
// answer: the claim then lapses rather than return with a key no retry
// could use).
func (s *Service) escrowKeyCertified(ctx context.Context, cs store.CredentialSet) bool {
	k, err := s.cfg.Store.EscrowKey(ctx, cs.EscrowKeyID, cs.PersonID)
	if err != nil {
		return true
	}
	certified, err := s.cfg.Store.KeyCertified(ctx, k.SPKISHA256)
	return err != nil || certified
}

func contains(ps []issuance.Profile, p issuance.Profile) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// errOtherDevice refuses a resume whose CSRs are not of the keys the
// stored package certifies.
var errOtherDevice = denied("a resume must come from the same device that began the redemption: " +
	"send the CSRs of the device keys of the first request. This code's credentials were issued to other keys " +
	"(another device, or an earlier run that refused the download and dropped its keys): enroll again with the card")

// sameDevice refuses a resume by another device than the one the package
// was made for: the secret and password prove the code, the CSRs' public
// keys prove the device (it keeps its keys across resumes). The stored
// package carries the escrowed key history: it goes only to the keys its
// certificates certify — each of them, and nothing more. A package that
// certifies no device key cannot be bound to a device and is not resumed.
func (s *Service) sameDevice(ctx context.Context, a store.Activation, csrs map[issuance.Profile]*x509.CertificateRequest) error {
	var m credgwv1.Manifest
	if err := proto.Unmarshal(a.Manifest, &m); err != nil {
		return fmt.Errorf("activation: the stored manifest of activation %s: %w", a.ID, err)
	}
	matched := 0
	for _, it := range m.GetItems() {
		p, ok := protoProfiles[it.GetProfile()]
		if it.GetKind() != credgwv1.ItemKind_ITEM_KIND_CERTIFICATE || !ok || p == issuance.KeyManagement {
			continue
		}
		csr := csrs[p]
		if csr == nil {
			return errOtherDevice
		}
		rec, err := s.cfg.Store.Certificate(ctx, NormalizeSerial(it.GetSerial()))
		if err != nil {
			return fmt.Errorf("activation: the %s certificate %s of the stored package: %w", p, it.GetSerial(), err)
		}
		spki, err := issuance.SPKIHash(csr.PublicKey)
		if err != nil || spki != rec.SPKISHA256 {
			return errOtherDevice
		}
		// The public key is no secret (the certificates carry it): the
		// CSR's signature is what proves the device holds the key.
		if csr.CheckSignature() != nil {
			return errOtherDevice
		}
		matched++
	}
	if matched == 0 || matched != len(csrs) {
		return errOtherDevice
	}
	return nil
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
// made receives the serials of the certificates issued, also on failure.
func (s *Service) issue(ctx context.Context, a store.Activation, cs store.CredentialSet, id issuance.Identity, rid string, req RedeemRequest, verdicts Verdicts,
	history []*issuance.EscrowedKey, aead cipher.AEAD, progress Progress, made *[]string) (*Delivery, error) {
	profiles := s.cfg.CredentialTypes[cs.CredentialType]
	othersThan := func(p issuance.Profile) []crypto.PublicKey { return otherKeys(req.CSRs, p) }
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
				HardwareBacked: verdicts.hardware(p) && !req.SoftwareRenewal, OtherKeys: othersThan(p)})
			if err != nil {
				return err
			}
			if escrowed[i] != nil {
				// Linked at once: if another issuance fails, the key of a
				// certificate that exists is kept to its retain_until,
				// not deleted as never certified by the sweep.
				if err := s.cfg.Escrow.Certified(context.WithoutCancel(gctx), escrowed[i].ID, got.Certificate.SerialNumber.Text(16),
					got.Certificate.NotAfter); err != nil {
					return err
				}
			}
			mu.Lock()
			defer mu.Unlock()
			issued[i] = got
			done++
			progress(credgwv1.Stage_STAGE_ISSUING, done, len(profiles), "issued the "+string(p)+" certificate")
			return nil
		})
	}
	err := g.Wait()
	for _, got := range issued {
		if got != nil {
			*made = append(*made, got.Certificate.SerialNumber.Text(16))
		}
	}
	if err != nil {
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
		if err := addKeyHistory(escrowed[i], got.Certificate, history, req.Secret, req.Password, add, got.Chain, s.cfg.PreviousCAs); err != nil {
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
	// Not cut short by the device hanging up (its retry resumes what is
	// stored), but bounded (a database that hangs would otherwise hold
	// the claim, renewed, for good); a commit whose answer is lost all
	// the same is found by giveBack.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveBackTimeout)
	err = s.cfg.Store.StorePackage(sctx, a.ID, rid, sealed, hex.EncodeToString(sum[:]), int64(len(plain)), manifest,
		s.cfg.Now().Add(s.cfg.ConfirmWindow))
	cancel()
	if err != nil {
		return nil, err
	}
	// A termination recorded while this was issued (RevokeIdentity
	// records it, then works through the sets, maybe past this one
	// before its certificates existed): nothing is delivered, and what
	// was issued is revoked here.
	if err := s.refuseIfTerminated(context.WithoutCancel(ctx), cs, false); errors.Is(err, ErrTerminated) {
		return nil, err
	} else if err != nil {
		// Unknown: nothing is delivered now, and nothing undone: the
		// package stays stored, and the device's retry resumes it
		// through the same check.
		return nil, packageStored{fmt.Errorf("the termination check after storing the package: %w", err)}
	}
	d := &Delivery{RedemptionID: rid, Manifest: pkg.Manifest(), Package: plain, SHA256: sum[:], Attestation: verdicts.Summary(), Escrowed: cs.EscrowKeyID != ""}
	for _, k := range history {
		d.KeyHistory = append(d.KeyHistory, k.CertSerial)
	}
	return d, nil
}

// packageKeyHistory reads the certificate serials of the earlier keys in a
// stored package's encryption.p12 (for the audit event of a resume; the
// gateway has the secret and the password then): "unreadable" if it
// cannot.
func packageKeyHistory(pkg, secret []byte, password string) []string {
	var p credgwv1.CredentialPackage
	if err := proto.Unmarshal(pkg, &p); err != nil {
		return []string{"unreadable"}
	}
	pw, err := code.NormalizePassword(password)
	if err != nil {
		return []string{"unreadable"}
	}
	p12pw, err := code.PKCS12Password(secret, pw)
	if err != nil {
		return []string{"unreadable"}
	}
	for _, it := range p.GetItems() {
		if it.GetName() != "encryption.p12" {
			continue
		}
		entries, _, err := pfx.Decode(it.GetData(), p12pw)
		if err != nil || len(entries) == 0 {
			return []string{"unreadable"}
		}
		var out []string
		for _, e := range entries[1:] { // the first is the current key
			out = append(out, e.Certificate.SerialNumber.Text(16))
		}
		return out
	}
	return nil
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
//
// Earlier keys certified before the issuing CA was re-keyed carry the old
// CA key's signature: the old CA certificates that signed them (from
// previous, ca.previous_certificate_files) go beside the file, each once.
func addKeyHistory(current *issuance.EscrowedKey, cert *x509.Certificate, history []*issuance.EscrowedKey, secret []byte, password string,
	add func(string, credgwv1.ItemKind, credgwv1.Profile, string, []byte, [][]byte, int32), caChain, previous []*x509.Certificate) error {
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
	certs, err := historyCertificates(history)
	if err != nil {
		return err
	}
	for i, k := range history {
		name := code.KeyHistoryName(len(entries), certs[i])
		if k.Compromised {
			name += code.CompromisedMark
		}
		entries = append(entries, pfx.Entry{Key: k.Key, Certificate: certs[i], FriendlyName: name})
	}
	earlierCAs, err := earlierIssuers(certs, caChain[0], previous)
	if err != nil {
		return err
	}
	p12, err := pfx.Encode(entries, caChain, p12pw, code.TransportPKCS12Iterations)
	if err != nil {
		return fmt.Errorf("activation: PKCS#12: %w", err)
	}
	add("encryption.p12", credgwv1.ItemKind_ITEM_KIND_PKCS12, credgwv1.Profile_PROFILE_KEY_MANAGEMENT, cert.SerialNumber.Text(16), p12, earlierCAs, int32(len(entries)))
	return nil
}

// keyHistory unseals the person's earlier escrowed keys (Escrow.History)
// and checks that a device can verify each: its certificate is of its key,
// and signed by the issuing CA or one of ca.previous_certificate_files.
func (s *Service) keyHistory(ctx context.Context, cs store.CredentialSet) ([]*issuance.EscrowedKey, error) {
	history, err := s.cfg.Escrow.History(ctx, cs.PersonID, cs.EscrowKeyID, MaxKeyHistory)
	if err != nil {
		return nil, fmt.Errorf("activation: the key history: %w", err)
	}
	certs, err := historyCertificates(history)
	if err != nil {
		return nil, err
	}
	if _, err := earlierIssuers(certs, s.cfg.Issuer.Chain()[0], s.cfg.PreviousCAs); err != nil {
		return nil, err
	}
	return history, nil
}

// historyCertificates parses the certificate of each escrowed key of a key
// history, and checks that it certifies that key.
func historyCertificates(history []*issuance.EscrowedKey) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(history))
	for i, k := range history {
		c, err := x509.ParseCertificate(k.CertDER)
		if err != nil {
			return nil, fmt.Errorf("activation: the certificate of escrowed key %s: %w", k.ID, err)
		}
		if !k.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
			return nil, fmt.Errorf("activation: escrowed key %s is not the key of its recorded certificate %s (check the escrow row and the certificates table)", k.ID, k.CertSerial)
		}
		out[i] = c
	}
	return out, nil
}

// earlierIssuers is what the device needs, beyond the issuing CA, to verify
// the certificates of earlier keys: the old CA certificate of each that the
// issuing CA's current key did not sign. One that no configured CA signed
// is refused (a precondition: the administrator's to fix): every device
// would refuse the package.
func earlierIssuers(earlier []*x509.Certificate, issuing *x509.Certificate, previous []*x509.Certificate) ([][]byte, error) {
	var out [][]byte
	sent := make([]bool, len(previous))
	for _, c := range earlier {
		if bytes.Equal(c.AuthorityKeyId, issuing.SubjectKeyId) && len(c.AuthorityKeyId) > 0 || c.CheckSignatureFrom(issuing) == nil {
			continue
		}
		found := false
		for i, p := range previous {
			if !bytes.Equal(c.RawIssuer, p.RawSubject) || c.CheckSignatureFrom(p) != nil {
				continue
			}
			found = true
			if !sent[i] {
				sent[i] = true
				out = append(out, p.Raw)
			}
			break
		}
		if !found {
			return nil, fmt.Errorf("%w: the escrowed key of certificate %s in this person's key history was certified by a key of %q that is not the issuing CA's: "+
				"after a re-key of the CA, its operators must add the old CA certificate to ca.previous_certificate_files", ErrPrecondition, c.SerialNumber.Text(16), c.Issuer)
		}
	}
	return out, nil
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
