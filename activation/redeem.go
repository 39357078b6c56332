package activation

import (
	"context"
	"errors"
	"fmt"
)

// Redeem checks the activation code and either builds the package (issuing
// the certificates, once) or returns the one an earlier call built (resume).
// Wrong passwords and lockouts are recorded, and a lockout is notified.
func (s *Service) Redeem(ctx context.Context, req RedeemRequest, progress Progress) (*Delivery, error) {
	d, err := s.redeem(ctx, req, progress)
	if err != nil {
		s.auditRefusal(ctx, req.ActivationID, err)
		return nil, err
	}
	if !d.Resumed {
		s.cfg.Audit.Set(ctx, "device", "redeem", d.Manifest.GetCredentialSetId(), "activation_id="+req.ActivationID+"; redemption_id="+d.RedemptionID+"; issued")
		s.cfg.Log.Info("credentials issued", "activation_id", req.ActivationID, "redemption_id", d.RedemptionID,
			"credential_set_id", d.Manifest.GetCredentialSetId(), "bytes", len(d.Package))
	}
	return d, nil
}

// auditRefusal records wrong passwords and lockouts.
func (s *Service) auditRefusal(ctx context.Context, activationID string, err error) {
	var wrong *WrongPasswordError
	outcome := ""
	switch {
	case errors.As(err, &wrong):
		outcome = fmt.Sprintf("wrong password (%d attempts left)", wrong.AttemptsLeft)
	case errors.Is(err, ErrLocked):
		outcome = "locked"
	case errors.Is(err, ErrTerminated):
		outcome = "terminated"
	default:
		return
	}
	a, aerr := s.cfg.Store.ActivationByID(ctx, activationID)
	if aerr != nil {
		return // an unknown id: nothing to attach it to
	}
	s.cfg.Audit.Set(ctx, "device", "redeem", a.CredentialSetID, "activation_id="+activationID+"; refused: "+outcome)
	if errors.Is(err, ErrLocked) || (wrong != nil && wrong.AttemptsLeft == 0) {
		s.cfg.Notify.Set(ctx, "lockout", a.CredentialSetID, "A derived credential code was locked",
			"Too many wrong passwords were typed for your activation code; it is locked and nothing was issued. Sign in with your card to enroll again.")
	}
}

// undelivered records and reports a package the device never confirmed:
// the escrowed-key delivery failed, and what it carried is revoked.
func (s *Service) undelivered(ctx context.Context, setID string) {
	s.cfg.Audit.Set(ctx, "system", "undelivered", setID, "not confirmed in time; its certificates are revoked")
	s.cfg.Notify.Set(ctx, "key-delivery", setID, "Delivery of your derived credentials failed",
		"A device downloaded your derived credentials and escrowed encryption keys but never confirmed installing them, so they were revoked. Sign in with your card and enroll again.")
}
