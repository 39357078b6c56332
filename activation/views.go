package activation

import (
	"context"
	"errors"
	"strings"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// SetView is a credential set as people and administrators see it: with
// its certificates and its newest activation.
type SetView struct {
	Set          store.CredentialSet
	Certificates []store.CertificateRecord
	// Activation is nil when the set has none.
	Activation *store.Activation
}

// View reads a set's certificates and activation.
func (s *Service) View(ctx context.Context, cs store.CredentialSet) (SetView, error) {
	v := SetView{Set: cs}
	var err error
	if v.Certificates, err = s.cfg.Store.CertificatesOfSet(ctx, cs.ID); err != nil {
		return v, err
	}
	a, err := s.cfg.Store.ActivationOfSet(ctx, cs.ID)
	switch {
	case err == nil:
		if a.State == store.ActPending && !s.cfg.Now().Before(a.ExpiresAt) {
			a.State = store.ActExpired // not swept yet
		}
		v.Activation = &a
	case !errors.Is(err, store.ErrNotFound):
		return v, err
	}
	return v, nil
}

func (s *Service) views(ctx context.Context, sets []store.CredentialSet) ([]SetView, error) {
	out := make([]SetView, 0, len(sets))
	for _, cs := range sets {
		v, err := s.View(ctx, cs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// SetsOfPerson lists the person's own credential sets (every card of the
// person), newest first.
func (s *Service) SetsOfPerson(ctx context.Context, personID string) ([]SetView, error) {
	sets, err := s.cfg.Store.CredentialSetsOfPerson(ctx, personID)
	if err != nil {
		return nil, err
	}
	return s.views(ctx, sets)
}

// ListSets lists credential sets for administrators, newest first: of one
// identity if sel is not empty, in one state if state is not "".
func (s *Service) ListSets(ctx context.Context, sel store.IdentitySelector, state string, offset, limit int) ([]SetView, error) {
	sets, err := s.cfg.Store.ListCredentialSets(ctx, sel, state, offset, limit)
	if err != nil {
		return nil, err
	}
	if len(sets) == 0 && offset == 0 {
		if err := s.KnownIdentity(ctx, sel); err != nil {
			return nil, err
		}
	}
	return s.views(ctx, sets)
}

// selected reports whether sel names an identity (an empty one is
// everyone).
func selected(sel store.IdentitySelector) bool {
	return len(sel.FASCN) > 0 || sel.CardUUID != "" || sel.PersonID != "" || sel.CertSHA256 != ""
}

// KnownIdentity is ErrNoSuch for an identity that has no credential set at
// all (a mistyped id, most likely), nil for one that has or for everyone.
func (s *Service) KnownIdentity(ctx context.Context, sel store.IdentitySelector) error {
	if !selected(sel) {
		return nil
	}
	sets, err := s.cfg.Store.CredentialSetsOfIdentity(ctx, sel)
	if err != nil {
		return err
	}
	if len(sets) == 0 {
		return unknownIdentity(sel)
	}
	return nil
}

func unknownIdentity(sel store.IdentitySelector) error {
	kind, value, _ := strings.Cut(sel.String(), ":")
	return noSuch("no %s %q is known here: no derived credential was ever requested for it", strings.ReplaceAll(kind, "_", " "), value)
}

// ListActivations lists activations for administrators, newest first; a
// pending one past its expiry (not swept yet) shows as expired.
func (s *Service) ListActivations(ctx context.Context, sel store.IdentitySelector, state string, offset, limit int) ([]store.Activation, error) {
	acts, err := s.cfg.Store.ListActivations(ctx, sel, state, offset, limit)
	if err != nil {
		return nil, err
	}
	if len(acts) == 0 && offset == 0 {
		if err := s.KnownIdentity(ctx, sel); err != nil {
			return nil, err
		}
	}
	for i := range acts {
		s.showExpiry(&acts[i])
	}
	return acts, nil
}

func (s *Service) showExpiry(a *store.Activation) {
	if a.State == store.ActPending && !s.cfg.Now().Before(a.ExpiresAt) {
		a.State = store.ActExpired
	}
}

// Cancel ends a pending activation for good (an administrator's act) and
// revokes its still empty credential set; it returns the activation as it
// is after.
func (s *Service) Cancel(ctx context.Context, activationID, comment string) (store.Activation, error) {
	ac, err := s.cfg.Store.ActivationByID(ctx, activationID)
	if errors.Is(err, store.ErrNotFound) {
		return ac, noSuch("no activation %q", activationID)
	}
	if err != nil {
		return ac, err
	}
	if ac.State != store.ActPending {
		return ac, notNow("activation %s is %s; only a pending one can be cancelled (revoke its credential set %s instead)",
			ac.ID, ac.State, ac.CredentialSetID)
	}
	cs, err := s.cfg.Store.CredentialSet(ctx, ac.CredentialSetID)
	if err != nil {
		return ac, err
	}
	if _, err := s.RevokeSet(ctx, cs.PersonID, cs.ID, issuance.ReasonCessationOfOperation); err != nil {
		return ac, err
	}
	s.cfg.Audit.Set(ctx, "admin", "cancel-activation", cs.ID, "activation_id="+ac.ID+"; comment="+comment)
	s.cfg.Log.InfoContext(ctx, "activation cancelled by an administrator", "activation_id", ac.ID, "credential_set_id", cs.ID, "person_id", cs.PersonID)
	if ac, err = s.cfg.Store.ActivationByID(ctx, ac.ID); err != nil {
		return ac, err
	}
	s.showExpiry(&ac)
	return ac, nil
}

// ActivationsByState counts the activation codes by state (pending,
// redeeming, redeemed, confirmed, expired, locked…): one grouped count
// (the gateway's credgw_activations gauge).
func (s *Service) ActivationsByState(ctx context.Context) (map[string]int, error) {
	states, _, err := s.cfg.Store.ActivationCensus(ctx)
	return states, err
}
