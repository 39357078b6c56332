package activation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/issuance"
)

// Sweep expires pending activations and revokes (cessationOfOperation:
// nothing replaced them, they were never taken into use) what
// unconfirmed packages carried, deleting the packages; it deletes the
// escrowed keys that are no longer needed. Safe on every
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
	// Claimed, these sets are no longer redeeming and no later sweep
	// finds them as undelivered: the person is told now, whatever the
	// revocations below do (a failed one is finished by a later sweep).
	for _, id := range sets {
		s.undelivered(ctx, id)
	}
	// A redemption whose issuing process died is given back.
	stuck, err := s.releaseLapsed(ctx, false)
	var errs []error
	errs = append(errs, err)
	// Sets marked revoked whose certificates were not all revoked (the CA
	// failed half way, e.g. after a renewal was confirmed): finish the job.
	unfinished, err := s.cfg.Store.RevokedSetsWithLiveCertificates(ctx, 100)
	if err != nil {
		return 0, err
	}
	for _, id := range unfinished {
		errs = append(errs, s.revokeSet(ctx, id, time.Time{}, issuance.ReasonCessationOfOperation))
	}
	// Sets given back (a redemption released) whose revocations failed
	// then: what they hold from before the cutoff is the failed
	// issuance's. A redemption that starts meanwhile, on a replica whose
	// clock is a little behind too, keeps what it makes.
	cutoff := now.Add(-leftoverAge)
	released, err := s.cfg.Store.PendingSetsWithLiveCertificates(ctx, cutoff, 100)
	if err != nil {
		return 0, err
	}
	for _, id := range released {
		errs = append(errs, s.revokeSet(ctx, id, cutoff, issuance.ReasonCessationOfOperation))
	}
	for _, id := range sets {
		errs = append(errs, s.revokeSet(ctx, id, now, issuance.ReasonCessationOfOperation))
	}
	errs = append(errs, s.finishTerminations(ctx, now))
	errs = append(errs, s.sweepEscrow(ctx, now))
	if _, err := s.cfg.Notify.Prune(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("pruning sent notifications: %w", err))
	}
	return stuck + len(sets), errors.Join(errs...)
}

// TerminationGrace is how old a termination not known finished must be
// for the sweep, or a resend of its webhook request, to carry it out
// again: longer than RevokeIdentity's own bound, so that a call in flight
// finishes it first.
const TerminationGrace = 3 * time.Minute

// terminationsPerSweep bounds the terminations one sweep carries out
// again (UnfinishedTerminations picks them at random, so that some that
// keep failing do not hold back the others).
const terminationsPerSweep = 20

// finishTerminations carries out again the terminations recorded whose
// revocations are not known done: a process killed between recording one
// and revoking the identity's sets, or a CA that failed then, left them
// live, and nothing else would revoke them (the webhook's resend is a
// replay, the card itself may be good).
func (s *Service) finishTerminations(ctx context.Context, now time.Time) error {
	ts, err := s.cfg.Store.UnfinishedTerminations(ctx, now.Add(-TerminationGrace), terminationsPerSweep)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range ts {
		if ctx.Err() != nil {
			// The sweep's bound: the rest wait for the next sweep.
			errs = append(errs, ctx.Err())
			break
		}
		serials, err := s.revokeIdentity(ctx, t.Selector, issuance.ReasonCessationOfOperation, true, t.Comment)
		if len(serials) > 0 {
			s.cfg.Log.WarnContext(ctx, "finished an interrupted termination", "identity", t.Selector.String(), "revoked", len(serials))
			s.cfg.Audit.Record(ctx, audit.Identity("sweep", "terminate", t.Selector, serials, "finished an interrupted termination"))
			// The interrupted call may not have got to telling the person.
			s.cfg.Notify.Identity(ctx, "termination", t.Selector, "Your derived PIV credentials were revoked", TerminationNotice(t.Selector))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("the termination of %s: %w", t.Selector.String(), err))
		}
	}
	return errors.Join(errs...)
}

// leftoverAge is how old a certificate of a pending set must be for the
// sweep to take it for a failed release's leftover: more than any
// redemption in flight could have made since its set left pending,
// whatever the replicas' clocks.
const leftoverAge = time.Minute

// RedemptionLease is how long a process's claim on a redemption holds
// without renewal; LeaseRenewal how often a live process renews its claims
// (KeepLeases). A dead process's claims are released within
// RedemptionLease + LeaseRenewal.
const (
	RedemptionLease = 30 * time.Second
	LeaseRenewal    = 10 * time.Second
)

// KeepLeases renews this process's claims on the redemptions its calls
// are issuing now, and releases the claims whose lease ran out (their process died:
// a crash, kill -9, a lost host). Run it every LeaseRenewal, on every
// replica.
func (s *Service) KeepLeases(ctx context.Context) error {
	var ids []string
	s.issuing.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	if len(ids) > 0 {
		if _, err := s.cfg.Store.RenewLeases(ctx, s.holder, ids, s.cfg.Now().Add(RedemptionLease)); err != nil {
			return err
		}
	}
	_, err := s.releaseLapsed(ctx, false)
	return err
}

// ReleaseAll releases every claimed redemption without a package: for the
// start of the only process of an embedded (SQLite) store, where every
// claim that exists was made by a process that is gone.
func (s *Service) ReleaseAll(ctx context.Context) (int, error) {
	return s.releaseLapsed(ctx, true)
}

// releaseLapsed gives back the redemptions whose issuing process died:
// the set gets a new escrow key (the dead issuance may have certified the
// old one) in the same transaction that returns the activation to pending,
// and every certificate and intent made before is revoked. The device's
// retry redeems the code with new keys.
func (s *Service) releaseLapsed(ctx context.Context, all bool) (int, error) {
	now := s.cfg.Now()
	rs, err := s.cfg.Store.LapsedRedemptions(ctx, now, all)
	if err != nil {
		return 0, err
	}
	lapsedBy := now
	if all {
		lapsedBy = time.Time{}
	}
	var errs []error
	n := 0
	for _, r := range rs {
		cs, err := s.cfg.Store.CredentialSet(ctx, r.CredentialSetID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keyID := ""
		if cs.EscrowKeyID != "" {
			k, err := s.cfg.Escrow.NewKey(ctx, cs.PersonID)
			switch {
			case err == nil:
				keyID = k.ID
			case s.escrowKeyCertified(ctx, cs):
				// Released with its old, certified key, the code could
				// never be redeemed: try again at the next renewal.
				errs = append(errs, err)
				continue
			default:
				// The dead issuance did not certify the old key: it
				// serves the retry.
				errs = append(errs, err)
			}
		}
		released, err := s.cfg.Store.ReleaseRedemption(ctx, r, keyID, lapsedBy)
		if err != nil || !released {
			// Another replica released it, or its process renewed: the
			// new key, never certified, goes with the escrow sweep.
			errs = append(errs, err)
			continue
		}
		n++
		// Only what was made before the release: a redemption that
		// starts right after keeps its own.
		errs = append(errs, s.revokeSet(ctx, r.CredentialSetID, now, issuance.ReasonCessationOfOperation))
		s.cfg.Audit.Set(ctx, "system", "release", r.CredentialSetID,
			"activation_id="+r.ActivationID+"; redemption_id="+r.RedemptionID+"; the issuing process died; what it issued is revoked and the code redeems again")
		s.cfg.Log.WarnContext(ctx, "redemption released: its issuing process died", "activation_id", r.ActivationID,
			"redemption_id", r.RedemptionID, "credential_set_id", r.CredentialSetID)
	}
	return n, errors.Join(errs...)
}

// sweepEscrow deletes the escrowed keys never certified whose activation
// ended (expired, cancelled, locked or revoked before issuance, or replaced
// after a failed one), and the certified keys past retain_until: kept a
// year after their certificate expired (issuance.RetainAfterExpiry, Common
// Policy §4.12.1).
func (s *Service) sweepEscrow(ctx context.Context, now time.Time) error {
	unused, err := s.cfg.Store.DeleteUncertifiedEscrowKeys(ctx, now.Add(-EscrowKeyGrace))
	if err != nil {
		return err
	}
	purged, err := s.cfg.Store.PurgeEscrowKeys(ctx, now)
	if err != nil {
		return err
	}
	if unused+purged > 0 {
		s.cfg.Log.InfoContext(ctx, "escrowed keys deleted", "never_certified", unused, "past_retention", purged)
	}
	return nil
}
