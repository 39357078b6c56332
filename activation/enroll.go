package activation

import (
	"context"

	"github.com/credgw/credgw/store"
)

// EnrollRequest is a signed-in person asking for derived credentials.
type EnrollRequest struct {
	Session        store.PIVSession
	IdentityName   string
	CredentialType string
	// Portal is true when the request came through the self-service
	// portal (recorded in the audit log).
	Portal bool
}

// Enroll turns a fresh PIV session into an activation (the QR code and the
// password) and records it.
func (s *Service) Enroll(ctx context.Context, req EnrollRequest) (*Enrollment, error) {
	en, err := s.enroll(ctx, req.Session, req.IdentityName, req.CredentialType)
	if err != nil {
		return nil, err
	}
	sess := req.Session
	detail := "activation_id=" + en.ActivationID
	if req.Portal {
		detail += "; portal"
	}
	s.cfg.Audit.Set(ctx, "piv:"+sess.PersonID, "enroll", en.CredentialSetID, detail)
	s.cfg.Log.Info("enrollment created", "person_id", sess.PersonID, "card_uuid", sess.CardUUID, "portal", req.Portal,
		"activation_id", en.ActivationID, "credential_set_id", en.CredentialSetID, "credential_type", en.CredentialType)
	return en, nil
}
