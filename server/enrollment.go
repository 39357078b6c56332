package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
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
	c, ok := callerFrom(ctx)
	if !ok {
		return store.PIVSession{}, status.Error(codes.PermissionDenied, "caller unknown")
	}
	if c.role == rolePIV {
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
	e.s.auditSet(ctx, "piv:"+sess.PersonID, "enroll", en.CredentialSetID, "activation_id="+en.ActivationID)
	e.s.log.Info("enrollment created", "person_id", sess.PersonID, "card_uuid", sess.CardUUID,
		"activation_id", en.ActivationID, "credential_set_id", en.CredentialSetID, "credential_type", en.CredentialType)
	return &credgwv1.CreateEnrollmentResponse{
		ActivationId: en.ActivationID, QrPayload: en.Payload, QrPng: en.PNG, QrText: en.Text,
		Password: en.Password, ExpiresAt: timestamppb.New(en.ExpiresAt), CredentialSetId: en.CredentialSetID,
	}, nil
}

var setStates = map[string]credgwv1.CredentialSetState{
	store.SetPending:   credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_PENDING,
	store.SetRedeeming: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_REDEEMING,
	store.SetActive:    credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ACTIVE,
	store.SetRevoked:   credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_REVOKED,
	store.SetAbandoned: credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ABANDONED,
}

var profileNames = map[string]credgwv1.Profile{
	"derived-piv-auth":  credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH,
	"digital-signature": credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE,
	"key-management":    credgwv1.Profile_PROFILE_KEY_MANAGEMENT,
}

// credentialSet renders a set with its certificates.
func (e *enrollmentService) credentialSet(ctx context.Context, cs store.CredentialSet) (*credgwv1.CredentialSet, error) {
	out := &credgwv1.CredentialSet{Id: cs.ID, IdentityName: cs.IdentityName, CredentialType: cs.CredentialType,
		State: setStates[cs.State], CreatedAt: timestamppb.New(cs.CreatedAt)}
	if cs.Device != "" {
		var dev credgwv1.DeviceInfo
		if protojson.Unmarshal([]byte(cs.Device), &dev) == nil {
			out.Device = &dev
		}
	}
	recs, err := e.s.store.CertificatesOfSet(ctx, cs.ID)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		st := credgwv1.CertificateStatus_CERTIFICATE_STATUS_GOOD
		switch {
		case r.Revoked():
			st = credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED
		case !e.s.now().Before(r.NotAfter):
			st = credgwv1.CertificateStatus_CERTIFICATE_STATUS_EXPIRED
		}
		c := &credgwv1.Certificate{Serial: r.Serial, Profile: profileNames[r.Profile], Der: r.DER, Sha256: r.SHA256,
			NotBefore: timestamppb.New(r.NotBefore), NotAfter: timestamppb.New(r.NotAfter), Status: st,
			RevocationReason: credgwv1.RevocationReason(r.RevocationReason)}
		if r.Revoked() {
			c.RevokedAt = timestamppb.New(r.RevokedAt)
		}
		if out.ExpiresAt == nil || r.NotAfter.Before(out.ExpiresAt.AsTime()) {
			out.ExpiresAt = timestamppb.New(r.NotAfter)
		}
		out.Certificates = append(out.Certificates, c)
	}
	return out, nil
}

// ListCredentials lists the person's own credential sets (by the configured
// person attribute: every card of the person).
func (e *enrollmentService) ListCredentials(ctx context.Context, req *credgwv1.ListCredentialsRequest) (*credgwv1.ListCredentialsResponse, error) {
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil {
		return nil, err
	}
	sets, err := e.s.store.CredentialSetsOfPerson(ctx, sess.PersonID)
	if err != nil {
		return nil, err
	}
	resp := &credgwv1.ListCredentialsResponse{}
	for _, cs := range sets {
		out, err := e.credentialSet(ctx, cs)
		if err != nil {
			return nil, err
		}
		resp.CredentialSets = append(resp.CredentialSets, out)
	}
	return resp, nil
}

// RevokeCredential revokes one of the person's own credential sets (lost
// or replaced device).
func (e *enrollmentService) RevokeCredential(ctx context.Context, req *credgwv1.RevokeCredentialRequest) (*credgwv1.RevokeCredentialResponse, error) {
	if e.s.activation == nil {
		return nil, errNoCA
	}
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil {
		return nil, err
	}
	reason := issuance.RevocationReason(req.GetReason())
	if reason == 0 {
		reason = 5 // cessationOfOperation: the device is no longer used
	}
	cs, err := e.s.activation.RevokeSet(ctx, sess.PersonID, req.GetCredentialSetId(), reason)
	if err != nil {
		return nil, err
	}
	e.s.auditSet(ctx, "piv:"+sess.PersonID, "revoke", cs.ID, fmt.Sprintf("by its owner; reason=%d", int(reason)))
	e.s.notifySet(ctx, "revocation", cs.ID, "Derived PIV credentials were revoked", "Derived PIV credentials of yours were revoked at your request.")
	e.s.log.Info("credential set revoked by its owner", "person_id", sess.PersonID, "credential_set_id", cs.ID, "reason", reason)
	out, err := e.credentialSet(ctx, *cs)
	if err != nil {
		return nil, err
	}
	return &credgwv1.RevokeCredentialResponse{CredentialSet: out}, nil
}
