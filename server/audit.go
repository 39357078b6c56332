package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/credgw/credgw/activation"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// audit appends an event to the hash-chained audit log. The operation it
// records has happened, so a failed append does not undo it: it is logged
// as an error and counted, for the operator to look into.
func (s *Server) audit(ctx context.Context, e store.AuditEvent) {
	e.At = s.now()
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	if _, err := s.store.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit: append failed", "action", e.Action, "person_id", e.PersonID, "cause", err.Error())
	}
}

// auditSet records an action on a credential set with its serials.
func (s *Server) auditSet(ctx context.Context, actor, action, setID, detail string) {
	e := store.AuditEvent{Actor: actor, Action: action, Detail: "credential_set_id=" + setID}
	if detail != "" {
		e.Detail += "; " + detail
	}
	if cs, err := s.store.CredentialSet(ctx, setID); err == nil {
		e.PersonID, e.CardUUID = cs.PersonID, cs.CardUUID
		if e.Actor == "" {
			e.Actor = "piv:" + cs.PersonID
		}
	}
	if recs, err := s.store.CertificatesOfSet(ctx, setID); err == nil {
		for _, r := range recs {
			e.Serials = append(e.Serials, r.Serial)
		}
	}
	s.audit(ctx, e)
}

// auditRedeemRefusal records wrong passwords and lockouts.
func (s *Server) auditRedeemRefusal(ctx context.Context, activationID string, err error) {
	var wrong *activation.WrongPasswordError
	outcome := ""
	switch {
	case errors.As(err, &wrong):
		outcome = fmt.Sprintf("wrong password (%d attempts left)", wrong.AttemptsLeft)
	case errors.Is(err, activation.ErrLocked):
		outcome = "locked"
	case errors.Is(err, activation.ErrTerminated):
		outcome = "terminated"
	default:
		return
	}
	a, aerr := s.store.ActivationByID(ctx, activationID)
	if aerr != nil {
		return // an unknown id: nothing to attach it to
	}
	s.auditSet(ctx, "device", "redeem", a.CredentialSetID, "activation_id="+activationID+"; refused: "+outcome)
	if errors.Is(err, activation.ErrLocked) || (wrong != nil && wrong.AttemptsLeft == 0) {
		s.notifySet(ctx, "lockout", a.CredentialSetID, "A derived credential code was locked",
			"Too many wrong passwords were typed for your activation code; it is locked and nothing was issued. Sign in with your card to enroll again.")
	}
}

// ReadAuditLog pages through the audit log in order.
func (a *adminService) ReadAuditLog(ctx context.Context, req *credgwv1.ReadAuditLogRequest) (*credgwv1.ReadAuditLogResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > 1000:
		return nil, status.Error(codes.InvalidArgument, "page_size: 1 to 1000 (0: 100)")
	case size == 0:
		size = 100
	}
	evs, err := a.s.store.AuditEvents(ctx, req.GetAfterSequence(), size, req.GetPersonId())
	if err != nil {
		return nil, err
	}
	resp := &credgwv1.ReadAuditLogResponse{NextSequence: req.GetAfterSequence()}
	for _, e := range evs {
		resp.Events = append(resp.Events, AuditEventProto(e))
		resp.NextSequence = e.Seq
	}
	return resp, nil
}

// AuditEventProto is the API form of an audit event.
func AuditEventProto(e store.AuditEvent) *credgwv1.AuditEvent {
	prev, _ := hex.DecodeString(e.PrevHash)
	h, _ := hex.DecodeString(e.Hash)
	return &credgwv1.AuditEvent{Sequence: e.Seq, Time: timestamppb.New(e.At), Type: e.Action, Actor: e.Actor, Outcome: e.Outcome,
		PersonId: e.PersonID, CardUuid: e.CardUUID, Serials: e.Serials, SourceAddress: e.Source, Details: e.Detail,
		PreviousHash: prev, Hash: h}
}

func auditIdentity(actor, action string, sel store.IdentitySelector, serials []string, detail string) store.AuditEvent {
	e := store.AuditEvent{Actor: actor, Action: action, PersonID: sel.PersonID, CardUUID: sel.CardUUID, Serials: serials,
		Detail: "identity=" + sel.String()}
	if detail != "" {
		e.Detail += "; " + detail
	}
	return e
}

// undelivered records and reports a package the device never confirmed: the
// escrowed-key delivery failed, and what it carried is revoked.
func (s *Server) undelivered(ctx context.Context, setID string) {
	s.auditSet(ctx, "system", "undelivered", setID, "not confirmed in time; its certificates are revoked")
	s.notifySet(ctx, "key-delivery", setID, "Delivery of your derived credentials failed",
		"A device downloaded your derived credentials and escrowed encryption keys but never confirmed installing them, so they were revoked. Sign in with your card and enroll again.")
}
