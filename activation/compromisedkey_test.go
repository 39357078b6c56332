package activation

import (
	"context"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/issuance"
)

// TestCompromisedKeyMarkedInTheHistory: a key whose certificate was
// revoked for key compromise (a lost phone) is still delivered in the key
// history (old mail needs it), but it went out named like any other: the
// person and the device could not tell it must not be trusted for new
// mail. Its friendly name now says so.
func TestCompromisedKeyMarkedInTheHistory(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	first := h.install(t, h.enroll(t, alice))
	if _, err := h.svc.RevokeSet(ctx, alice.PersonID, first.Manifest.GetCredentialSetId(), issuance.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	second := h.install(t, h.enroll(t, h.again(alice)))
	if _, err := h.svc.RevokeSet(ctx, alice.PersonID, second.Manifest.GetCredentialSetId(), issuance.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	e := h.enroll(t, h.again(alice))
	d, err := h.svc.Redeem(ctx, e.request(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := code.ParsePackage(d.Package)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := code.NormalizePassword(e.en.Password)
	p12pw, _ := code.PKCS12Password(e.payload.Secret, pw)
	entries, _, err := pfx.Decode(pkg.Named("encryption.p12").GetData(), p12pw)
	if err != nil || len(entries) != 3 {
		t.Fatalf("%d keys (%v), want 3", len(entries), err)
	}
	compromised := ""
	for _, it := range first.Manifest.GetItems() {
		if it.GetName() == "encryption.p12" {
			compromised = it.GetSerial()
		}
	}
	for i, e := range entries {
		want := e.Certificate.SerialNumber.Text(16) == compromised
		if got := strings.HasSuffix(e.FriendlyName, code.CompromisedMark); got != want {
			t.Errorf("key %d %q: marked %v, want %v", i, e.FriendlyName, got, want)
		}
	}
}
