package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/piv"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pivAuthService is PKI-AUTH over gRPC.
type pivAuthService struct {
	credgwv1.UnimplementedPIVAuthServer
	s *Server
}

var _ credgwv1.PIVAuthServer = (*pivAuthService)(nil)

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenHash is what the store keeps of a session token.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func (a *pivAuthService) BeginSession(ctx context.Context, _ *credgwv1.BeginSessionRequest) (*credgwv1.BeginSessionResponse, error) {
	sid, err := randomToken(16)
	if err != nil {
		return nil, err
	}
	challenge := make([]byte, piv.ChallengeSize)
	if _, err := rand.Read(challenge); err != nil {
		return nil, err
	}
	now := a.s.now()
	c := store.Challenge{SessionID: sid, Challenge: challenge, GatewayID: a.s.cfg.GatewayID, CreatedAt: now, ExpiresAt: now.Add(a.s.cfg.PIV.ChallengeTTL.Duration)}
	if err := a.s.store.CreateChallenge(ctx, c); err != nil {
		return nil, err
	}
	return &credgwv1.BeginSessionResponse{
		SessionId: sid, Challenge: challenge, ExpiresAt: timestamppb.New(c.ExpiresAt), GatewayId: a.s.cfg.GatewayID,
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
	now := a.s.now()
	// Single use first: whatever follows, this challenge is spent.
	ch, err := a.s.store.ConsumeChallenge(ctx, req.GetSessionId(), now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Error(codes.NotFound, "unknown session: call BeginSession first")
	case errors.Is(err, store.ErrAlreadyUsed):
		return nil, status.Error(codes.FailedPrecondition, "this challenge was used already (replay); call BeginSession for a new one")
	case err != nil:
		return nil, err
	}
	if !now.Before(ch.ExpiresAt) {
		return nil, status.Errorf(codes.FailedPrecondition, "the challenge expired at %s; call BeginSession again and sign within %s",
			ch.ExpiresAt.UTC().Format("15:04:05Z"), a.s.cfg.PIV.ChallengeTTL.Duration)
	}
	certs, err := piv.ParseCertificates(append([][]byte{req.GetPivAuthCertificate()}, req.GetIntermediates()...)...)
	if err != nil {
		return nil, err
	}
	leaf, inter := certs[0], certs[1:]
	if c, ok := callerFrom(ctx); ok && c.role == rolePIV && !bytes.Equal(c.cert.Raw, leaf.Raw) {
		return nil, status.Error(codes.PermissionDenied, "the PIV Authentication certificate is not the one of the TLS connection")
	}
	digest := piv.ChallengeDigest(ch.GatewayID, ch.SessionID, ch.Challenge)
	if err := piv.VerifyChallengeSignature(leaf.PublicKey, alg, digest, req.GetSignature()); err != nil {
		return nil, err
	}
	res, err := a.s.verifier.VerifyPIVAuth(ctx, leaf, inter)
	if err != nil {
		return nil, err
	}
	id := res.Identity
	emailSource := ""
	if id.Email != "" {
		emailSource = "piv-auth"
	} else if len(req.GetDigitalSignatureCertificate()) > 0 {
		ds, err := piv.ParseCertificates(req.GetDigitalSignatureCertificate())
		if err != nil {
			return nil, fmt.Errorf("digital_signature_certificate: %w", err)
		}
		email, err := a.s.verifier.VerifyDigitalSignature(ctx, ds[0], leaf, inter)
		if err != nil {
			return nil, fmt.Errorf("digital_signature_certificate: %w", err)
		}
		id.Email, emailSource = email, "digital-signature"
	}
	src := ""
	if p, ok := peer.FromContext(ctx); ok {
		src = p.Addr.String()
	}
	token, expires, err := a.s.openPIVSession(ctx, ch.SessionID, res, id, emailSource, src)
	if err != nil {
		return nil, err
	}
	fp := res.Fingerprint()
	a.s.log.Info("PKI-AUTH succeeded", "person_id", id.PersonID, "card_uuid", id.CardUUID,
		"piv_auth_serial", leaf.SerialNumber.Text(16), "status_source", res.StatusSource)
	return &credgwv1.CompleteSessionResponse{
		SessionToken: token,
		ExpiresAt:    timestamppb.New(expires),
		Identity: &credgwv1.PIVIdentity{
			Fascn: id.FASCNRaw, FascnText: id.FASCN.String(), FascnIdentifier: id.FASCN.Identifier(),
			CardUuid: id.CardUUID, Upn: id.UPN, Email: id.Email, EmailSource: emailSource, Subject: id.Subject,
			PersonId: id.PersonID, PivAuthSerial: leaf.SerialNumber.Text(16), PivAuthSha256: fp,
			PivAuthNotAfter: timestamppb.New(leaf.NotAfter),
		},
	}, nil
}

// openPIVSession keeps the copy of the verified PIV Authentication
// certificate and records a session of piv.session_ttl; it returns the token
// (only its hash is stored).
func (s *Server) openPIVSession(ctx context.Context, sessionID string, res *piv.Result, id piv.Identity, emailSource, src string) (string, time.Time, error) {
	// A terminated identity's card may still verify (a collected card's
	// certificate need not be revoked: SP 800-157r1 §2.4).
	if t, err := s.store.Terminated(ctx, id.FASCNRaw, id.CardUUID, id.PersonID); err != nil {
		return "", time.Time{}, err
	} else if t {
		return "", time.Time{}, activation.ErrTerminated
	}
	token, err := randomToken(32)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	expires := now.Add(s.cfg.PIV.SessionTTL.Duration)
	leaf := res.Leaf
	fp := res.Fingerprint()
	err = s.store.CreatePIVSession(ctx, store.PIVSession{
		TokenHash: TokenHash(token), SessionID: sessionID, CertSHA256: fp, PersonID: id.PersonID,
		FASCN: id.FASCNRaw, CardUUID: id.CardUUID, UPN: id.UPN, Email: id.Email, EmailSource: emailSource,
		Subject: id.Subject, SourceAddr: src, CreatedAt: now, ExpiresAt: expires,
	}, store.PIVCertificate{
		SHA256: fp, DER: leaf.Raw, Serial: leaf.SerialNumber.Text(16), Issuer: leaf.Issuer.String(),
		Subject: id.Subject, FASCN: id.FASCNRaw, CardUUID: id.CardUUID, NotAfter: leaf.NotAfter,
	})
	if err == nil {
		s.audit(ctx, store.AuditEvent{Actor: "piv:" + id.PersonID, Action: "piv-auth", PersonID: id.PersonID, CardUUID: id.CardUUID,
			Source: src, Detail: "piv_auth_sha256=" + fp + "; status=" + res.StatusSource})
	}
	return token, expires, err
}
