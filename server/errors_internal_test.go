package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTemplateRefusalIsNoIncident: a profile template that refuses a
// request (its fail function) made a policy decision: FailedPrecondition
// with its message, not an Internal error hidden and logged as an
// incident.
func TestTemplateRefusalIsNoIncident(t *testing.T) {
	err := toStatus(fmt.Errorf("activation: issue: %w: no derived PIV for contractors", issuance.ErrRefused))
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "no derived PIV for contractors") {
		t.Fatalf("got %v %q, want FailedPrecondition with the template's message", st.Code(), st.Message())
	}
}

// TestDatabaseUnavailableHidesTheDatabase: an unreachable database is
// Unavailable to every caller (anonymous devices included), saying to
// retry, without the driver's text: it names the database's address,
// user and name. The operator's log has the cause.
func TestDatabaseUnavailableHidesTheDatabase(t *testing.T) {
	var logs strings.Builder
	s := &Server{log: NewLogger(&logs, "info")}
	cause := `failed to connect to ` + "`user=credgw database=credgw`" + `: 10.20.30.40:5432 (db.internal): dial error: connect: connection refused`
	err := fmt.Errorf("activation: redeem: %w", fmt.Errorf("%w: %s", store.ErrUnavailable, cause))
	st := status.Convert(s.mapError(context.Background(), "/credgw.v1.Redemption/Redeem", err))
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "try again") {
		t.Fatalf("%v %q, want Unavailable saying to try again", st.Code(), st.Message())
	}
	for _, leak := range []string{"10.20.30.40", "db.internal", "user=credgw", "database=credgw"} {
		if strings.Contains(st.Message(), leak) {
			t.Errorf("the client is told %q: %q", leak, st.Message())
		}
	}
	if !strings.Contains(logs.String(), "10.20.30.40:5432") {
		t.Errorf("the log lacks the cause: %s", logs.String())
	}
}

// TestKeyChangedIsUnavailable: a key on the HSM that is no longer the one
// the gateway opened (the token re-created or replaced) stops issuance
// until the operator acts, and issuance resumes when the key is back. The
// device is told Unavailable and what the operator must check, without the
// token's name; the operator's log has the cause at error level.
func TestKeyChangedIsUnavailable(t *testing.T) {
	for _, cause := range []error{
		fmt.Errorf("%w: private key with CKA_ID 01 labelled \"CA\" on token \"ca-token-7\" is no longer the key this signer was opened with", pkcs11.ErrKeyChanged),
		fmt.Errorf("issuance: unsealing escrowed key k1: %w", fmt.Errorf("%w: secret key on token \"ca-token-7\"", pkcs11.ErrKeyChanged)),
	} {
		var logs strings.Builder
		s := &Server{log: NewLogger(&logs, "info")}
		st := status.Convert(s.mapError(context.Background(), "/credgw.v1.Redemption/Redeem", fmt.Errorf("activation: redeem: %w", cause)))
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "HSM") || strings.Contains(st.Message(), "ca-token-7") {
			t.Errorf("%v %q, want Unavailable naming the HSM and not the token", st.Code(), st.Message())
		}
		if !strings.Contains(logs.String(), "ca-token-7") || !strings.Contains(logs.String(), `"level":"ERROR"`) {
			t.Errorf("the log lacks the cause at error level: %s", logs.String())
		}
	}
}

// TestInvalidTextIsTheCallers: an id with a NUL (proto3 lets NUL through;
// PostgreSQL's text refuses it) is InvalidArgument saying what is wrong,
// not an Internal incident.
func TestInvalidTextIsTheCallers(t *testing.T) {
	st := status.Convert(toStatus(fmt.Errorf("activation: redeem: %w", store.ErrInvalidText)))
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "NUL") {
		t.Fatalf("%v %q, want InvalidArgument naming the NUL", st.Code(), st.Message())
	}
}

// TestAuditUnavailableIsRetried: a key recovery whose audit event cannot
// be written is Unavailable with RetryInfo: the device retries and resumes
// the stored package once the log works.
func TestAuditUnavailableIsRetried(t *testing.T) {
	st := status.Convert(toStatus(fmt.Errorf("activation: redeem: %w", activation.ErrAuditUnavailable)))
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "retry") {
		t.Fatalf("%v %q, want Unavailable saying to retry", st.Code(), st.Message())
	}
	retry := false
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			retry = true
		}
	}
	if !retry {
		t.Error("no RetryInfo")
	}
}
