package server

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
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
	if a.s.lifecycle == nil {
		return nil, errNoCA
	}
	if req.GetSerial() == "" {
		return nil, status.Error(codes.InvalidArgument, "serial: give the certificate serial in hex")
	}
	if len(req.GetComment()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "comment: at most 1024 bytes")
	}
	rec, err := a.s.lifecycle.RevokeCertificate(ctx, req.GetSerial(), issuance.RevocationReason(req.GetReason()), req.GetComment())
	if err != nil {
		return nil, err
	}
	c := certificateProto(rec)
	c.Status = credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED
	return &credgwv1.RevokeCertificateResponse{Certificate: c}, nil
}

// selector turns the API's PIV identity selector into the store's. A
// person id must be one piv.person_attribute (personAttr) can make: a
// termination that names the person another way would match no one.
func selector(sel *credgwv1.PIVIdentitySelector, personAttr string) (store.IdentitySelector, error) {
	switch v := sel.GetSelector().(type) {
	case *credgwv1.PIVIdentitySelector_Fascn:
		if len(v.Fascn) != 25 {
			return store.IdentitySelector{}, status.Errorf(codes.InvalidArgument, "identity.fascn: want the raw 25-byte FASC-N, got %d bytes", len(v.Fascn))
		}
		return store.IdentitySelector{FASCN: v.Fascn}, nil
	case *credgwv1.PIVIdentitySelector_CardUuid:
		u := strings.TrimPrefix(strings.ToLower(v.CardUuid), "urn:uuid:")
		if !uuidRe.MatchString(u) {
			return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity.card_uuid: want a UUID like 3f2504e0-4f89-41d3-9a0c-0305e82c3301")
		}
		return store.IdentitySelector{CardUUID: u}, nil
	case *credgwv1.PIVIdentitySelector_PersonId:
		if v.PersonId == "" || len(v.PersonId) > 128 {
			return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity.person_id: 1 to 128 characters")
		}
		if err := personIDShape(v.PersonId, personAttr); err != nil {
			return store.IdentitySelector{}, status.Error(codes.InvalidArgument, err.Error())
		}
		return store.IdentitySelector{PersonID: piv.FoldPersonID(v.PersonId)}, nil
	}
	return store.IdentitySelector{}, status.Error(codes.InvalidArgument, "identity: give one of fascn, card_uuid or person_id")
}

// personIDShape checks that id is what the person attribute attr makes
// of a card: the FASC-N identifier's 14 digits, or an address with an @ and
// no space or control character.
func personIDShape(id, attr string) error {
	switch attr {
	case "upn", "email":
		what := "an email address"
		if attr == "upn" {
			what = "a UPN"
		}
		at := strings.IndexByte(id, '@')
		if at <= 0 || at == len(id)-1 || strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return fmt.Errorf("identity.person_id %q: piv.person_attribute is %s here, so a person id is %s (name@domain, no spaces)", id, attr, what)
		}
	default:
		if !fascnIDRe.MatchString(id) {
			return fmt.Errorf("identity.person_id %q: piv.person_attribute is fascn here, so a person id is the card's 14-digit FASC-N identifier "+
				"(agency code, system code, credential number), not an email address or a name", id)
		}
	}
	return nil
}

var fascnIDRe = regexp.MustCompile(`^[0-9]{14}$`)

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// RevokeIdentity revokes every live derived credential of a card or person.
func (a *adminService) RevokeIdentity(ctx context.Context, req *credgwv1.RevokeIdentityRequest) (*credgwv1.RevokeIdentityResponse, error) {
	if a.s.lifecycle == nil {
		return nil, errNoCA
	}
	sel, err := selector(req.GetIdentity(), a.s.cfg.PIV.PersonAttribute)
	if err != nil {
		return nil, err
	}
	serials, err := a.s.lifecycle.RevokeIdentity(ctx, sel, issuance.RevocationReason(req.GetReason()))
	if err != nil {
		return nil, err
	}
	return &credgwv1.RevokeIdentityResponse{RevokedSerials: serials}, nil
}

// TerminateIdentity records the PIV identity as terminated and revokes all
// its derived credentials (lifecycle.Terminate).
func (a *adminService) TerminateIdentity(ctx context.Context, req *credgwv1.TerminateIdentityRequest) (*credgwv1.TerminateIdentityResponse, error) {
	if a.s.lifecycle == nil {
		return nil, errNoCA
	}
	sel, err := selector(req.GetIdentity(), a.s.cfg.PIV.PersonAttribute)
	if err != nil {
		return nil, err
	}
	if len(req.GetComment()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "comment: at most 1024 bytes")
	}
	serials, err := a.s.lifecycle.Terminate(ctx, "admin", sel, req.GetComment(), "")
	if err != nil {
		return nil, err
	}
	return &credgwv1.TerminateIdentityResponse{RevokedSerials: serials}, nil
}

func (a *adminService) ForceCRL(ctx context.Context, _ *credgwv1.ForceCRLRequest) (*credgwv1.ForceCRLResponse, error) {
	if a.s.lifecycle == nil {
		return nil, errNoCA
	}
	n, this, next, err := a.s.lifecycle.ForceCRL(ctx)
	if err != nil {
		return nil, err
	}
	return &credgwv1.ForceCRLResponse{CrlNumber: n, ThisUpdate: timestamppb.New(this), NextUpdate: timestamppb.New(next)}, nil
}

// optionalSelector is selector, with no selector meaning everyone.
func optionalSelector(sel *credgwv1.PIVIdentitySelector, personAttr string) (store.IdentitySelector, error) {
	if sel.GetSelector() == nil {
		return store.IdentitySelector{}, nil
	}
	return selector(sel, personAttr)
}

// listArgs reads the identity selector (optional) and the paging of a list
// request.
func listArgs(id *credgwv1.PIVIdentitySelector, personAttr string, size int32, token string) (store.IdentitySelector, int, int, error) {
	sel, err := optionalSelector(id, personAttr)
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

// auditRead records an administrator's read of people's records (NIST
// SP 800-53 AU-2: access to personal data is an auditable event): which
// list, of whom, and how much it returned.
func (a *adminService) auditRead(ctx context.Context, method string, sel store.IdentitySelector, detail string) {
	who := sel.String()
	if who == "invalid" { // no selector: the list spans everyone
		who = "everyone"
	}
	a.s.audit.Record(ctx, store.AuditEvent{Actor: "admin", Action: "admin-read", PersonID: sel.PersonID, CardUUID: sel.CardUUID,
		Detail: "method=" + method + "; identity=" + who + "; " + detail})
}

// maxSetsPerPage bounds an admin page of credential sets, whatever
// page_size asks.
const maxSetsPerPage = 100

// ListCredentials lists credential sets, of one PIV identity or all,
// newest first.
func (a *adminService) ListCredentials(ctx context.Context, req *credgwv1.AdminListCredentialsRequest) (*credgwv1.AdminListCredentialsResponse, error) {
	sel, off, n, err := listArgs(req.GetIdentity(), a.s.cfg.PIV.PersonAttribute, req.GetPageSize(), req.GetPageToken())
	if err != nil || a.s.activation == nil {
		return &credgwv1.AdminListCredentialsResponse{}, err // no CA: nothing was issued
	}
	// A set carries its certificates: a page of at most maxSetsPerPage
	// stays far below the message limit (about 5 KB a set), and
	// next_page_token says where the rest begins.
	n = min(n, maxSetsPerPage)
	vs, err := a.s.activation.ListSets(ctx, sel, setStateNames[req.GetState()], off, n)
	if err != nil {
		return nil, err
	}
	a.auditRead(ctx, "ListCredentials", sel, fmt.Sprintf("page_token=%q; sets=%d", req.GetPageToken(), len(vs)))
	resp := &credgwv1.AdminListCredentialsResponse{CredentialSets: a.s.credentialSetsProto(vs)}
	for i, v := range vs {
		// Whose it is: an administrator's list spans people.
		resp.CredentialSets[i].PivIdentity = &credgwv1.PIVIdentity{PersonId: v.Set.PersonID, CardUuid: v.Set.CardUUID,
			Fascn: v.Set.FASCN, Upn: v.Set.UPN, Email: v.Set.Email, PivAuthSha256: v.Set.PIVCertSHA256}
	}
	if len(vs) == n {
		resp.NextPageToken = strconv.Itoa(off + n)
	}
	return resp, nil
}

// ListActivations lists activations, of one PIV identity or all, newest
// first.
func (a *adminService) ListActivations(ctx context.Context, req *credgwv1.ListActivationsRequest) (*credgwv1.ListActivationsResponse, error) {
	sel, off, n, err := listArgs(req.GetIdentity(), a.s.cfg.PIV.PersonAttribute, req.GetPageSize(), req.GetPageToken())
	if err != nil || a.s.activation == nil {
		return &credgwv1.ListActivationsResponse{}, err // no CA: nothing was issued
	}
	acts, err := a.s.activation.ListActivations(ctx, sel, actStateNames[req.GetState()], off, n)
	if err != nil {
		return nil, err
	}
	a.auditRead(ctx, "ListActivations", sel, fmt.Sprintf("page_token=%q; activations=%d", req.GetPageToken(), len(acts)))
	resp := &credgwv1.ListActivationsResponse{}
	for _, ac := range acts {
		resp.Activations = append(resp.Activations, activationProto(ac))
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
	if len(req.GetComment()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "comment: at most 1024 bytes")
	}
	ac, err := a.s.activation.Cancel(ctx, req.GetActivationId(), req.GetComment())
	if err != nil {
		return nil, err
	}
	return &credgwv1.CancelActivationResponse{Activation: activationProto(ac)}, nil
}

// activationProto is the API form of an activation.
func activationProto(ac store.Activation) *credgwv1.Activation {
	return &credgwv1.Activation{Id: ac.ID, CredentialSetId: ac.CredentialSetID, State: actStates[ac.State],
		FailedAttempts: int32(ac.FailedAttempts), AttemptsLeft: int32(max(0, ac.MaxAttempts-ac.FailedAttempts)),
		CreatedAt: timestamppb.New(ac.CreatedAt), ExpiresAt: timestamppb.New(ac.ExpiresAt)}
}
