// Package lifecycle is what happens to derived credentials after they are
// issued: revocation by their owner, an administrator or the CA's own
// checks, termination of a PIV identity (the Admin API or the signed
// webhook), the linkage checks of the card behind them (SP 800-157r1
// §2.4), and the periodic sweep. Every revocation goes through one fan-out
// here — revoke, record in the audit log, notify the person — whoever asks
// for it.
package lifecycle

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// Defaults of the linkage section (credgw.yaml), defined here only.
const (
	// DefaultFirstCheck: the first check comes within a day of issuance,
	// so a card revoked right after it enrolled does not keep its derived
	// credentials for a week (the Common Policy, §3.2.3, asks a recheck 7 days after issuance).
	DefaultFirstCheck = 24 * time.Hour
	DefaultInterval   = 24 * time.Hour
	DefaultMaxUnknown = 7 * 24 * time.Hour
	DefaultOnUnknown  = "alert"
	// DefaultConcurrency: checks of one run made at once.
	DefaultConcurrency = 4
)

// Linkage schedules the re-checks of the PIV Authentication certificates
// that have live derived credentials.
type Linkage struct {
	// FirstCheck is the delay from enrollment to the first check.
	FirstCheck time.Duration
	// Interval between checks.
	Interval time.Duration
	// MaxUnknown is how long the status may stay unavailable before
	// OnUnknown applies.
	MaxUnknown time.Duration
	// OnUnknown is "alert" (log and metric, keep the credentials) or
	// "revoke".
	OnUnknown string
	// OnCardExpiry is "keep" (default: SP 800-157r1 §2.3, derived
	// credentials are unaffected when the card is replaced) or "revoke".
	OnCardExpiry string
	// Concurrency is how many checks one run makes at once.
	Concurrency int
}

// CardStatus checks a card's kept PIV Authentication certificate (a
// *piv.Verifier).
type CardStatus interface {
	VerifyPIVAuth(ctx context.Context, leaf *x509.Certificate, intermediates []*x509.Certificate) (*piv.Result, error)
	// StatusAtExpiry is the status of a certificate that expired: was it
	// revoked before its end?
	StatusAtExpiry(ctx context.Context, leaf *x509.Certificate) error
}

// Store is what the lifecycle needs of the store.
type Store interface {
	store.LinkageStore
	Certificate(ctx context.Context, serial string) (store.CertificateRecord, error)
	PIVCertificate(ctx context.Context, sha256 string) (store.PIVCertificate, error)
	RememberDelivery(ctx context.Context, signature string, expires time.Time) (bool, error)
	ForgetDelivery(ctx context.Context, signature string) error
	Terminate(ctx context.Context, t store.Termination) error
	CredentialSet(ctx context.Context, id string) (store.CredentialSet, error)
	TerminationUnfinished(ctx context.Context, sel store.IdentitySelector, before time.Time) (bool, error)
}

// ErrReplayed: a webhook request that was accepted already (the same
// signature inside its timestamp window).
var ErrReplayed = errors.New("lifecycle: this request was accepted already (a replay); send a new request with a fresh timestamp to repeat it")

// errBeingTerminated: a termination of the identity was accepted moments
// ago and is being carried out (answered as a replay: nothing to do).
var errBeingTerminated = fmt.Errorf("%w (a termination of this identity was accepted moments ago and is being carried out)", ErrReplayed)

// Config configures the service.
type Config struct {
	Store      Store
	Activation *activation.Service
	CA         *issuance.CA
	Verifier   CardStatus
	Audit      *audit.Log
	Notify     *notify.Outbox
	Log        *slog.Logger
	Linkage    Linkage
	// UnknownStatus, if set, counts each linkage check whose card status
	// was unavailable (a metric).
	UnknownStatus func()
	// Overdue, if set, is told after each linkage run how long the oldest
	// check still due has been due (0: none; a gauge).
	Overdue func(time.Duration)
	Now     func() time.Time
}

// Service runs the lifecycle.
type Service struct{ cfg Config }

// New fills in the defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Activation == nil || cfg.CA == nil || cfg.Verifier == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("lifecycle: needs a store, the activation service, a CA, a verifier, an audit log and a logger")
	}
	l := &cfg.Linkage
	if l.FirstCheck == 0 {
		l.FirstCheck = DefaultFirstCheck
	}
	if l.Interval == 0 {
		l.Interval = DefaultInterval
	}
	if l.MaxUnknown == 0 {
		l.MaxUnknown = DefaultMaxUnknown
	}
	if l.OnUnknown == "" {
		l.OnUnknown = DefaultOnUnknown
	}
	if l.OnUnknown != "alert" && l.OnUnknown != "revoke" {
		return nil, errors.New("lifecycle: linkage on_unknown: alert or revoke")
	}
	if l.Concurrency == 0 {
		l.Concurrency = DefaultConcurrency
	}
	if l.Concurrency < 1 {
		return nil, errors.New("lifecycle: linkage concurrency: at least 1")
	}
	if cfg.UnknownStatus == nil {
		cfg.UnknownStatus = func() {}
	}
	if cfg.Overdue == nil {
		cfg.Overdue = func(time.Duration) {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// RevokeOwn revokes one of the person's own credential sets (a lost or
// replaced device) at their request, through the API or the portal, and
// returns the set as it is after.
func (s *Service) RevokeOwn(ctx context.Context, personID, setID string, reason issuance.RevocationReason, portal bool) (activation.SetView, error) {
	if reason == issuance.ReasonUnspecified {
		reason = issuance.ReasonCessationOfOperation // the device is no longer used
	}
	cs, err := s.cfg.Activation.RevokeSet(ctx, personID, setID, reason)
	if err != nil {
		return activation.SetView{}, err
	}
	via, body := "by its owner", "Derived PIV credentials of yours were revoked at your request."
	if portal {
		via, body = "by its owner (portal)", "Derived PIV credentials of yours were revoked at your request (portal)."
	}
	s.cfg.Audit.Set(ctx, "piv:"+personID, "revoke", cs.ID, via+"; reason="+strconv.Itoa(int(reason)))
	s.cfg.Notify.Set(ctx, "revocation", cs.ID, "Derived PIV credentials were revoked", body)
	s.cfg.Log.InfoContext(ctx, "credential set revoked "+via, "person_id", personID, "credential_set_id", cs.ID, "reason", reason.String())
	return s.cfg.Activation.View(ctx, *cs)
}

// RevokeCertificate revokes one certificate by serial (an administrator,
// with a comment for the record) and returns its record. The event names
// the person whose certificate it was.
func (s *Service) RevokeCertificate(ctx context.Context, serial string, reason issuance.RevocationReason, comment string) (store.CertificateRecord, error) {
	endedSet, setErr := s.endUnconfirmedSet(ctx, serial, reason)
	err := setErr
	if endedSet || setErr == nil {
		// With its set ended (RevokeSet ran, maybe failing for another
		// of its certificates), the certificate itself is revoked here
		// if RevokeSet did not get to it.
		err = s.cfg.CA.Revoke(ctx, serial, reason)
		if endedSet && errors.Is(err, issuance.ErrAlreadyRevoked) {
			err = nil // revoked with its set
		}
	}
	if err != nil {
		// Refused (no such certificate, revoked already, a bad reason) or
		// failed: recorded either way, as every administrator action is.
		e := store.AuditEvent{Actor: "admin", Action: "revoke", Outcome: audit.Error, Serials: []string{activation.NormalizeSerial(serial)},
			Detail: "reason=" + protoName(reason) + "; " + err.Error()}
		if errors.Is(err, issuance.ErrNotIssued) || errors.Is(err, issuance.ErrAlreadyRevoked) || errors.Is(err, issuance.ErrBadRequest) ||
			errors.Is(err, issuance.ErrOtherIssuer) {
			e.Outcome = audit.Refused
		}
		s.cfg.Audit.Record(ctx, e)
		return store.CertificateRecord{}, err
	}
	serial = activation.NormalizeSerial(serial)
	rec, err := s.cfg.Store.Certificate(ctx, serial)
	e := store.AuditEvent{Actor: "admin", Action: "revoke", Serials: []string{serial}, Detail: "reason=" + protoName(reason),
		PersonID: rec.PersonID}
	if rec.CredentialSetID != "" {
		e.Detail += "; credential_set_id=" + rec.CredentialSetID
	}
	if comment != "" {
		e.Detail += "; comment=" + comment
	}
	s.cfg.Audit.Record(ctx, e)
	if rec.CredentialSetID != "" {
		// The holder is told of every revocation (FIPS 201-3 §2.10.2),
		// an administrator's included.
		s.cfg.Notify.Set(ctx, "revocation", rec.CredentialSetID, "A derived PIV credential was revoked",
			"An administrator revoked one of your derived PIV credentials (certificate serial "+serial+", reason "+reason.String()+").")
	}
	s.cfg.Log.InfoContext(ctx, "certificate revoked by an administrator", "serial", serial, "reason", reason.String(), "person_id", rec.PersonID)
	if err == nil && setErr != nil {
		// Recorded and told; what else of its set failed is the error.
		err = fmt.Errorf("serial %s is revoked, but %w", serial, setErr)
	}
	return rec, err
}

// endUnconfirmedSet revokes the whole set of a certificate an
// administrator revokes when no device confirmed it yet: its package
// (escrowed keys included) could otherwise still be resumed and
// confirmed, an active set of revoked certificates whose keys then join
// later key histories as delivered. The set's activation ends first (one
// transaction), before any certificate of it is revoked, so no
// confirmation can come between; the person is told the package may have
// been downloaded (activation.RevokeSet). It reports whether it revoked a
// set; a certificate it does not know, or of a set that is not pending or
// redeeming, is left to the CA alone. ended is true once RevokeSet ran,
// even if it failed part way (its error is then returned too).
func (s *Service) endUnconfirmedSet(ctx context.Context, serial string, reason issuance.RevocationReason) (bool, error) {
	if !reason.EndEntity() {
		return false, nil // the CA refuses it, recorded as refused
	}
	rec, err := s.cfg.Store.Certificate(ctx, activation.NormalizeSerial(serial))
	if err != nil || rec.CredentialSetID == "" || rec.Revoked() {
		return false, nil
	}
	cs, err := s.cfg.Store.CredentialSet(ctx, rec.CredentialSetID)
	if err != nil {
		return false, fmt.Errorf("the credential set of serial %s could not be read (nothing was revoked; try again): %w", rec.Serial, err)
	}
	if cs.State != store.SetPending && cs.State != store.SetRedeeming {
		return false, nil
	}
	if _, err := s.cfg.Activation.RevokeSet(ctx, cs.PersonID, cs.ID, reason); err != nil {
		s.cfg.Audit.Failed(ctx, "admin", "revoke-set", cs.ID, "reason="+protoName(reason)+"; a certificate of it was revoked before a device confirmed it; error: "+err.Error())
		return true, fmt.Errorf("revoking the rest of its unconfirmed credential set %s failed (the sweep finishes it; or revoke the person's sets with RevokeIdentity): %w", cs.ID, err)
	}
	s.cfg.Audit.Set(ctx, "admin", "revoke-set", cs.ID, "reason="+protoName(reason)+"; a certificate of it was revoked before a device confirmed it")
	return true, nil
}

// RevokeIdentity revokes every live derived credential of a card or person
// (an administrator) and returns the serials it revoked; an identity that
// never had a credential set is activation.ErrNoSuch.
func (s *Service) RevokeIdentity(ctx context.Context, sel store.IdentitySelector, reason issuance.RevocationReason) ([]string, error) {
	// An identity never seen is a mistyped id, not nothing to do.
	if err := s.cfg.Activation.KnownIdentity(ctx, sel); err != nil {
		return nil, err
	}
	serials, err := s.cfg.Activation.RevokeIdentity(ctx, sel, reason, false, "")
	if err != nil {
		// Some sets may have been revoked before one failed: what was
		// revoked is recorded (a repeat would not find it live again),
		// and the holder told.
		e := audit.Identity("admin", "revoke-identity", sel, serials, "reason="+protoName(reason)+"; error: "+err.Error())
		e.Outcome = audit.Error
		s.cfg.Audit.Record(ctx, e)
		if len(serials) > 0 {
			s.cfg.Notify.Identity(ctx, "revocation", sel, "Your derived PIV credentials were revoked", "An administrator revoked derived PIV credentials of yours.")
		}
		return nil, err
	}
	s.cfg.Audit.Record(ctx, audit.Identity("admin", "revoke-identity", sel, serials, "reason="+protoName(reason)))
	s.cfg.Notify.Identity(ctx, "revocation", sel, "Your derived PIV credentials were revoked", "An administrator revoked your derived PIV credentials.")
	s.cfg.Log.InfoContext(ctx, "identity's derived credentials revoked by an administrator", "identity", sel.String(), "reason", reason.String(),
		"revoked", len(serials))
	return serials, nil
}

// Terminate records the PIV identity as terminated (no PKI-AUTH,
// enrollment or redemption from now on) and revokes all its derived
// credentials (cessationOfOperation): FIPS 201-3 §2.9.4, SP 800-157r1 §2.4.
// actor is "admin" or "webhook"; source the caller's address, if known.
func (s *Service) Terminate(ctx context.Context, actor string, sel store.IdentitySelector, comment, source string) ([]string, error) {
	serials, err := s.cfg.Activation.RevokeIdentity(ctx, sel, issuance.ReasonCessationOfOperation, true, comment)
	if err != nil && !errors.Is(err, store.ErrNoSelector) && !errors.Is(err, activation.ErrInvalid) {
		// Recorded as an error: the identity is terminated, but some of
		// its credentials may still be live until the request is repeated
		// (or the sweep finishes the revocation).
		e := audit.Identity(actor, "terminate", sel, serials, terminationDetail(comment, "error: "+err.Error()))
		e.Outcome, e.Source = audit.Error, source
		s.cfg.Audit.Record(ctx, e)
		// What was revoked is told now: the sweep that finishes the
		// termination tells only of what it revokes itself.
		if len(serials) > 0 {
			s.cfg.Notify.Identity(ctx, "termination", sel, "Your derived PIV credentials were revoked", activation.TerminationNotice(sel))
		}
	}
	if err != nil {
		return nil, err
	}
	e := audit.Identity(actor, "terminate", sel, serials, terminationDetail(comment, ""))
	e.Source = source
	s.cfg.Audit.Record(ctx, e)
	s.cfg.Notify.Identity(ctx, "termination", sel, "Your derived PIV credentials were revoked", activation.TerminationNotice(sel))
	s.cfg.Log.InfoContext(ctx, "PIV identity terminated", "by", actor, "identity", sel.String(), "revoked", len(serials), "source", source)
	return serials, nil
}

// terminationDetail is a terminate event's detail: the termination's
// comment (its why, in the chain: the terminations table alone could be
// edited unseen), then more.
func terminationDetail(comment, more string) string {
	var parts []string
	if comment != "" {
		parts = append(parts, "comment="+comment)
	}
	if more != "" {
		parts = append(parts, more)
	}
	return strings.Join(parts, "; ")
}

// TerminateOnce is Terminate for a signed webhook request: the request's
// signature is recorded until its timestamp window closes (every replica
// sees it), and a replay inside the window is refused with ErrReplayed
// and changes nothing. A termination that fails forgets the signature, so
// that the sender may send the same request again.
func (s *Service) TerminateOnce(ctx context.Context, signature string, window time.Time, sel store.IdentitySelector, comment, source string) ([]string, error) {
	// A termination of the identity accepted moments ago and not finished
	// is being carried out by that request: another (a resend, or a new
	// request a sender made on its own timeout) would run a second one
	// beside it, with a second event and notice.
	now := s.cfg.Now()
	if any, err := s.cfg.Store.TerminationUnfinished(ctx, sel, now.Add(time.Minute)); err != nil {
		return nil, err
	} else if any {
		if old, err := s.cfg.Store.TerminationUnfinished(ctx, sel, now.Add(-activation.TerminationGrace)); err != nil {
			return nil, err
		} else if !old {
			s.cfg.Log.WarnContext(ctx, "termination webhook for an identity whose termination is being carried out; ignored", "identity", sel.String(), "source", source)
			return nil, errBeingTerminated
		}
	}
	// The termination is recorded before the signature: a process that
	// dies between the two leaves a termination whose resend is carried
	// out (its signature was not remembered), and one that dies after
	// leaves a termination not finished, which the resend (or else the
	// sweep) carries out. A replay of a finished one changes nothing.
	if err := s.cfg.Store.Terminate(ctx, store.Termination{Selector: sel, TerminatedAt: s.cfg.Now(), Comment: comment}); err != nil {
		return nil, err
	}
	first, err := s.cfg.Store.RememberDelivery(ctx, signature, window)
	if err != nil {
		return nil, err
	}
	if !first {
		// Unfinished and older than a call in flight takes: interrupted
		// (a younger one is still being carried out by the first request).
		unfinished, err := s.cfg.Store.TerminationUnfinished(ctx, sel, s.cfg.Now().Add(-activation.TerminationGrace))
		if err != nil {
			return nil, err
		}
		if !unfinished {
			s.cfg.Log.WarnContext(ctx, "termination webhook replayed; ignored", "identity", sel.String(), "source", source)
			return nil, ErrReplayed
		}
		// The request was accepted by a process that died before it
		// was carried out. Its signature stays remembered.
		return s.Terminate(ctx, "webhook", sel, comment, source)
	}
	serials, err := s.Terminate(ctx, "webhook", sel, comment, source)
	if err != nil {
		if ferr := s.cfg.Store.ForgetDelivery(context.WithoutCancel(ctx), signature); ferr != nil {
			err = errors.Join(err, ferr)
		}
		return nil, err
	}
	return serials, nil
}

// ForceCRL rebuilds the CRL now and says which it is.
func (s *Service) ForceCRL(ctx context.Context) (number int64, thisUpdate, nextUpdate time.Time, err error) {
	if _, err := s.cfg.CA.CRL(ctx, true); err != nil {
		e := store.AuditEvent{Actor: "admin", Action: "force-crl", Outcome: audit.Error, Detail: "error: " + err.Error()}
		s.cfg.Audit.Record(ctx, e)
		return 0, time.Time{}, time.Time{}, err
	}
	number, thisUpdate, nextUpdate = s.cfg.CA.CRLInfo(ctx)
	// The CA key signed on an administrator's word: on the record.
	s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "admin", Action: "force-crl", Detail: "crl_number=" + strconv.FormatInt(number, 10)})
	// The retired keys' CRLs too (ca.retired), each failure on the record
	// beside the current CRL's success.
	if err := s.cfg.CA.RetiredCRLs(ctx, true); err != nil {
		s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "admin", Action: "force-crl", Outcome: audit.Error, Detail: "retired keys: error: " + err.Error()})
		return number, thisUpdate, nextUpdate, fmt.Errorf("the current CRL is number %d, but %w", number, err)
	}
	return number, thisUpdate, nextUpdate, nil
}

// protoName is the reason as the API's enum names it (the audit log has
// always recorded it so).
func protoName(r issuance.RevocationReason) string { return credgwv1.RevocationReason(r).String() }
