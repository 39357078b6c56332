package activation

import (
	"fmt"
	"testing"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
)

// TestRefusedRequest: what the request is or asks for is audited as a
// refusal; what the gateway failed to do is audited as a failure.
func TestRefusedRequest(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("issue: %w: no derived PIV for contractors", issuance.ErrRefused), true},
		{fmt.Errorf("issue: %w", issuance.ErrNoEmail), true},
		{fmt.Errorf("issue: %w", issuance.ErrBadRequest), true},
		{fmt.Errorf("card: %w", piv.ErrRevoked), true},
		{fmt.Errorf("issue: %w", issuance.ErrLint), false},
		{fmt.Errorf("store: connection refused"), false},
	} {
		if got := refusedRequest(tc.err); got != tc.want {
			t.Errorf("refusedRequest(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
