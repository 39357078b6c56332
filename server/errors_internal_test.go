package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
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
