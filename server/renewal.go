package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
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

// currentCredential checks the caller's TLS client certificate: one of our
// derived PIV Authentication certificates, recorded, not revoked, of an
// active set. It returns the record and set. (Termination is checked where
// a renewal is made and confirmed.)
func (r *renewalService) currentCredential(ctx context.Context) (store.CertificateRecord, store.CredentialSet, error) {
	var none store.CertificateRecord
	if r.s.ca == nil {
		return none, store.CredentialSet{}, errNoCA
	}
	var tlsInfo credentials.TLSInfo
	if p, ok := peer.FromContext(ctx); ok {
		tlsInfo, _ = p.AuthInfo.(credentials.TLSInfo)
	}
	if len(tlsInfo.State.PeerCertificates) == 0 {
		return none, store.CredentialSet{}, status.Error(codes.Unauthenticated, "renewal needs the device's current derived PIV Authentication certificate as TLS client certificate")
	}
	leaf := tlsInfo.State.PeerCertificates[0]
	chain := r.s.ca.Chain()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: r.s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return none, store.CredentialSet{}, status.Errorf(codes.PermissionDenied, "the TLS client certificate is not a valid derived credential of this gateway: %v", err)
	}
	rec, err := r.s.store.Certificate(ctx, normalizeSerial(leaf.SerialNumber.Text(16)))
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && !bytes.Equal(rec.DER, leaf.Raw)):
		return none, store.CredentialSet{}, status.Error(codes.PermissionDenied, "the TLS client certificate is not one this gateway issued")
	case err != nil:
		return none, store.CredentialSet{}, err
	case rec.Profile != string(issuance.DerivedPIVAuth):
		return none, store.CredentialSet{}, status.Errorf(codes.PermissionDenied, "renewal is authenticated with the derived PIV Authentication certificate, not the %s one", rec.Profile)
	case rec.Revoked():
		return none, store.CredentialSet{}, status.Error(codes.PermissionDenied, "the derived PIV Authentication certificate is revoked: enroll again with the card")
	}
	cs, err := r.s.store.CredentialSet(ctx, rec.CredentialSetID)
	if err != nil {
		return none, store.CredentialSet{}, err
	}
	if cs.State != store.SetActive {
		return none, store.CredentialSet{}, status.Errorf(codes.FailedPrecondition, "the credential set is %s, not active", cs.State)
	}
	return rec, cs, nil
}

// Rekey issues new certificates for new device keys, from 80 % of the
// current derived PIV Authentication certificate's lifetime, while the card
// is still good (checked now, OCSP then CRL) and not terminated.
func (r *renewalService) Rekey(req *credgwv1.RekeyRequest, stream grpc.ServerStreamingServer[credgwv1.RedeemResponse]) error {
	ctx := stream.Context()
	rec, old, err := r.currentCredential(ctx)
	if err != nil {
		return err
	}
	var actID string
	if req.GetRedemptionId() != "" {
		// A resume: the same activation, proven by the same secret.
		a, err := r.s.store.ActivationByRedemption(ctx, req.GetRedemptionId())
		if err != nil {
			return toStatus(activation.ErrNotAccepted)
		}
		if err := r.renewalOf(ctx, a, old); err != nil {
			return err
		}
		actID = a.ID
	} else {
		pct := r.s.cfg.Renewal.OpensAtPercent
		if opens := activation.RenewalOpens(rec.NotBefore, rec.NotAfter, pct); r.s.now().Before(opens) {
			return status.Errorf(codes.FailedPrecondition, "renewal opens at %s (%d %% of the certificate's lifetime)", opens.UTC().Format("2006-01-02 15:04 MST"), pct)
		}
		pc, err := r.s.store.PIVCertificate(ctx, old.PIVCertSHA256)
		if err != nil {
			return err
		}
		card, err := x509.ParseCertificate(pc.DER)
		if err != nil {
			return err
		}
		if _, err := r.s.verifier.VerifyPIVAuth(ctx, card, nil); err != nil {
			return toStatus(fmt.Errorf("the card's PIV Authentication certificate: %w", err))
		}
		if actID, err = r.s.activation.EnrollRenewal(ctx, old, req.GetSecret(), req.GetPassword()); err != nil {
			return err
		}
	}
	csrs, err := parseCSRs(req.GetCsrs())
	if err != nil {
		return err
	}
	send := func(m *credgwv1.RedeemResponse) error { return stream.Send(m) }
	d, err := r.s.activation.Redeem(ctx, activation.RedeemRequest{
		ActivationID: actID, Secret: req.GetSecret(), Password: req.GetPassword(), Device: old.Device, CSRs: csrs,
		Hardware: req.GetDevice().GetHardwareBacked(),
	}, func(stage credgwv1.Stage, cur, total int, msg string) {
		_ = send(&credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Progress{Progress: &credgwv1.Progress{
			Stage: stage, Current: int32(cur), Total: int32(total), Message: msg}}})
	})
	if err != nil {
		r.s.auditRedeemRefusal(ctx, actID, err)
		return err
	}
	if !d.Resumed {
		r.s.auditSet(ctx, "device", "rekey", d.Manifest.GetCredentialSetId(), "renews="+old.ID+"; redemption_id="+d.RedemptionID)
	}
	return sendDelivery(d, req.GetResumeOffset(), send)
}

// Confirm completes a re-key: the new set becomes active and the one the
// calling certificate belongs to is revoked (superseded).
func (r *renewalService) Confirm(ctx context.Context, req *credgwv1.ConfirmRequest) (*credgwv1.ConfirmResponse, error) {
	_, old, err := r.currentCredential(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRedemptionId() == "" || len(req.GetSha256()) != 32 {
		return nil, status.Error(codes.InvalidArgument, "redemption_id and the 32-byte sha256 of the installed package are required")
	}
	// Only the renewal of the calling certificate's set, checked before
	// anything changes.
	a, err := r.s.store.ActivationByRedemption(ctx, req.GetRedemptionId())
	if err != nil {
		return nil, toStatus(activation.ErrNotAccepted)
	}
	if err := r.renewalOf(ctx, a, old); err != nil {
		return nil, err
	}
	cs, err := r.s.activation.Confirm(ctx, req.GetRedemptionId(), req.GetSecret(), req.GetSha256())
	if err != nil {
		return nil, err
	}
	if _, err := r.s.activation.RevokeSet(ctx, old.PersonID, old.ID, issuance.ReasonSuperseded); err != nil {
		return nil, err
	}
	resp, err := r.s.confirmResponse(ctx, cs.ID)
	if err != nil {
		return nil, err
	}
	r.s.auditSet(ctx, "device", "rekey-confirm", cs.ID, "superseded="+old.ID)
	r.s.notifySet(ctx, "binding", cs.ID, "Your derived PIV credentials were renewed",
		"Your derived PIV credentials were re-keyed on the device that held them; the previous ones are revoked (superseded).")
	r.s.notifySet(ctx, "key-delivery", cs.ID, "Your encryption keys were delivered to a device",
		"A new escrowed S/MIME encryption key and your key history were delivered to the device that renewed its credentials.")
	r.s.log.Info("credentials renewed", "credential_set_id", cs.ID, "superseded", old.ID, "person_id", cs.PersonID)
	return resp, nil
}

// renewalOf refuses an activation that is not the renewal of old.
func (r *renewalService) renewalOf(ctx context.Context, a store.Activation, old store.CredentialSet) error {
	cs, err := r.s.store.CredentialSet(ctx, a.CredentialSetID)
	if err != nil {
		return err
	}
	if cs.RenewsSetID != old.ID {
		return status.Error(codes.PermissionDenied, "that redemption is not a renewal of the calling certificate's credentials")
	}
	return nil
}
