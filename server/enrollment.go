package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// enrollmentService turns a PIV session into an activation.
type enrollmentService struct {
	credgwv1.UnimplementedEnrollmentServer
	s *Server
}

var _ credgwv1.EnrollmentServer = (*enrollmentService)(nil)

// session finds the PIV session of a token; a PIV caller may only use a
// session of its own card.
func (e *enrollmentService) session(ctx context.Context, token string) (store.PIVSession, error) {
	if token == "" {
		return store.PIVSession{}, status.Error(codes.Unauthenticated, "session_token: sign in with the card (PIVAuth) first")
	}
	sess, err := e.s.store.PIVSession(ctx, TokenHash(token))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !e.s.now().Before(sess.ExpiresAt)) {
		return store.PIVSession{}, status.Error(codes.Unauthenticated, "the PIV session token is unknown or expired: sign in with the card again")
	}
	if err != nil {
		return store.PIVSession{}, err
	}
	if c, ok := callerFrom(ctx); ok && c.role == rolePIV {
		fp := sha256.Sum256(c.cert.Raw)
		if hex.EncodeToString(fp[:]) != sess.CertSHA256 {
			return store.PIVSession{}, status.Error(codes.PermissionDenied, "this PIV session belongs to another card than the one of the TLS connection")
		}
	}
	return sess, nil
}

func (e *enrollmentService) CreateEnrollment(ctx context.Context, req *credgwv1.CreateEnrollmentRequest) (*credgwv1.CreateEnrollmentResponse, error) {
	if e.s.activation == nil {
		return nil, errNoCA
	}
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil {
		return nil, err
	}
	en, err := e.s.activation.Enroll(ctx, sess, req.GetIdentityName(), req.GetCredentialType())
	if err != nil {
		return nil, err
	}
	e.s.log.Info("enrollment created", "person_id", sess.PersonID, "card_uuid", sess.CardUUID,
		"activation_id", en.ActivationID, "credential_set_id", en.CredentialSetID, "credential_type", en.CredentialType)
	return &credgwv1.CreateEnrollmentResponse{
		ActivationId: en.ActivationID, QrPayload: en.Payload, QrPng: en.PNG, QrText: en.Text,
		Password: en.Password, ExpiresAt: timestamppb.New(en.ExpiresAt), CredentialSetId: en.CredentialSetID,
	}, nil
}
