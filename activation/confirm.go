package activation

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/store"
)

// Confirmed is a completed redemption: the set and the serials it holds.
type Confirmed struct {
	CredentialSetID string
	PersonID        string
	Serials         []string
}

// Confirm completes a redemption: the device proves the secret again and
// names the SHA-256 of what it installed; the package is deleted and the
// person is told. A renewal is confirmed with ConfirmRekey instead.
func (s *Service) Confirm(ctx context.Context, redemptionID string, secret, sum []byte) (*Confirmed, error) {
	a, err := s.cfg.Store.ActivationByRedemption(ctx, redemptionID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotAccepted
	}
	if err != nil {
		return nil, err
	}
	// The secret first: nothing about the redemption is told without it.
	if subtle.ConstantTimeCompare([]byte(code.LookupHash(secret)), []byte(a.LookupHash)) != 1 {
		return nil, ErrNotAccepted
	}
	held, err := s.cfg.Store.CredentialSet(ctx, a.CredentialSetID)
	if err != nil {
		return nil, err
	}
	if held.RenewsSetID != "" {
		return nil, notNow("this is a renewal: confirm it with Renewal.Confirm over the device's current certificate")
	}
	cs, again, err := s.confirm(ctx, a, held, redemptionID, secret, sum)
	if err != nil {
		return nil, err
	}
	// Told first, and on every repeat (once: SetOnce): a confirmation
	// whose telling failed after it was committed is repeated by the
	// device, and the repeat tells.
	if err := s.tellConfirmed(ctx, *cs, redemptionID,
		"Derived PIV credentials were installed on a device", "Derived PIV credentials bound to your PIV card were issued and installed on a device.",
		"Your escrowed S/MIME encryption key and its key history were delivered to a device."); err != nil {
		return nil, err
	}
	out, err := s.confirmed(ctx, cs.ID, cs.PersonID)
	if err != nil {
		return nil, err
	}
	if again && s.confirmRecorded(ctx, cs.PersonID, "confirm", redemptionID) {
		return out, nil
	}
	s.cfg.Audit.SetOf(ctx, "device", "confirm", *cs, out.Serials, "redemption_id="+redemptionID)
	if !again {
		s.cfg.Log.InfoContext(ctx, "credentials installed", "credential_set_id", cs.ID, "person_id", cs.PersonID, "serials", fmt.Sprint(out.Serials))
	}
	return out, nil
}

// tellConfirmed queues, once per redemption, the notices of a confirmed
// delivery: its binding and, for a set with an escrowed key, the key
// delivery (Common Policy §4.12.1: every one is told). An error fails the
// confirmation, whose repeat queues what this one could not.
func (s *Service) tellConfirmed(ctx context.Context, cs store.CredentialSet, redemptionID, subject, what, keys string) error {
	if err := s.cfg.Notify.SetOnce(ctx, "binding", cs.ID, redemptionID, subject, what); err != nil {
		return err
	}
	if cs.EscrowKeyID == "" {
		return nil // no escrowed key delivered: no false alarm
	}
	return s.cfg.Notify.SetOnce(ctx, "key-delivery", cs.ID, redemptionID, "Your encryption keys were delivered to a device", keys)
}

// confirmRecorded reports whether the confirmation of redemption rid has
// its audit event (action), for a repeat whose first call failed before
// writing it. A store error counts as recorded (nothing is written twice
// on a guess).
func (s *Service) confirmRecorded(ctx context.Context, personID, action, rid string) bool {
	evs, err := s.cfg.Store.AuditEvents(ctx, 0, 0, personID)
	if err != nil {
		return true
	}
	for _, ev := range evs {
		if ev.Action == action && (strings.Contains(ev.Detail, "redemption_id="+rid+";") || strings.HasSuffix(ev.Detail, "redemption_id="+rid)) {
			return true
		}
	}
	return false
}

// confirmed lists the serials of a confirmed set.
func (s *Service) confirmed(ctx context.Context, setID, personID string) (*Confirmed, error) {
	recs, err := s.cfg.Store.CertificatesOfSet(ctx, setID)
	if err != nil {
		return nil, err
	}
	out := &Confirmed{CredentialSetID: setID, PersonID: personID}
	for _, c := range recs {
		out.Serials = append(out.Serials, c.Serial)
	}
	return out, nil
}

// confirm completes a redemption: the device proves the secret again and
// names the SHA-256 of what it installed. The package is deleted.
//
// A confirmation repeated with the same SHA-256 after it succeeded (the
// device did not hear the answer: a cut connection, a gateway restart)
// answers the same again, with again set: nothing is recorded or told twice.
//
// a and cs are the activation of redemptionID and its set, as the caller
// read them; the set returned is cs as read then (its state from before
// the confirmation: callers use its identity, not its state).
func (s *Service) confirm(ctx context.Context, a store.Activation, cs store.CredentialSet, redemptionID string, secret, sum []byte) (_ *store.CredentialSet, again bool, err error) {
	if subtle.ConstantTimeCompare([]byte(code.LookupHash(secret)), []byte(a.LookupHash)) != 1 {
		return nil, false, ErrNotAccepted
	}
	if err := s.checkNotTerminated(ctx, cs.FASCN, cs.CardUUID, cs.PersonID); err != nil {
		return nil, false, err
	}
	sameSum := bytes.Equal([]byte(hex.EncodeToString(sum)), []byte(a.PackageSHA256))
	if a.State == store.ActCompleted {
		if sameSum {
			return &cs, true, nil
		}
		return nil, false, ErrAlreadyRedeemed
	}
	if a.State != store.ActRedeeming || a.Package == nil || !s.cfg.Now().Before(a.ConfirmBy) {
		return nil, false, ErrExpired
	}
	if !sameSum {
		return nil, false, ErrHashMismatch
	}
	if err := s.cfg.Store.Confirm(ctx, redemptionID, s.cfg.Now()); err != nil {
		if errors.Is(err, store.ErrAlreadyUsed) {
			if cur, cerr := s.cfg.Store.ActivationByRedemption(ctx, redemptionID); cerr == nil && cur.State == store.ActCompleted {
				// The same device's other confirmation won: the same answer.
				return &cs, true, nil
			}
			s.cfg.Audit.Refused(ctx, "device", "confirm", a.CredentialSetID, "redemption_id="+redemptionID+"; refused: lost the race to another confirmation")
			return nil, false, ErrAlreadyRedeemed
		}
		return nil, false, err
	}
	return &cs, false, nil
}
