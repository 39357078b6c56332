package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

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

// linkageLease is how long a replica holds a claimed row.
const linkageLease = 5 * time.Minute

// Linkage re-checks, once, every PIV Authentication certificate whose check
// is due (SP 800-157r1 §2.4): good ⇒ next check after linkage.interval;
// revoked, expired or otherwise no longer valid ⇒ every derived credential
// bound to it is revoked; status unavailable ⇒ retried with a growing
// delay, and after linkage.max_unknown handled per linkage.on_unknown.
// Rows are claimed one by one, so every replica may run it.
func (s *Server) Linkage(ctx context.Context) (LinkageResult, error) {
	var res LinkageResult
	if s.activation == nil {
		return res, nil
	}
	cfg := s.cfg.Linkage
	if _, err := s.store.ScheduleLinkage(ctx, cfg.FirstCheck.Duration); err != nil {
		return res, err
	}
	var errs []error
	for {
		due, err := s.store.ClaimLinkage(ctx, s.now(), linkageLease, 50)
		if err != nil {
			return res, err
		}
		for _, l := range due {
			if err := s.checkLinkage(ctx, l, &res); err != nil {
				errs = append(errs, fmt.Errorf("linkage of %s: %w", l.CertSHA256, err))
			}
		}
		if len(due) < 50 || ctx.Err() != nil {
			return res, errors.Join(errs...)
		}
	}
}

func (s *Server) checkLinkage(ctx context.Context, l store.Linkage, res *LinkageResult) error {
	now := s.now()
	cfg := s.cfg.Linkage
	n, err := s.store.LiveSetsOfCert(ctx, l.CertSHA256)
	if err != nil {
		return err
	}
	if n == 0 {
		return s.store.DeleteLinkage(ctx, l.CertSHA256)
	}
	res.Checked++
	pc, err := s.store.PIVCertificate(ctx, l.CertSHA256)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(pc.DER)
	if err != nil {
		return err
	}
	l.LastChecked = now
	_, verr := s.verifier.VerifyPIVAuth(ctx, leaf, nil)
	revoke := false
	switch {
	case verr == nil:
		res.Good++
		l.LastStatus, l.UnknownSince, l.NextCheck = "good", time.Time{}, now.Add(cfg.Interval.Duration)
	case errors.Is(verr, piv.ErrStatusUnavailable):
		res.Unknown++
		if l.UnknownSince.IsZero() {
			l.UnknownSince = now
		}
		unknownFor := now.Sub(l.UnknownSince)
		l.LastStatus = "unknown"
		// Retry sooner than the interval: after 1h, then after as long as
		// it has been unknown (doubling), at most the interval.
		l.NextCheck = now.Add(min(max(time.Hour, unknownFor), cfg.Interval.Duration))
		s.metrics.linkageUnknown.Inc()
		if unknownFor >= cfg.MaxUnknown.Duration {
			if cfg.OnUnknown == "revoke" {
				revoke, l.LastStatus = true, "unknown for "+unknownFor.Round(time.Hour).String()+": revoked"
			} else {
				s.log.Error("linkage: card status unavailable past linkage.max_unknown; derived credentials kept (on_unknown: alert)",
					"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256, "unknown_since", l.UnknownSince)
			}
		} else {
			s.log.Warn("linkage: card status unavailable; will retry", "card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256,
				"next_check", l.NextCheck, "cause", verr.Error())
		}
	case errors.Is(verr, piv.ErrRevoked), errors.Is(verr, piv.ErrExpired):
		revoke, l.LastStatus = true, "invalid: "+verr.Error()
	default:
		// Anything else (a path that no longer builds after a trust
		// anchor change, a policy change) is the configuration's doing,
		// not the card's: never a reason to revoke everyone. Retried
		// like an unknown status, logged as an error.
		res.Unknown++
		if l.UnknownSince.IsZero() {
			l.UnknownSince = now
		}
		l.LastStatus = "unverifiable: " + verr.Error()
		l.NextCheck = now.Add(cfg.Interval.Duration)
		s.log.Error("linkage: the kept PIV Authentication certificate no longer verifies; check piv.trust_anchor_files and piv.policies",
			"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256, "cause", verr.Error())
	}
	if revoke {
		serials, err := s.activation.RevokeIdentity(ctx, store.IdentitySelector{CertSHA256: l.CertSHA256},
			issuance.ReasonCessationOfOperation, false, "")
		res.Serials = append(res.Serials, serials...)
		if err != nil {
			l.NextCheck = now.Add(time.Hour) // try again soon
			_ = s.store.FinishLinkage(ctx, l)
			return err
		}
		res.Revoked++
		s.audit(ctx, store.AuditEvent{Actor: "system", Action: "linkage-revoke", CardUUID: pc.CardUUID, Serials: serials,
			Detail: "piv_auth_sha256=" + l.CertSHA256 + "; " + l.LastStatus})
		s.notifyIdentity(ctx, "revocation", store.IdentitySelector{CertSHA256: l.CertSHA256}, "Your derived PIV credentials were revoked",
			"Your PIV card's authentication certificate is no longer valid, so the derived PIV credentials bound to it were revoked.")
		s.log.Warn("linkage: the card's PIV Authentication certificate is no longer valid; its derived credentials are revoked",
			"card_uuid", pc.CardUUID, "piv_auth_sha256", l.CertSHA256, "status", l.LastStatus, "revoked", len(serials))
		l.NextCheck = now.Add(cfg.Interval.Duration)
	}
	return s.store.FinishLinkage(ctx, l)
}
