package activation

import (
	"context"
	"fmt"
	"time"

	"github.com/credgw/credgw/store"
)

// DefaultRenewalPercent is how far into its lifetime a derived PIV
// Authentication certificate may be re-keyed by default (Common Policy
// §3.3.1 allows identity by the current key).
const DefaultRenewalPercent = 80

// RenewalOpens is when a certificate valid from notBefore to notAfter may be
// renewed, percent of the way into its lifetime.
func RenewalOpens(notBefore, notAfter time.Time, percent int) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * time.Duration(percent) / 100)
}

// EnrollRenewal makes the activation of a re-key: a new credential set for
// the same card, identity name and type as old, with a new escrowed
// encryption key (the old ones come as its key history), protected by
// the secret and password the device made for it. The caller has checked
// the device's certificate, the 80 % point and the card linkage.
func (s *Service) EnrollRenewal(ctx context.Context, old store.CredentialSet, secret []byte, password string) (activationID string, err error) {
	if len(secret) < 16 || len(secret) > 64 {
		return "", fmt.Errorf("%w: secret: 16 to 64 random bytes (32 recommended)", ErrInvalid)
	}
	pw, err := NormalizePassword(password)
	if err != nil || len(pw) < 6 || len(pw) > 12 {
		return "", fmt.Errorf("%w: password: 6 to 12 digits", ErrInvalid)
	}
	if err := s.checkNotTerminated(ctx, old.FASCN, old.CardUUID, old.PersonID); err != nil {
		return "", err
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
	cs.ID, cs.State, cs.CreatedAt, cs.UpdatedAt, cs.Device = setID, store.SetPending, now, now, ""
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
		ID: actID, LookupHash: LookupHash(secret), Verifier: Verifier(secret, pw),
		MaxAttempts: s.cfg.MaxAttempts, CreatedAt: now, ExpiresAt: now.Add(s.cfg.Lifetime),
	}, s.cfg.MaxSets+1)
	if err != nil {
		return "", err
	}
	return actID, nil
}
