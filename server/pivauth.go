package server

import (
	"context"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pivAuthService is PKI-AUTH over gRPC: it translates to piv/session.
type pivAuthService struct {
	credgwv1.UnimplementedPIVAuthServer
	s *Server
}

var _ credgwv1.PIVAuthServer = (*pivAuthService)(nil)

// TokenHash is what the store keeps of a session token.
func TokenHash(token string) string { return session.TokenHash(token) }

func (a *pivAuthService) BeginSession(ctx context.Context, _ *credgwv1.BeginSessionRequest) (*credgwv1.BeginSessionResponse, error) {
	c, err := a.s.sessions.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &credgwv1.BeginSessionResponse{
		SessionId: c.SessionID, Challenge: c.Challenge, ExpiresAt: timestamppb.New(c.ExpiresAt), GatewayId: c.GatewayID,
	}, nil
}

var sigAlgs = map[credgwv1.SignatureAlgorithm]piv.SignatureAlgorithm{
	credgwv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_UNSPECIFIED:      piv.SigAuto,
	credgwv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA256:     piv.SigECDSASHA256,
	credgwv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA256: piv.SigRSAPKCS1SHA256,
	credgwv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA256:   piv.SigRSAPSSSHA256,
}

func (a *pivAuthService) CompleteSession(ctx context.Context, req *credgwv1.CompleteSessionRequest) (*credgwv1.CompleteSessionResponse, error) {
	switch {
	case req.GetSessionId() == "" || len(req.GetSessionId()) > 64:
		return nil, status.Error(codes.InvalidArgument, "session_id: give the id BeginSession returned")
	case len(req.GetPivAuthCertificate()) == 0:
		return nil, status.Error(codes.InvalidArgument, "piv_auth_certificate: send the DER PIV Authentication certificate read from the card (9A)")
	case len(req.GetSignature()) == 0:
		return nil, status.Error(codes.InvalidArgument, "signature: sign the challenge digest with the card's 9A key")
	case len(req.GetIntermediates()) > 8:
		return nil, status.Error(codes.InvalidArgument, "intermediates: at most 8")
	}
	alg, ok := sigAlgs[req.GetSignatureAlgorithm()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "signature_algorithm %v is not supported", req.GetSignatureAlgorithm())
	}
	p := session.Proof{SessionID: req.GetSessionId(), Certificates: append([][]byte{req.GetPivAuthCertificate()}, req.GetIntermediates()...), Algorithm: alg, Signature: req.GetSignature(),
		DigitalSignature: req.GetDigitalSignatureCertificate()}
	if c, ok := callerFrom(ctx); ok && c.role == rolePIV {
		p.TLSCard = c.cert
	}
	if pr, ok := peer.FromContext(ctx); ok {
		p.Source = pr.Addr.String()
	}
	o, err := a.s.sessions.Complete(ctx, p)
	if err != nil {
		return nil, err
	}
	id, leaf := o.Identity, o.Leaf
	return &credgwv1.CompleteSessionResponse{
		SessionToken: o.Token,
		ExpiresAt:    timestamppb.New(o.ExpiresAt),
		Identity: &credgwv1.PIVIdentity{
			Fascn: id.FASCNRaw, FascnText: id.FASCN.String(), FascnIdentifier: id.FASCN.Identifier(),
			CardUuid: id.CardUUID, Upn: id.UPN, Email: id.Email, EmailSource: o.EmailSource, Subject: id.Subject,
			PersonId: id.PersonID, PivAuthSerial: leaf.SerialNumber.Text(16), PivAuthSha256: o.Fingerprint,
			PivAuthNotAfter: timestamppb.New(leaf.NotAfter),
		},
	}, nil
}
