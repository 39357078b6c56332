package activation

import (
	"context"
	"errors"
	"time"

	"github.com/credgw/credgw/issuance"
)

// Sweep expires pending activations and revokes (superseded) what
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
	errs = append(errs, s.sweepEscrow(ctx, now))
	return len(stuck) + len(sets), errors.Join(errs...)
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
		s.cfg.Log.Info("escrowed keys deleted", "never_certified", unused, "past_retention", purged)
	}
	return nil
}
