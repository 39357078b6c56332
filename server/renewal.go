package server

import (
	"context"
	"crypto/x509"

	"github.com/credgw/credgw/activation"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// renewalService re-keys derived credentials without the card (Common
// Policy §3.3.1): the device proves its current derived PIV Authentication
// key in the TLS handshake.
type renewalService struct {
	credgwv1.UnimplementedRenewalServer
	s *Server
}

// currentCertificate is the caller's TLS client certificate: the device's
// current derived PIV Authentication certificate, checked by the service.
func (r *renewalService) currentCertificate(ctx context.Context) (*x509.Certificate, error) {
	if r.s.activation == nil {
		return nil, errNoCA
	}
	var tlsInfo credentials.TLSInfo
	if p, ok := peer.FromContext(ctx); ok {
		tlsInfo, _ = p.AuthInfo.(credentials.TLSInfo)
	}
	if len(tlsInfo.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "renewal needs the device's current derived PIV Authentication certificate as TLS client certificate")
	}
	return tlsInfo.State.PeerCertificates[0], nil
}

// Rekey issues new certificates for new device keys (activation.Rekey).
func (r *renewalService) Rekey(req *credgwv1.RekeyRequest, stream grpc.ServerStreamingServer[credgwv1.RedeemResponse]) error {
	cur, err := r.currentCertificate(stream.Context())
	if err != nil {
		return err
	}
	d, err := r.s.activation.Rekey(stream.Context(), activation.RekeyRequest{Current: cur, RedemptionID: req.GetRedemptionId(),
		Secret: req.GetSecret(), Password: req.GetPassword(), CSRs: req.GetCsrs()}, progressTo(stream))
	if err != nil {
		return err
	}
	return sendDelivery(d, req.GetResumeOffset(), stream.Send)
}

// Confirm completes a re-key: the new set becomes active and the one the
// calling certificate belongs to is revoked (superseded).
func (r *renewalService) Confirm(ctx context.Context, req *credgwv1.ConfirmRequest) (*credgwv1.ConfirmResponse, error) {
	cur, err := r.currentCertificate(ctx)
	if err != nil {
		return nil, err
	}
	c, err := r.s.activation.ConfirmRekey(ctx, cur, req.GetRedemptionId(), req.GetSecret(), req.GetSha256())
	if err != nil {
		return nil, err
	}
	return &credgwv1.ConfirmResponse{CredentialSetId: c.CredentialSetID, Serials: c.Serials}, nil
}
