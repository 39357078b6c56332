package activation

import (
	"context"
	"errors"
	"testing"
)

// TestRekeyResumedBySecret: the redemption id reaches the device in the
// stream's first answer. A renewal whose answer was lost (a connection cut
// once its package was stored) was refused as "in progress" when the
// device sent its request again without it, and so was a new renewal,
// until the confirmation window passed. The same request (same secret,
// same device keys) now resumes it; another secret is still refused while
// it is in progress.
func TestRekeyResumedBySecret(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	current, req, first := rekeyed(t, h)
	// Lost on the way: the device never saw first.RedemptionID.
	again, err := h.svc.Rekey(ctx, req, nil)
	if err != nil {
		t.Fatalf("the device's request again: %v", err)
	}
	if !again.Resumed || again.RedemptionID != first.RedemptionID || string(again.SHA256) != string(first.SHA256) {
		t.Fatalf("resumed %v, redemption %s (first %s): want the first package again", again.Resumed, again.RedemptionID, first.RedemptionID)
	}
	other := rekeyRequest(t, current)
	if _, err := h.svc.Rekey(ctx, other, nil); !errors.Is(err, ErrRenewalInProgress) {
		t.Fatalf("another secret while the renewal waits: %v, want ErrRenewalInProgress", err)
	}
	wrong := req
	wrong.Password = "13572468"
	if _, err := h.svc.Rekey(ctx, wrong, nil); err == nil {
		t.Fatal("the same secret with a wrong password resumed the renewal")
	}
	if _, err := h.svc.ConfirmRekey(ctx, current, again.RedemptionID, req.Secret, again.SHA256); err != nil {
		t.Fatalf("confirming the resumed renewal: %v", err)
	}
}
