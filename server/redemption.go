package server

import (
	"context"
	"crypto/x509"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/piv"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// ChunkSize is the largest Chunk the stream sends.
const ChunkSize = 32 << 10

// redemptionService is the device side: open to any caller.
type redemptionService struct {
	credgwv1.UnimplementedRedemptionServer
	s *Server
}

var _ credgwv1.RedemptionServer = (*redemptionService)(nil)

func (r *redemptionService) Redeem(req *credgwv1.RedeemRequest, stream grpc.ServerStreamingServer[credgwv1.RedeemResponse]) error {
	if r.s.activation == nil {
		return errNoCA
	}
	if req.GetActivationId() == "" || len(req.GetSecret()) == 0 {
		return status.Error(codes.InvalidArgument, "activation_id and secret: scan the QR code")
	}
	csrs, atts, err := activation.ParseCSRs(req.GetCsrs())
	if err != nil {
		return err
	}
	if err := checkDevice(req.GetDevice()); err != nil {
		return err
	}
	anchors, err := deviceAnchors(req.GetTrustAnchors())
	if err != nil {
		return err
	}
	var device []byte
	if req.GetDevice() != nil {
		device, _ = protojson.Marshal(req.GetDevice())
	}
	d, err := r.s.activation.Redeem(stream.Context(), activation.RedeemRequest{
		ActivationID: req.GetActivationId(), Secret: req.GetSecret(), Password: req.GetPassword(),
		Device: string(device), CSRs: csrs, Attestations: atts, TrustAnchors: anchors,
	}, progressTo(stream))
	if err != nil {
		return err
	}
	return sendDelivery(d, req.GetResumeOffset(), stream.Send)
}

// maxDeviceAnchors bounds the trust anchors a device sends (each one
// certificate, at most 16 KiB).
const maxDeviceAnchors = 8

// deviceAnchors parses RedeemRequest.trust_anchors.
func deviceAnchors(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) > maxDeviceAnchors {
		return nil, status.Errorf(codes.InvalidArgument, "trust_anchors: %d certificates, at most %d", len(ders), maxDeviceAnchors)
	}
	var out []*x509.Certificate
	for i, der := range ders {
		if len(der) > 16<<10 {
			return nil, status.Errorf(codes.InvalidArgument, "trust_anchors[%d]: %d bytes, at most 16 KiB", i, len(der))
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "trust_anchors[%d]: not a DER certificate: %v", i, err)
		}
		// Each anchor may cost signature checks: keys a PKI's root has
		// (a 16384-bit RSA key costs milliseconds a check).
		if err := piv.CheckCAKey(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "trust_anchors[%d]: %q has a key no root of a PKI credgw chains to has (RSA 2048 to 4096, ECDSA P-256, P-384, P-521)", i, c.Subject.String())
		}
		out = append(out, c)
	}
	return out, nil
}

// progressTo reports the stages of a redemption on its stream.
func progressTo(stream grpc.ServerStreamingServer[credgwv1.RedeemResponse]) activation.Progress {
	return func(stage credgwv1.Stage, cur, total int, msg string) {
		_ = stream.Send(&credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Progress{Progress: &credgwv1.Progress{
			Stage: stage, Current: int32(cur), Total: int32(total), Message: msg}}})
	}
}

// sendDelivery streams a package from a resume offset: Accepted, the
// chunks, Done.
func sendDelivery(d *activation.Delivery, off int64, send func(*credgwv1.RedeemResponse) error) error {
	if off < 0 || off > int64(len(d.Package)) {
		return status.Errorf(codes.OutOfRange, "resume_offset %d: the package has %d bytes", off, len(d.Package))
	}
	if err := send(&credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{
		RedemptionId: d.RedemptionID, Manifest: d.Manifest, TotalBytes: int64(len(d.Package))}}}); err != nil {
		return err
	}
	for off < int64(len(d.Package)) {
		end := min(off+ChunkSize, int64(len(d.Package)))
		if err := send(&credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{
			Offset: off, Data: d.Package[off:end]}}}); err != nil {
			return err
		}
		off = end
	}
	return send(&credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Done{Done: &credgwv1.Done{Sha256: d.SHA256}}})
}

func (r *redemptionService) Confirm(ctx context.Context, req *credgwv1.ConfirmRequest) (*credgwv1.ConfirmResponse, error) {
	if r.s.activation == nil {
		return nil, errNoCA
	}
	if req.GetRedemptionId() == "" || len(req.GetSha256()) != 32 {
		return nil, status.Error(codes.InvalidArgument, "redemption_id and the 32-byte sha256 of the installed package are required")
	}
	c, err := r.s.activation.Confirm(ctx, req.GetRedemptionId(), req.GetSecret(), req.GetSha256())
	if err != nil {
		return nil, err
	}
	return &credgwv1.ConfirmResponse{CredentialSetId: c.CredentialSetID, Serials: c.Serials}, nil
}

// maxDeviceField bounds each text field of DeviceInfo: it is stored with
// the credential set and shown to administrators and in the portal.
const maxDeviceField = 256

// storedDevice decodes the description stored with a set. One stored
// before the fields were bounded is shown cut to the bound (each field at
// most maxDeviceField bytes, control characters dropped), so that an
// old row cannot make a listing fail.
func storedDevice(stored string) *credgwv1.DeviceInfo {
	if stored == "" || len(stored) > 1<<20 {
		return nil
	}
	var d credgwv1.DeviceInfo
	if protojson.Unmarshal([]byte(stored), &d) != nil {
		return nil
	}
	for _, f := range []*string{&d.Model, &d.Os, &d.OsVersion, &d.AgentVersion, &d.DeviceId} {
		v := strings.ToValidUTF8(*f, "")
		v = strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, v)
		if len(v) > maxDeviceField {
			v = strings.ToValidUTF8(v[:maxDeviceField], "") // drops a rune cut in two
		}
		*f = v
	}
	return &d
}

// checkDevice refuses a device description with a field longer than
// maxDeviceField bytes or not printable UTF-8 (no control characters).
func checkDevice(d *credgwv1.DeviceInfo) error {
	for _, f := range []struct{ name, value string }{
		{"model", d.GetModel()}, {"os", d.GetOs()}, {"os_version", d.GetOsVersion()},
		{"agent_version", d.GetAgentVersion()}, {"device_id", d.GetDeviceId()},
	} {
		if len(f.value) > maxDeviceField || !utf8.ValidString(f.value) || strings.IndexFunc(f.value, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return status.Errorf(codes.InvalidArgument, "device.%s: at most %d bytes of printable UTF-8", f.name, maxDeviceField)
		}
	}
	return nil
}
