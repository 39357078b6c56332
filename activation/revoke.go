package activation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

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

// ErrNotYours means a credential set belongs to another person.
var ErrNotYours = errors.New("activation: no such credential set of yours")

// RevokeSet revokes every certificate of one of the person's credential
// sets (lost or replaced device) and marks it revoked. Revoking a revoked set
// is not an error.
func (s *Service) RevokeSet(ctx context.Context, personID, setID string, reason issuance.RevocationReason) (*store.CredentialSet, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	cs, err := s.cfg.Store.CredentialSet(ctx, setID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && piv.FoldPersonID(cs.PersonID) != piv.FoldPersonID(personID)) {
		return nil, ErrNotYours
	}
	if err != nil {
		return nil, err
	}
	// A renewal not confirmed yet (a package stored for the same device)
	// ends with the set: a lost phone's renewal is the lost phone's.
	renewals, err := s.cfg.Store.LiveRenewals(ctx, setID)
	if err != nil {
		return nil, err
	}
	// The activations are ended first (the set's and its renewal's, in
	// one transaction), so nothing can be redeemed, resumed or confirmed
	// after.
	unconfirmed, err := s.cfg.Store.RevokeCredentialSet(ctx, setID, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	s.revokedUnconfirmed(ctx, unconfirmed)
	if err := s.revokeSet(ctx, setID, time.Time{}, reason); err != nil {
		return nil, err
	}
	for _, r := range renewals {
		// Only what the store ended: a renewal confirmed before the
		// revocation is the device's credential now. (One begun after
		// the listing was ended too; the sweep revokes what it carries.)
		r, err := s.cfg.Store.CredentialSet(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if r.State != store.SetRevoked {
			continue
		}
		if err := s.revokeSet(ctx, r.ID, time.Time{}, reason); err != nil {
			return nil, err
		}
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

// refuseIfTerminated refuses to deliver a set whose identity is
// terminated, ending its activation and revoking what it holds: the
// termination may have passed over the set before its certificates were
// issued. A failed revocation is finished by the sweep (the set is revoked
// with live certificates).
//
// downloaded says whether the set's stored package may have gone to a
// device already (a resume: an earlier call may have delivered it), so
// that its revocation is told as a key delivery.
func (s *Service) refuseIfTerminated(ctx context.Context, cs store.CredentialSet, downloaded bool) error {
	err := s.checkNotTerminated(ctx, cs.FASCN, cs.CardUUID, cs.PersonID)
	if !errors.Is(err, ErrTerminated) {
		return err
	}
	unconfirmed, rerr := s.cfg.Store.RevokeCredentialSet(ctx, cs.ID, s.cfg.Now())
	if rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
		s.cfg.Log.ErrorContext(ctx, "terminated during a redemption: ending its activation failed", "credential_set_id", cs.ID, "cause", rerr.Error())
	}
	if downloaded {
		s.revokedUnconfirmed(ctx, unconfirmed)
	}
	if rerr := s.revokeSet(ctx, cs.ID, time.Time{}, issuance.ReasonCessationOfOperation); rerr != nil {
		s.cfg.Log.ErrorContext(ctx, "terminated during a redemption: revoking what it issued failed; the sweep retries", "credential_set_id", cs.ID, "cause", rerr.Error())
	}
	return err
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
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	return s.revokeIdentity(ctx, sel, reason, terminate, comment)
}

// revokeIdentity is RevokeIdentity within ctx (the sweep's bound, not a
// time of its own).
func (s *Service) revokeIdentity(ctx context.Context, sel store.IdentitySelector, reason issuance.RevocationReason, terminate bool, comment string) ([]string, error) {
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
	if terminate {
		// Retired first, so that no key history delivered from here on
		// carries the keys; a failure here revokes all the same (it left
		// every credential good until the sweep finished the
		// termination), and the termination stays unfinished.
		if err := s.retireEscrowKeys(ctx, sel, sets); err != nil {
			errs = append(errs, err)
		}
	}
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
			unconfirmed, err := s.cfg.Store.RevokeCredentialSet(ctx, cs.ID, s.cfg.Now())
			if err != nil {
				errs = append(errs, fmt.Errorf("credential set %s: %w", cs.ID, err))
				continue
			}
			s.revokedUnconfirmed(ctx, unconfirmed)
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
	if terminate && len(errs) == 0 {
		// Carried out: the sweep need not do it again (it does every
		// termination not finished, such as one whose process died
		// here).
		if err := s.cfg.Store.FinishTermination(ctx, sel, s.cfg.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	return serials, errors.Join(errs...)
}

// retireEscrowKeys retires the escrowed keys of the address person ids a
// termination ends (those of the identity's sets, and the selector's own):
// with email or UPN person ids, an address given to a new hire would hand
// the new holder the departed person's key history. FASC-N person ids are
// never given to another person, and their key history follows the person
// to a replacement card, so they keep it. Only keys made up to the
// termination's recorded time are retired (the sweep or a resend may
// finish it later, after someone else enrolled under the address). The
// keys stay in escrow, for recovery by the agency's own means.
func (s *Service) retireEscrowKeys(ctx context.Context, sel store.IdentitySelector, sets []store.CredentialSet) error {
	persons := map[string]bool{}
	if strings.Contains(sel.PersonID, "@") {
		persons[sel.PersonID] = true
	}
	for _, cs := range sets {
		if strings.Contains(cs.PersonID, "@") {
			persons[cs.PersonID] = true
		}
	}
	if len(persons) == 0 {
		return nil
	}
	at, err := s.cfg.Store.TerminatedAt(ctx, sel)
	if err != nil {
		return fmt.Errorf("the termination's time: %w", err)
	}
	for p := range persons {
		n, err := s.cfg.Store.RetireEscrowKeys(ctx, p, at)
		if err != nil {
			return fmt.Errorf("retiring the escrowed keys of %s: %w", p, err)
		}
		if n > 0 {
			s.cfg.Log.InfoContext(ctx, "termination: escrowed keys retired from later key histories", "person_id", p, "keys", n)
		}
	}
	return nil
}

// checkReason refuses, before anything changes, a reason the CA would
// refuse for a derived credential: a set must not be marked revoked while
// its certificates stay good.
func checkReason(r issuance.RevocationReason) error {
	if !r.EndEntity() {
		return invalid("revocation reason %s (%d) is not allowed for a derived credential: use unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation or privilege-withdrawn", r, int(r))
	}
	return nil
}

// revokedUnconfirmed tells of the sets revoked whose package was stored
// and never confirmed: a device may have downloaded it, with copies of the
// person's escrowed keys, and every key delivery is told (Common Policy
// §4.12.1). The sweep, which tells of packages not confirmed in time,
// does not find these: their revocation took the package away.
func (s *Service) revokedUnconfirmed(ctx context.Context, setIDs []string) {
	for _, id := range setIDs {
		s.cfg.Audit.Set(ctx, "system", "undelivered", id, "revoked with a package waiting for its confirmation; it may have been downloaded")
		s.cfg.Notify.Set(ctx, "key-delivery", id, "Your encryption keys may have been delivered to a device",
			"A device downloaded, or may have downloaded, your derived credentials and copies of your escrowed encryption keys, "+
				"and had not confirmed installing them when the credentials were revoked. If that device was not yours, your "+
				"encryption keys may have been copied: tell your security office.")
	}
}

// TerminationNotice is what a termination of sel tells the person: a
// person id ends the PIV identity account (every card's derived
// credentials); a card (card_uuid, fascn) ends that card's, and the
// person's others stay (a replacement card keeps the person's history).
func TerminationNotice(sel store.IdentitySelector) string {
	if sel.PersonID != "" {
		return "Your PIV account was terminated; every derived PIV credential of it was revoked."
	}
	return "Your PIV card was terminated; the derived PIV credentials made with it were revoked."
}
