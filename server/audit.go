package server

import (
	"context"
	"encoding/hex"
	"fmt"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ReadAuditLog pages through the audit log in order.
func (a *adminService) ReadAuditLog(ctx context.Context, req *credgwv1.ReadAuditLogRequest) (*credgwv1.ReadAuditLogResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > 1000:
		return nil, status.Error(codes.InvalidArgument, "page_size: 1 to 1000 (0: 100)")
	case size == 0:
		size = 100
	}
	evs, err := a.s.audit.Events(ctx, req.GetAfterSequence(), size, req.GetPersonId())
	if err != nil {
		return nil, err
	}
	sel := store.IdentitySelector{PersonID: req.GetPersonId()}
	a.auditRead(ctx, "ReadAuditLog", sel, fmt.Sprintf("after_sequence=%d; events=%d", req.GetAfterSequence(), len(evs)))
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
