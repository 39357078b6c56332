package server

import (
	"context"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// adminService is the Admin API (admin role only, by the interceptor).
type adminService struct {
	credgwv1.UnimplementedAdminServer
	s *Server
}

var _ credgwv1.AdminServer = (*adminService)(nil)

var errNoCA = status.Error(codes.FailedPrecondition, "issuance is not configured (no ca section in the config)")

func (a *adminService) RevokeCertificate(ctx context.Context, req *credgwv1.RevokeCertificateRequest) (*credgwv1.RevokeCertificateResponse, error) {
	if a.s.ca == nil {
		return nil, errNoCA
	}
	if req.GetSerial() == "" {
		return nil, status.Error(codes.InvalidArgument, "serial: give the certificate serial in hex")
	}
	if err := a.s.ca.Revoke(ctx, req.GetSerial(), int(req.GetReason())); err != nil {
		return nil, err
	}
	a.s.log.Info("certificate revoked by an administrator", "serial", req.GetSerial(), "reason", req.GetReason().String())
	rec, err := a.s.store.Certificate(ctx, normalizeSerial(req.GetSerial()))
	if err != nil {
		return nil, err
	}
	return &credgwv1.RevokeCertificateResponse{Certificate: &credgwv1.Certificate{
		Serial: rec.Serial, Der: rec.DER, Sha256: rec.SHA256, Status: credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED,
		NotBefore: timestamppb.New(rec.NotBefore), NotAfter: timestamppb.New(rec.NotAfter), RevokedAt: timestamppb.New(rec.RevokedAt),
		RevocationReason: credgwv1.RevocationReason(rec.RevocationReason),
	}}, nil
}

func (a *adminService) ForceCRL(ctx context.Context, _ *credgwv1.ForceCRLRequest) (*credgwv1.ForceCRLResponse, error) {
	if a.s.ca == nil {
		return nil, errNoCA
	}
	if _, err := a.s.ca.CRL(ctx, true); err != nil {
		return nil, err
	}
	n, this, next := a.s.ca.CRLInfo(ctx)
	return &credgwv1.ForceCRLResponse{CrlNumber: n, ThisUpdate: timestamppb.New(this), NextUpdate: timestamppb.New(next)}, nil
}

func normalizeSerial(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ':':
		case c >= 'A' && c <= 'F':
			out = append(out, c+'a'-'A')
		default:
			out = append(out, c)
		}
	}
	for len(out) > 1 && out[0] == '0' {
		out = out[1:]
	}
	return string(out)
}
