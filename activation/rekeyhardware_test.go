package activation

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/credgw/credgw/activation/attest"
	"github.com/credgw/credgw/activation/code"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// attestingHarness is a harness whose gateway verifies attestations by a
// simulated vendor (verified boot and a locked device required).
func attestingHarness(t *testing.T) (*harness, *hsmsim.Vendor) {
	t.Helper()
	vendor, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.Attest = &attest.Policy{Roots: []*x509.Certificate{vendor.Root}, RequireVerifiedBoot: true, RequireDeviceLocked: true}
	})
	return h, vendor
}

// TestRekeyKeepsTheAssuranceItRenews: a renewal is authenticated by the
// current derived PIV Authentication key, so it can vouch for no more than
// that key was. A set issued at …3.40 (no attested hardware key) re-keyed
// with a new key attested in some hardware keystore was issued …3.41: a
// copied software credential became AAL3 on the copier's own phone, where
// Common Policy §3.3.1 asks for a new initial registration when a
// hardware credential's key moves to another module. …3.41 now needs the
// renewed certificate to assert it too (TestRekeyAttested in server has
// the hardware-to-hardware renewal).
func TestRekeyKeepsTheAssuranceItRenews(t *testing.T) {
	h, vendor := attestingHarness(t)
	var mu sync.Mutex
	hw := map[issuance.Profile]bool{}
	h.issuer.afterIssue = func(r issuance.Request) { mu.Lock(); hw[r.Profile] = r.HardwareBacked; mu.Unlock() }
	current := renewable(t, h) // redeemed without an attestation: …3.40
	req := rekeyRequest(t, current)
	challenge := code.AttestationChallenge(req.Secret, code.RekeyAttestationContext(NormalizeSerial(current.SerialNumber.Text(16))))
	for _, c := range req.CSRs {
		if c.GetProfile() != credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
			continue
		}
		csr, err := x509.ParseCertificateRequest(c.GetCsrDer())
		if err != nil {
			t.Fatal(err)
		}
		chain, err := vendor.Attest(csr.PublicKey, challenge, hsmsim.AttestOptions{Level: attest.StrongBox})
		if err != nil {
			t.Fatal(err)
		}
		c.Attestation = &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}
	}
	d, err := h.svc.Rekey(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hw[issuance.DerivedPIVAuth] {
		t.Error("a …3.40 set re-keyed with an attested key was issued as hardware-backed (…3.41)")
	}
	// The attestation is still recorded as it verified.
	if d.Attestation == "" || d.Attestation == "attestation=none" {
		t.Errorf("the renewal's attestation verdict is %q", d.Attestation)
	}
}

// TestRekeyAttestationRefusalRecorded: a renewal refused for its key
// attestation (here a challenge made for another renewal) left no audit
// event, where a redemption's refusal leaves one: a thief trying leaked
// attestation keys or unlocked phones with a stolen credential went
// unrecorded.
func TestRekeyAttestationRefusalRecorded(t *testing.T) {
	h, vendor := attestingHarness(t)
	ctx := context.Background()
	current := renewable(t, h)
	req := rekeyRequest(t, current)
	for _, c := range req.CSRs {
		csr, err := x509.ParseCertificateRequest(c.GetCsrDer())
		if err != nil {
			t.Fatal(err)
		}
		chain, err := vendor.Attest(csr.PublicKey, []byte("made for another renewal"), hsmsim.AttestOptions{Level: attest.TrustedEnvironment})
		if err != nil {
			t.Fatal(err)
		}
		c.Attestation = &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}
	}
	if _, err := h.svc.Rekey(ctx, req, nil); !errors.Is(err, ErrPermission) {
		t.Fatalf("got %v, want ErrPermission", err)
	}
	evs, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Action == "rekey" && e.Outcome == "refused" && strings.Contains(e.Detail, "challenge") {
			return
		}
	}
	t.Error("no refused rekey event naming the attestation's problem")
}
