package lifecycle

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

// LinkageResult counts one linkage run.
type LinkageResult struct {
	Checked, Good, Unknown, Revoked int
	// Serials are the derived certificates revoked by this run.
	Serials []string
}

// linkageLease is how long a replica holds a claimed row. A run ends
// within it (LinkageRunBudget), so no row is checked by two replicas.
const linkageLease = 5 * time.Minute

// LinkageRunBudget is the longest a linkage run may take: its rows are
// claimed for linkageLease, and what it did not reach is released.
const LinkageRunBudget = 4 * time.Minute

// linkageBatch is how many due rows a run claims at a time.
const linkageBatch = 50

// Linkage re-checks, once, every PIV Authentication certificate whose check
// is due (SP 800-157r1 §2.4): good ⇒ next check after linkage.interval;
// revoked, expired or otherwise no longer valid ⇒ every derived credential
// bound to it is revoked; status unavailable ⇒ retried with a growing
// delay, and after linkage.max_unknown handled per linkage.on_unknown.
// Rows are claimed in batches, so every replica may run it; up to
// linkage.concurrency checks run at once. A run ends when nothing is due
// or ctx ends: the checks cut short and the rows not reached are released
// as they were, for the next run. Config.Overdue is told how long the
// oldest check still due has waited.
func (s *Service) Linkage(ctx context.Context) (LinkageResult, error) {
	var res LinkageResult
	defer s.reportOverdue(ctx)
	cfg := s.cfg.Linkage
	if _, err := s.cfg.Store.ScheduleLinkage(ctx, cfg.FirstCheck); err != nil {
		return res, err
	}
	var mu sync.Mutex
	var errs []error
	for {
		due, err := s.cfg.Store.ClaimLinkage(ctx, s.cfg.Now(), linkageLease, linkageBatch)
		if err != nil {
			return res, errors.Join(append(errs, err)...)
		}
		slots := make(chan struct{}, cfg.Concurrency)
		var wg sync.WaitGroup
		for _, l := range due {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				s.releaseLinkage(ctx, l)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				var one LinkageResult
				err := s.checkLinkage(ctx, l, &one)
				if err != nil && ctx.Err() != nil {
					// Ended by the budget before its answer (a no-op if
					// it was recorded): for the next run, not a lapse.
					s.releaseLinkage(ctx, l)
				}
				mu.Lock()
				defer mu.Unlock()
				res.add(one)
				if err != nil && (ctx.Err() == nil || !errors.Is(err, ctx.Err())) {
					errs = append(errs, fmt.Errorf("linkage of %s: %w", l.CertSHA256, err))
				}
			}()
		}
		wg.Wait()
		if len(due) < linkageBatch || ctx.Err() != nil {
			return res, errors.Join(errs...)
		}
	}
}

func (r *LinkageResult) add(o LinkageResult) {
	r.Checked += o.Checked
	r.Good += o.Good
	r.Unknown += o.Unknown
	r.Revoked += o.Revoked
	r.Serials = append(r.Serials, o.Serials...)
}

// releaseLinkage gives back a claimed row unchanged, for the next run.
func (s *Service) releaseLinkage(ctx context.Context, l store.Linkage) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.cfg.Store.FinishLinkage(ctx, l); err != nil {
		s.cfg.Log.WarnContext(ctx, "linkage: releasing a check not made (it waits for its claim to lapse)", "piv_auth_sha256", l.CertSHA256, "err", err)
	}
}

// reportOverdue tells Config.Overdue how long the oldest due check has
// waited.
func (s *Service) reportOverdue(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	now := s.cfg.Now()
	due, ok, err := s.cfg.Store.OldestDueLinkage(ctx, now)
	switch {
	case err != nil:
		s.cfg.Log.WarnContext(ctx, "linkage: reading the oldest due check", "err", err)
	case ok:
		s.cfg.Overdue(max(now.Sub(due), 0))
	default:
		s.cfg.Overdue(0)
	}
}

func (s *Service) checkLinkage(ctx context.Context, l store.Linkage, res *LinkageResult) error {
	now := s.cfg.Now()
	cfg := s.cfg.Linkage
	n, err := s.cfg.Store.LiveSetsOfCert(ctx, l.CertSHA256)
	if err != nil {
		return err
	}
	if n == 0 {
		return s.cfg.Store.DeleteLinkage(ctx, l.CertSHA256)
	}
	res.Checked++
	// A card certificate missing from the store (a partial restore) or no
	// longer parsing is an unverifiable status like any other: counted,
	// logged, and past linkage.max_unknown linkage.on_unknown decides (it
	// was retried with an error each sweep, its credentials kept forever).
	var leaf *x509.Certificate
	var verr error
	pc, err := s.cfg.Store.PIVCertificate(ctx, l.CertSHA256)
	switch {
	case errors.Is(err, store.ErrNotFound):
		verr = errors.New("the card's PIV Authentication certificate is not in the store")
	case err != nil:
		return err
	default:
		if leaf, err = x509.ParseCertificate(pc.DER); err != nil {
			verr = fmt.Errorf("the card's kept PIV Authentication certificate does not parse: %v", err)
		}
	}
	claimed := l
	l.LastChecked = now
	if leaf != nil {
		_, verr = s.cfg.Verifier.VerifyPIVAuth(ctx, leaf, nil)
	}
	expiredGood := false
	if errors.Is(verr, piv.ErrExpired) && cfg.OnCardExpiry != "revoke" && l.LastStatus != cardExpired {
		// Not revoked before it expired? A card reported lost days before
		// its end must not keep its credentials (the revocation below, or
		// the unknown status's rules, apply as to a valid card).
		verr = s.cfg.Verifier.StatusAtExpiry(ctx, leaf)
		expiredGood = verr == nil
	}
	if verr != nil && ctx.Err() != nil {
		// Cut short by the run's end: not the card's status, nor the
		// responders' (it was recorded "unverifiable" and counted
		// unknown). Released as it was, for the next run.
		s.releaseLinkage(ctx, claimed)
		return ctx.Err()
	}
	// The answer is had: recorded, and acted on, whatever the run's
	// budget (a good answer was counted and lost, its row held until its
	// claim lapsed).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	revoke := false
	switch {
	case expiredGood || errors.Is(verr, piv.ErrExpired) && cfg.OnCardExpiry != "revoke" && l.LastStatus == cardExpired:
		// The card reached its end unrevoked (and is replaced): SP
		// 800-157r1 §2.3, derived credentials are unaffected. It is not
		// asked again; a termination comes by the webhook or the admin
		// API (§2.4: never by the certificate's status alone).
		if l.LastStatus != cardExpired {
			s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "system", Action: "linkage-card-expired", CardUUID: pc.CardUUID,
				Detail: "piv_auth_sha256=" + l.CertSHA256 + "; derived credentials kept (linkage.on_card_expiry: keep)"})
			s.cfg.Log.InfoContext(ctx, "linkage: the card's PIV Authentication certificate expired; its derived credentials are kept",
				"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256)
		}
		l.LastStatus, l.UnknownSince, l.NextCheck = cardExpired, time.Time{}, now.Add(cfg.Interval)
	case verr == nil:
		res.Good++
		l.LastStatus, l.UnknownSince, l.NextCheck = "good", time.Time{}, now.Add(cfg.Interval)
	case errors.Is(verr, piv.ErrRevoked), errors.Is(verr, piv.ErrExpired):
		revoke, l.LastStatus = true, "invalid: "+verr.Error()
	default:
		// The status is unknown: the responders cannot say
		// (ErrStatusUnavailable), or the kept certificate no longer
		// verifies at all (a path that no longer builds after a trust
		// anchor or bridge change, a policy change), so its status is
		// never asked. Neither is the card's doing, so neither revokes
		// at once; both are retried, counted and logged, and past
		// linkage.max_unknown linkage.on_unknown decides, as the
		// 7-day linkage rule needs an end.
		unavailable := errors.Is(verr, piv.ErrStatusUnavailable)
		res.Unknown++
		if l.UnknownSince.IsZero() {
			l.UnknownSince = now
		}
		unknownFor := now.Sub(l.UnknownSince)
		l.LastStatus = "unknown"
		what := "card status unavailable"
		switch {
		case leaf == nil:
			l.LastStatus = "unverifiable: " + verr.Error()
			what = verr.Error() + " (a partial restore of the store?)"
		case !unavailable:
			l.LastStatus = "unverifiable: " + verr.Error()
			what = "the kept PIV Authentication certificate no longer verifies (check piv.trust_anchor_files, piv.intermediate_files and piv.policies)"
		}
		// Retry sooner than the interval: after 1h, then after as long as
		// it has been unknown (doubling), at most the interval.
		l.NextCheck = now.Add(min(max(time.Hour, unknownFor), cfg.Interval))
		s.cfg.UnknownStatus()
		switch {
		case unknownFor >= cfg.MaxUnknown && cfg.OnUnknown == "revoke":
			revoke = true
			if unavailable {
				l.LastStatus = "unknown for " + unknownFor.Round(time.Hour).String() + ": revoked"
			} else {
				l.LastStatus += "; for " + unknownFor.Round(time.Hour).String() + ": revoked"
			}
		case unknownFor >= cfg.MaxUnknown:
			s.cfg.Log.ErrorContext(ctx, "linkage: "+what+" past linkage.max_unknown; derived credentials kept (on_unknown: alert)",
				"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256, "unknown_since", l.UnknownSince, "cause", verr.Error())
		case unavailable:
			s.cfg.Log.WarnContext(ctx, "linkage: "+what+"; will retry", "card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256,
				"next_check", l.NextCheck, "cause", verr.Error())
		default:
			s.cfg.Log.ErrorContext(ctx, "linkage: "+what+"; will retry", "card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256,
				"next_check", l.NextCheck, "cause", verr.Error())
		}
	}
	if revoke {
		// A card revoked for a compromise of its key, or of a CA above
		// it: whoever held that key could have signed in and enrolled,
		// so its derived credentials are keyCompromise too. Otherwise
		// they end with the card (cessationOfOperation).
		reason := issuance.ReasonCessationOfOperation
		if re := (*piv.RevokedError)(nil); errors.As(verr, &re) && re.Compromise() {
			reason = issuance.ReasonKeyCompromise
		}
		serials, err := s.cfg.Activation.RevokeIdentity(ctx, store.IdentitySelector{CertSHA256: l.CertSHA256},
			reason, false, "")
		res.Serials = append(res.Serials, serials...)
		if err != nil {
			// What was revoked is recorded and told all the same: the
			// sets are ended, so no later check comes back to them (the
			// sweep revokes what is left of their certificates).
			if len(serials) > 0 {
				s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "system", Action: "linkage-revoke", Outcome: audit.Error, CardUUID: pc.CardUUID,
					Serials: serials, Detail: "piv_auth_sha256=" + l.CertSHA256 + "; " + l.LastStatus + "; revoked in part: " + err.Error()})
				s.cfg.Notify.Identity(ctx, "revocation", store.IdentitySelector{CertSHA256: l.CertSHA256}, "Your derived PIV credentials were revoked",
					"Your PIV card's authentication certificate is no longer valid, so the derived PIV credentials bound to it were revoked.")
			}
			l.NextCheck = now.Add(time.Hour) // try again soon
			_ = s.cfg.Store.FinishLinkage(context.WithoutCancel(ctx), l)
			return err
		}
		res.Revoked++
		ctx = context.WithoutCancel(ctx) // revoked: recorded and told whatever the sweep's budget
		s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "system", Action: "linkage-revoke", CardUUID: pc.CardUUID, Serials: serials,
			Detail: "piv_auth_sha256=" + l.CertSHA256 + "; " + l.LastStatus})
		s.cfg.Notify.Identity(ctx, "revocation", store.IdentitySelector{CertSHA256: l.CertSHA256}, "Your derived PIV credentials were revoked",
			"Your PIV card's authentication certificate is no longer valid, so the derived PIV credentials bound to it were revoked.")
		s.cfg.Log.WarnContext(ctx, "linkage: the card's PIV Authentication certificate is no longer valid; its derived credentials are revoked",
			"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256, "status", l.LastStatus, "revoked", len(serials))
		l.NextCheck = now.Add(cfg.Interval)
	}
	return s.cfg.Store.FinishLinkage(ctx, l)
}

// cardExpired is the linkage status of a card whose certificate expired,
// its derived credentials kept.
const cardExpired = "card expired: derived credentials kept"

// SweepInterval is how often the gateway sweeps.
const SweepInterval = 5 * time.Minute

// Sweep does the periodic clean-up once: what fell due (SweepDue) and the
// CRLs. Every step is idempotent and claims rows with conditional UPDATEs,
// so every replica may run it. The linkage checks are not part of it
// (they shared its minute, so a slow responder held the rest back): the
// gateway runs Linkage on its own schedule.
func (s *Service) Sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s.SweepDue(ctx)
	// The CRL is issued on schedule, not only when fetched (Common Policy
	// §4.9.7, at least every 18 hours): rebuilt here when a revocation
	// made it stale or it reached its refresh point, else only read.
	if _, err := s.cfg.CA.CRL(ctx, false); err != nil {
		s.cfg.Log.WarnContext(ctx, "issuing the CRL", "err", err)
	}
	if err := s.cfg.CA.RetiredCRLs(ctx, false); err != nil {
		s.cfg.Log.WarnContext(ctx, "issuing a retired CA key's CRL", "err", err)
	}
}

// SweepDue ends what fell due: expired activations, unconfirmed redemptions (their certificates revoked), stale
// issuance intents. The gateway runs it before it serves, so that what fell
// due while it was down is handled before anyone can use it.
func (s *Service) SweepDue(ctx context.Context) {
	if n, err := s.cfg.Activation.Sweep(ctx); err != nil {
		s.cfg.Log.WarnContext(ctx, "sweeping activations", "err", err)
	} else if n > 0 {
		s.cfg.Log.InfoContext(ctx, "ended unconfirmed or stuck redemptions and revoked what they carried", "credential_sets", n)
	}
	if n, err := s.cfg.CA.RevokeStaleIntents(ctx, s.cfg.Now().Add(-activation.StuckRedemption)); err != nil {
		s.cfg.Log.WarnContext(ctx, "revoking stale issuance intents", "err", err)
	} else if n > 0 {
		s.cfg.Log.WarnContext(ctx, "revoked issuance intents never recorded (a crash between signing and recording)", "certificates", n)
	}
}
