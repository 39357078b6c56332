package activation

import (
	"context"
	"strings"
	"testing"

	"github.com/credgw/credgw/store"
)

// TestRenewalConfirmedEndsTheOldSet: confirming a renewal and ending the
// set it renews were two steps; a process killed (or a store failing)
// between them left both sets active, both counting to the person's limit,
// with nothing to end the old one but the device's retry. The old set is
// now ended in the confirmation's own transaction, and the sweep revokes
// what it still holds.
func TestRenewalConfirmedEndsTheOldSet(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	current, req, d := rekeyed(t, h)
	renewal, err := h.st.CredentialSet(ctx, d.Manifest.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	// The confirmation commits, then its process dies.
	if err := h.st.Confirm(ctx, d.RedemptionID, h.clock()); err != nil {
		t.Fatal(err)
	}
	old, err := h.st.CredentialSet(ctx, renewal.RenewsSetID)
	if err != nil {
		t.Fatal(err)
	}
	if old.State != store.SetRevoked {
		t.Fatalf("the renewed set is %q after its renewal was confirmed, want revoked", old.State)
	}
	if _, err := h.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := h.st.CertificatesOfSet(ctx, old.ID)
	if err != nil || len(recs) == 0 {
		t.Fatalf("%d certificates (%v)", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("certificate %s of the renewed set is still good", r.Serial)
		}
	}
	// The device's retry of the confirmation gets its answer, and the
	// person is told of the renewal and its key delivery (the process
	// died before telling; the retry answered without telling before).
	for range 2 {
		if _, err := h.svc.ConfirmRekey(ctx, current, d.RedemptionID, req.Secret, d.SHA256); err != nil {
			t.Errorf("the device's retry: %v", err)
		}
	}
	ns, err := h.st.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	told := map[string]int{}
	for _, n := range ns {
		if strings.Contains(n.Body, renewal.ID) {
			told[n.Kind]++
		}
	}
	if told["binding"] != 1 || told["key-delivery"] != 1 {
		t.Errorf("the renewal's notices %v, want one binding and one key-delivery", told)
	}
}
