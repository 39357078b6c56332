package activation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/store"
)

// ErrRenewalInProgress: the set already has a renewal pending, being
// downloaded or done.
var ErrRenewalInProgress = errors.New("activation: this credential set already has a renewal in progress: resume it (send the same request again: the same secret, password and device keys, with or without its redemption id) or let it expire")

// DefaultRenewalPercent is how far into its lifetime a derived PIV
// Authentication certificate may be re-keyed by default (Common Policy
// §3.3.1 allows identity by the current key).
const DefaultRenewalPercent = 80

// RenewalOpens is when a certificate valid from notBefore to notAfter may be
// renewed, percent of the way into its lifetime.
func RenewalOpens(notBefore, notAfter time.Time, percent int) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * time.Duration(percent) / 100)
}

// enrollRenewal makes the activation of a re-key: a new credential set for
// the same card, identity name and type as old, with a new escrowed
// encryption key (the old ones come as its key history), protected by
// the secret and password the device made for it. The caller has checked
// the device's certificate, the 80 % point and the card linkage.
func (s *Service) enrollRenewal(ctx context.Context, old store.CredentialSet, secret []byte, password string) (activationID string, err error) {
	if len(secret) < 16 || len(secret) > 64 {
		return "", fmt.Errorf("%w: secret: 16 to 64 random bytes (32 recommended)", ErrInvalid)
	}
	pw, err := code.NormalizePassword(password)
	if err != nil || len(pw) < 6 || len(pw) > 12 {
		return "", fmt.Errorf("%w: password: 6 to 12 digits", ErrInvalid)
	}
	if err := s.checkNotTerminated(ctx, old.FASCN, old.CardUUID, old.PersonID); err != nil {
		return "", err
	}
	// The cap first, before an escrow key is made for nothing.
	if n, err := s.cfg.Store.CountLiveSets(ctx, old.PersonID); err != nil {
		return "", err
	} else if n >= s.cfg.MaxSets+1 {
		return "", fmt.Errorf("%w (%d); revoke one (lost or replaced device) first", ErrCap, s.cfg.MaxSets)
	}
	now := s.cfg.Now()
	actID, err := randomID()
	if err != nil {
		return "", err
	}
	setID, err := randomID()
	if err != nil {
		return "", err
	}
	cs := old
	cs.ID, cs.State, cs.CreatedAt, cs.UpdatedAt, cs.Device, cs.RenewsSetID = setID, store.SetPending, now, now, "", old.ID
	if old.EscrowKeyID != "" {
		// A new encryption key: the CA certifies a key once. The old one
		// stays in escrow and arrives in the key history.
		k, err := s.cfg.Escrow.NewKey(ctx, old.PersonID)
		if err != nil {
			return "", err
		}
		cs.EscrowKeyID = k.ID
	}
	// One more live set than the cap allows: the old one is revoked when
	// the device confirms the new one.
	err = s.cfg.Store.CreateEnrollment(ctx, cs, store.Activation{
		ID: actID, LookupHash: code.LookupHash(secret), Verifier: s.verifier(secret, pw, cs),
		MaxAttempts: s.cfg.MaxAttempts, CreatedAt: now, ExpiresAt: now.Add(s.cfg.Lifetime),
	}, s.cfg.MaxSets+1)
	switch {
	case errors.Is(err, store.ErrLimit):
		return "", fmt.Errorf("%w (%d); revoke one (lost or replaced device) first", ErrCap, s.cfg.MaxSets)
	case errors.Is(err, store.ErrNotFound):
		// Revoked (or renewed) since the certificate was checked.
		return "", denied("the credential set of this certificate is no longer active (revoked meanwhile): enroll again with the card")
	case errors.Is(err, store.ErrConflict):
		// The set's one renewal, or the secret of an ended code (one
		// whose abandonment did not finish).
		if live, lerr := s.cfg.Store.LiveRenewals(ctx, old.ID); lerr == nil && len(live) == 0 {
			return "", fmt.Errorf("%w: secret: an earlier renewal used it; make a new secret", ErrInvalid)
		}
		return "", ErrRenewalInProgress
	case err != nil:
		return "", err
	}
	return actID, nil
}
