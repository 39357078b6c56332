package piv_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
)

// TestSetTrust: a reload replaces the trust anchors and intermediates at
// once, and a path built under the old ones is not reused.
func TestSetTrust(t *testing.T) {
	cert := newCard(t, hsmsim.Good, pkcs11.ECP256, "")
	v := newVerifier(t, nil)
	ctx := context.Background()
	if _, err := v.VerifyPIVAuth(ctx, cert, nil); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	// Anchors that do not hold the card's root: the cached path must not
	// carry the card through.
	if err := v.SetTrust(x509.NewCertPool(), nil); err != nil {
		t.Fatalf("SetTrust: %v", err)
	}
	if _, err := v.VerifyPIVAuth(ctx, cert, nil); !errors.Is(err, piv.ErrUntrusted) {
		t.Fatalf("after removing the anchor: err = %v, want ErrUntrusted", err)
	}
	// Back to the card's root, but without the intermediate: the card
	// sends none, so the path cannot be built.
	if err := v.SetTrust(env.TrustPool(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyPIVAuth(ctx, cert, nil); !errors.Is(err, piv.ErrUntrusted) {
		t.Fatalf("without the intermediate: err = %v, want ErrUntrusted", err)
	}
	if err := v.SetTrust(env.TrustPool(), []*x509.Certificate{env.IssuingCA()}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyPIVAuth(ctx, cert, nil); err != nil {
		t.Fatalf("with anchor and intermediate again: %v", err)
	}
	if err := v.SetTrust(nil, nil); err == nil {
		t.Error("SetTrust accepted no anchors")
	}
}
