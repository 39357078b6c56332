package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/credgw/credgw/issuance"
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
