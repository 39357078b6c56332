package activation

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/attest"
	"github.com/credgw/credgw/activation/code"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// TestAttestationRefusals: each attestation refusal has its kind (the
// transport's code) and a message naming the key and what is wrong, and
// leaves the activation pending with no attempt counted, so the device can
// redeem again; a verified attestation is recorded on the set and in the
// audit event of the redemption.
func TestAttestationRefusals(t *testing.T) {
	vendor, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.Attest = &attest.Policy{Roots: []*x509.Certificate{vendor.Root}, RequireVerifiedBoot: true, RequireDeviceLocked: true}
	})
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "attested@example.gov"))
	challenge := code.AttestationChallenge(e.payload.Secret, e.payload.ID)
	tee := hsmsim.AttestOptions{Level: attest.TrustedEnvironment}
	with := func(v *hsmsim.Vendor, ch []byte, o hsmsim.AttestOptions, keyOf issuance.Profile) RedeemRequest {
		t.Helper()
		req := e.request(t)
		chain, err := v.Attest(req.CSRs[keyOf].PublicKey, ch, o)
		if err != nil {
			t.Fatal(err)
		}
		req.Attestations = map[issuance.Profile]Attestation{issuance.DerivedPIVAuth: {Format: attest.FormatAndroidKey, Chain: chain}}
		return req
	}
	for _, tc := range []struct {
		name string
		req  RedeemRequest
		want error
		msg  string
	}{
		{"software keystore", with(vendor, challenge, hsmsim.AttestOptions{Level: attest.Software}, issuance.DerivedPIVAuth), ErrPermission, "security level Software"},
		{"wrong challenge", with(vendor, code.AttestationChallenge(e.payload.Secret, "another-activation"), tee, issuance.DerivedPIVAuth), ErrPermission, "challenge"},
		{"key mismatch", with(vendor, challenge, tee, issuance.DigitalSignature), ErrInvalid, "not the key of the certificate request"},
		{"untrusted root", with(stranger, challenge, tee, issuance.DerivedPIVAuth), ErrPermission, "attestation root"},
		{"unlocked device", with(vendor, challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, Unlocked: true}, issuance.DerivedPIVAuth), ErrPermission, "unlocked"},
		{"malformed extension", with(vendor, challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, Extension: []byte{0x05, 0x00}}, issuance.DerivedPIVAuth), ErrInvalid, "malformed"},
		{"unknown format", func() RedeemRequest {
			r := with(vendor, challenge, tee, issuance.DerivedPIVAuth)
			a := r.Attestations[issuance.DerivedPIVAuth]
			a.Format = "apple-mda"
			r.Attestations[issuance.DerivedPIVAuth] = a
			return r
		}(), ErrInvalid, "android-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.svc.Redeem(ctx, tc.req, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), string(issuance.DerivedPIVAuth)) {
				t.Fatalf("got %v, want %v mentioning %q and the key", err, tc.want, tc.msg)
			}
			a, err := h.st.ActivationByID(ctx, e.payload.ID)
			if err != nil || a.State != store.ActPending || a.FailedAttempts != 0 {
				t.Fatalf("the activation is %s with %d failed attempts, want pending with none (%v)", a.State, a.FailedAttempts, err)
			}
		})
	}

	// The device tries again with a good attestation: issued, and the
	// verdict is on the set and in the audit event.
	d, err := h.svc.Redeem(ctx, with(vendor, challenge, hsmsim.AttestOptions{Level: attest.StrongBox}, issuance.DerivedPIVAuth), nil)
	if err != nil {
		t.Fatalf("a good attestation after the refusals: %v", err)
	}
	cs, err := h.st.CredentialSet(ctx, d.Manifest.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cs.Attestation, `"derived-piv-auth"`) || !strings.Contains(cs.Attestation, `"security_level":"StrongBox"`) ||
		!strings.Contains(cs.Attestation, `"chain":["`) {
		t.Errorf("stored verdict %s", cs.Attestation)
	}
	evs, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, "attestation=derived-piv-auth:StrongBox/Verified/locked=true") {
			found = true
		}
	}
	if !found {
		t.Errorf("no redeem audit event with the attestation verdict")
	}
}

// TestRefuseUnattested: with attestation.unattested: refuse, a device key
// without an attestation is refused and the activation stays pending.
func TestRefuseUnattested(t *testing.T) {
	vendor, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.Attest = &attest.Policy{Roots: []*x509.Certificate{vendor.Root}}
		c.RefuseUnattested = true
	})
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "unattested@example.gov"))
	req := e.request(t)
	if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "attest") {
		t.Fatalf("unattested: got %v, want ErrPermission", err)
	}
	if a, _ := h.st.ActivationByID(ctx, e.payload.ID); a.State != store.ActPending {
		t.Fatalf("the activation is %s, want pending", a.State)
	}
	challenge := code.AttestationChallenge(e.payload.Secret, e.payload.ID)
	req.Attestations = map[issuance.Profile]Attestation{}
	for p, csr := range req.CSRs {
		chain, err := vendor.Attest(csr.PublicKey, challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment})
		if err != nil {
			t.Fatal(err)
		}
		req.Attestations[p] = Attestation{Format: attest.FormatAndroidKey, Chain: chain}
	}
	if _, err := h.svc.Redeem(ctx, req, nil); err != nil {
		t.Fatalf("every key attested: %v", err)
	}
}
