package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"slices"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/attest"
	"github.com/credgw/credgw/issuance"
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
	// The session is looked up first: an unknown or expired token is
	// Unauthenticated whoever asks.
	var card *x509.Certificate
	c, ok := callerFrom(ctx)
	if ok && c.role == rolePIV {
		card = c.cert
	}
	sess, err := e.s.sessions.Lookup(ctx, token, card)
	if err == nil && !ok {
		return store.PIVSession{}, status.Error(codes.PermissionDenied, "caller unknown")
	}
	return sess, err
}

func (e *enrollmentService) CreateEnrollment(ctx context.Context, req *credgwv1.CreateEnrollmentRequest) (*credgwv1.CreateEnrollmentResponse, error) {
	if e.s.activation == nil {
		return nil, errNoCA
	}
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil {
		return nil, err
	}
	en, err := e.s.activation.Enroll(ctx, activation.EnrollRequest{Session: sess, IdentityName: req.GetIdentityName(), CredentialType: req.GetCredentialType()})
	if err != nil {
		return nil, err
	}
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
	string(issuance.DerivedPIVAuth):   credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH,
	string(issuance.DigitalSignature): credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE,
	string(issuance.KeyManagement):    credgwv1.Profile_PROFILE_KEY_MANAGEMENT,
}

// credentialSetProto renders a set with its certificates.
func (s *Server) credentialSetProto(v activation.SetView) *credgwv1.CredentialSet {
	cs := v.Set
	out := &credgwv1.CredentialSet{Id: cs.ID, IdentityName: cs.IdentityName, CredentialType: cs.CredentialType,
		State: setStates[cs.State], CreatedAt: timestamppb.New(cs.CreatedAt)}
	out.Device = storedDevice(cs.Device)
	out.Attestations = attestationVerdicts(cs.Attestation)
	for _, r := range v.Certificates {
		st := credgwv1.CertificateStatus_CERTIFICATE_STATUS_GOOD
		switch {
		case r.Revoked():
			st = credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED
		case !s.now().Before(r.NotAfter):
			st = credgwv1.CertificateStatus_CERTIFICATE_STATUS_EXPIRED
		}
		c := certificateProto(r)
		c.Status = st
		if out.ExpiresAt == nil || r.NotAfter.Before(out.ExpiresAt.AsTime()) {
			out.ExpiresAt = timestamppb.New(r.NotAfter)
		}
		out.Certificates = append(out.Certificates, c)
	}
	return out
}

// certificateProto is the API form of a certificate record (status is
// the caller's to set).
func certificateProto(r store.CertificateRecord) *credgwv1.Certificate {
	c := &credgwv1.Certificate{Serial: r.Serial, Profile: profileNames[r.Profile], Der: r.DER, Sha256: r.SHA256,
		NotBefore: timestamppb.New(r.NotBefore), NotAfter: timestamppb.New(r.NotAfter),
		RevocationReason: credgwv1.RevocationReason(r.RevocationReason)}
	if r.Revoked() {
		c.RevokedAt = timestamppb.New(r.RevokedAt)
	}
	return c
}

func (s *Server) credentialSetsProto(vs []activation.SetView) []*credgwv1.CredentialSet {
	out := make([]*credgwv1.CredentialSet, 0, len(vs))
	for _, v := range vs {
		out = append(out, s.credentialSetProto(v))
	}
	return out
}

// ListCredentials lists the person's own credential sets (by the configured
// person attribute: every card of the person).
func (e *enrollmentService) ListCredentials(ctx context.Context, req *credgwv1.ListCredentialsRequest) (*credgwv1.ListCredentialsResponse, error) {
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil || e.s.activation == nil {
		return &credgwv1.ListCredentialsResponse{}, err // no CA: nothing was issued
	}
	vs, err := e.s.activation.SetsOfPerson(ctx, sess.PersonID)
	if err != nil {
		return nil, err
	}
	return &credgwv1.ListCredentialsResponse{CredentialSets: e.s.credentialSetsProto(vs)}, nil
}

// RevokeCredential revokes one of the person's own credential sets (lost
// or replaced device).
func (e *enrollmentService) RevokeCredential(ctx context.Context, req *credgwv1.RevokeCredentialRequest) (*credgwv1.RevokeCredentialResponse, error) {
	if e.s.lifecycle == nil {
		return nil, errNoCA
	}
	sess, err := e.session(ctx, req.GetSessionToken())
	if err != nil {
		return nil, err
	}
	v, err := e.s.lifecycle.RevokeOwn(ctx, sess.PersonID, req.GetCredentialSetId(), issuance.RevocationReason(req.GetReason()), false)
	if err != nil {
		return nil, err
	}
	return &credgwv1.RevokeCredentialResponse{CredentialSet: e.s.credentialSetProto(v)}, nil
}

// attestationVerdicts reads the stored verdicts (activation.Verdicts.JSON).
func attestationVerdicts(stored string) []*credgwv1.AttestationVerdict {
	var m map[string]attest.Result
	if json.Unmarshal([]byte(stored), &m) != nil {
		return nil
	}
	var out []*credgwv1.AttestationVerdict
	for p, r := range m {
		out = append(out, &credgwv1.AttestationVerdict{Profile: profileNames[p], Format: r.Format, SecurityLevel: r.SecurityLevel,
			VerifiedBootState: r.VerifiedBootState, DeviceLocked: r.DeviceLocked})
	}
	slices.SortFunc(out, func(a, b *credgwv1.AttestationVerdict) int { return int(a.Profile) - int(b.Profile) })
	return out
}
