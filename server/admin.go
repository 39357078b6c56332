package server

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"

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
	if err := a.s.ca.Revoke(ctx, req.GetSerial(), issuance.RevocationReason(req.GetReason())); err != nil {
		return nil, err
	}
	a.s.audit(ctx, store.AuditEvent{Actor: "admin", Action: "revoke", Serials: []string{normalizeSerial(req.GetSerial())},
		Detail: "reason=" + req.GetReason().String()})
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

// selector turns the API's PIV identity selector into the store's.
func selector(sel *credgwv1.PIVIdentitySelector) (store.IdentitySelector, error) {
	switch v := sel.GetSelector().(type) {
	case *credgwv1.PIVIdentitySelector_Fascn:
		if len(v.Fascn) != 25 {
			return store.IdentitySelector{}, status.Errorf(codes.InvalidArgument, "identity.fascn: want the raw 25-byte FASC-N, got %d bytes", len(v.Fascn))
		}
		return store.IdentitySelector{FASCN: v.Fascn}, nil
	case *credgwv1.PIVIdentitySelector_CardUuid:
		u := strings.ToLower(strings.TrimPrefix(v.CardUuid, "urn:uuid:"))
		if !uuidRe.MatchString(u) {
			return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity.card_uuid: want a UUID like 3f2504e0-4f89-41d3-9a0c-0305e82c3301")
		}
		return store.IdentitySelector{CardUUID: u}, nil
	case *credgwv1.PIVIdentitySelector_PersonId:
		if v.PersonId == "" || len(v.PersonId) > 128 {
			return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity.person_id: 1 to 128 characters")
		}
		return store.IdentitySelector{PersonID: v.PersonId}, nil
	}
	return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity: give one of fascn, card_uuid or person_id")
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// RevokeIdentity revokes every live derived credential of a card or person.
func (a *adminService) RevokeIdentity(ctx context.Context, req *credgwv1.RevokeIdentityRequest) (*credgwv1.RevokeIdentityResponse, error) {
	if a.s.activation == nil {
		return nil, errNoCA
	}
	sel, err := selector(req.GetIdentity())
	if err != nil {
		return nil, err
	}
	serials, err := a.s.activation.RevokeIdentity(ctx, sel, issuance.RevocationReason(req.GetReason()), false, "")
	if err != nil {
		return nil, err
	}
	a.s.audit(ctx, auditIdentity("admin", "revoke-identity", sel, serials, "reason="+req.GetReason().String()))
	a.s.notifyIdentity(ctx, "revocation", sel, "Your derived PIV credentials were revoked", "An administrator revoked your derived PIV credentials.")
	a.s.log.Info("identity's derived credentials revoked by an administrator", "identity", sel.String(), "reason", req.GetReason().String(),
		"revoked", len(serials))
	return &credgwv1.RevokeIdentityResponse{RevokedSerials: serials}, nil
}

// TerminateIdentity records the PIV identity as terminated (no PKI-AUTH,
// enrollment or redemption from now on) and revokes all its derived
// credentials (cessationOfOperation): FIPS 201-3 §2.9.4, SP 800-157r1 §2.4.
func (a *adminService) TerminateIdentity(ctx context.Context, req *credgwv1.TerminateIdentityRequest) (*credgwv1.TerminateIdentityResponse, error) {
	if a.s.activation == nil {
		return nil, errNoCA
	}
	sel, err := selector(req.GetIdentity())
	if err != nil {
		return nil, err
	}
	if len(req.GetComment()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "comment: at most 1024 bytes")
	}
	serials, err := a.s.activation.RevokeIdentity(ctx, sel, issuance.ReasonCessationOfOperation, true, req.GetComment())
	if err != nil {
		return nil, err
	}
	a.s.audit(ctx, auditIdentity("admin", "terminate", sel, serials, ""))
	a.s.notifyIdentity(ctx, "termination", sel, "Your derived PIV credentials were revoked", "Your PIV account was terminated; every derived PIV credential of it was revoked.")
	a.s.log.Info("PIV identity terminated", "identity", sel.String(), "revoked", len(serials))
	return &credgwv1.TerminateIdentityResponse{RevokedSerials: serials}, nil
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

// optionalSelector is selector, with no selector meaning everyone.
func optionalSelector(sel *credgwv1.PIVIdentitySelector) (store.IdentitySelector, error) {
	if sel.GetSelector() == nil {
		return store.IdentitySelector{}, nil
	}
	return selector(sel)
}

// listArgs reads the identity selector (optional) and the paging of a list
// request.
func listArgs(id *credgwv1.PIVIdentitySelector, size int32, token string) (store.IdentitySelector, int, int, error) {
	sel, err := optionalSelector(id)
	if err != nil {
		return sel, 0, 0, err
	}
	off, n, err := page(size, token)
	return sel, off, n, err
}

// page reads page_size (1–500, 0: 50) and page_token (an offset).
func page(size int32, token string) (int, int, error) {
	n := int(size)
	switch {
	case n < 0 || n > 500:
		return 0, 0, status.Error(codes.InvalidArgument, "page_size: 1 to 500 (0: 50)")
	case n == 0:
		n = 50
	}
	off := 0
	if token != "" {
		v, err := strconv.Atoi(token)
		if err != nil || v < 0 {
			return 0, 0, status.Error(codes.InvalidArgument, "page_token: pass the next_page_token of the previous answer")
		}
		off = v
	}
	return off, n, nil
}

var setStateNames = map[credgwv1.CredentialSetState]string{}
var actStates = map[string]credgwv1.ActivationState{
	store.ActPending: credgwv1.ActivationState_ACTIVATION_STATE_PENDING, store.ActRedeeming: credgwv1.ActivationState_ACTIVATION_STATE_REDEEMING,
	store.ActCompleted: credgwv1.ActivationState_ACTIVATION_STATE_COMPLETED, store.ActLocked: credgwv1.ActivationState_ACTIVATION_STATE_LOCKED,
	store.ActExpired: credgwv1.ActivationState_ACTIVATION_STATE_EXPIRED,
}
var actStateNames = map[credgwv1.ActivationState]string{}

func init() {
	for k, v := range setStates {
		setStateNames[v] = k
	}
	for k, v := range actStates {
		actStateNames[v] = k
	}
}

// ListCredentials lists credential sets, of one PIV identity or all,
// newest first.
func (a *adminService) ListCredentials(ctx context.Context, req *credgwv1.AdminListCredentialsRequest) (*credgwv1.AdminListCredentialsResponse, error) {
	sel, off, n, err := listArgs(req.GetIdentity(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	sets, err := a.s.store.ListCredentialSets(ctx, sel, setStateNames[req.GetState()], off, n)
	if err != nil {
		return nil, err
	}
	resp := &credgwv1.AdminListCredentialsResponse{}
	e := &enrollmentService{s: a.s}
	for _, cs := range sets {
		out, err := e.credentialSet(ctx, cs)
		if err != nil {
			return nil, err
		}
		resp.CredentialSets = append(resp.CredentialSets, out)
	}
	if len(sets) == n {
		resp.NextPageToken = strconv.Itoa(off + n)
	}
	return resp, nil
}

// ListActivations lists activations, of one PIV identity or all, newest
// first.
func (a *adminService) ListActivations(ctx context.Context, req *credgwv1.ListActivationsRequest) (*credgwv1.ListActivationsResponse, error) {
	sel, off, n, err := listArgs(req.GetIdentity(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	acts, err := a.s.store.ListActivations(ctx, sel, actStateNames[req.GetState()], off, n)
	if err != nil {
		return nil, err
	}
	resp := &credgwv1.ListActivationsResponse{}
	for _, ac := range acts {
		resp.Activations = append(resp.Activations, activationProto(ac, a.s.now()))
	}
	if len(acts) == n {
		resp.NextPageToken = strconv.Itoa(off + n)
	}
	return resp, nil
}

// CancelActivation ends a pending activation for good and revokes its
// (still empty) credential set.
func (a *adminService) CancelActivation(ctx context.Context, req *credgwv1.CancelActivationRequest) (*credgwv1.CancelActivationResponse, error) {
	if a.s.activation == nil {
		return nil, errNoCA
	}
	if req.GetActivationId() == "" {
		return nil, status.Error(codes.InvalidArgument, "activation_id: give the activation's id (credgw admin activations lists them)")
	}
	ac, err := a.s.store.ActivationByID(ctx, req.GetActivationId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no activation %q", req.GetActivationId())
	}
	if err != nil {
		return nil, err
	}
	if ac.State != store.ActPending {
		return nil, status.Errorf(codes.FailedPrecondition, "activation %s is %s; only a pending one can be cancelled (revoke its credential set %s instead)",
			ac.ID, ac.State, ac.CredentialSetID)
	}
	cs, err := a.s.store.CredentialSet(ctx, ac.CredentialSetID)
	if err != nil {
		return nil, err
	}
	if _, err := a.s.activation.RevokeSet(ctx, cs.PersonID, cs.ID, issuance.ReasonCessationOfOperation); err != nil {
		return nil, err
	}
	a.s.auditSet(ctx, "admin", "cancel-activation", cs.ID, "activation_id="+ac.ID+"; "+req.GetComment())
	a.s.log.Info("activation cancelled by an administrator", "activation_id", ac.ID, "credential_set_id", cs.ID, "person_id", cs.PersonID)
	if ac, err = a.s.store.ActivationByID(ctx, ac.ID); err != nil {
		return nil, err
	}
	return &credgwv1.CancelActivationResponse{Activation: activationProto(ac, a.s.now())}, nil
}

// activationProto is the API form of an activation; a pending one past its
// expiry (not swept yet) shows as expired.
func activationProto(ac store.Activation, now time.Time) *credgwv1.Activation {
	st := ac.State
	if st == store.ActPending && !now.Before(ac.ExpiresAt) {
		st = store.ActExpired
	}
	return &credgwv1.Activation{Id: ac.ID, CredentialSetId: ac.CredentialSetID, State: actStates[st],
		FailedAttempts: int32(ac.FailedAttempts), AttemptsLeft: int32(max(0, ac.MaxAttempts-ac.FailedAttempts)),
		CreatedAt: timestamppb.New(ac.CreatedAt), ExpiresAt: timestamppb.New(ac.ExpiresAt)}
}
