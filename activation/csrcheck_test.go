package activation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/credgw/credgw/issuance"
)

// TestBadCSRRefusedBeforeIssuing: a device CSR the CA refuses (a key type
// or size not allowed, a signature not by its key, the key of another
// profile) is refused before anything is issued. Before, the CA found it
// while the set's other certificates were signed beside it: each refused
// request left signed, recorded and revoked certificates (the escrowed
// key's among them) and gave the code back, so one code could fill the
// CRL without limit.
func TestBadCSRRefusedBeforeIssuing(t *testing.T) {
	p521 := func(t *testing.T) *x509.CertificateRequest {
		k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificateRequest(der)
		return c
	}
	// A key credgw certified before (another person's device's).
	var certified *x509.CertificateRequest
	for _, tc := range []struct {
		name string
		bad  func(t *testing.T, csrs map[issuance.Profile]*x509.CertificateRequest)
	}{
		{"a key certified before", func(t *testing.T, csrs map[issuance.Profile]*x509.CertificateRequest) {
			csrs[issuance.DigitalSignature] = certified
		}},
		{"a P-521 key", func(t *testing.T, csrs map[issuance.Profile]*x509.CertificateRequest) {
			csrs[issuance.DigitalSignature] = p521(t)
		}},
		{"a signature not by the CSR's key", func(t *testing.T, csrs map[issuance.Profile]*x509.CertificateRequest) {
			c := *csrs[issuance.DigitalSignature]
			sig := append([]byte(nil), c.Signature...)
			sig[len(sig)-1] ^= 1
			c.Signature = sig
			csrs[issuance.DigitalSignature] = &c
		}},
		{"one key for two profiles", func(t *testing.T, csrs map[issuance.Profile]*x509.CertificateRequest) {
			csrs[issuance.DigitalSignature] = csrs[issuance.DerivedPIVAuth]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			ctx := context.Background()
			other := h.enroll(t, h.signIn(t, "other@example.gov")).request(t)
			if _, err := h.svc.Redeem(ctx, other, nil); err != nil {
				t.Fatal(err)
			}
			certified = other.CSRs[issuance.DigitalSignature]
			e := h.enroll(t, h.signIn(t, "a@example.gov"))
			req := e.request(t)
			tc.bad(t, req.CSRs)
			_, err := h.svc.Redeem(ctx, req, nil)
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, issuance.ErrBadRequest) {
				t.Fatalf("got %v, want the CSR refused as invalid", err)
			}
			// The agent makes new keys on this one (the gRPC status's
			// KEY_CERTIFIED_BEFORE detail).
			if reused := errors.Is(err, issuance.ErrKeyReused); reused != (tc.name == "a key certified before") {
				t.Errorf("ErrKeyReused: %v for %v", reused, err)
			}
			if recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID); err != nil || len(recs) != 0 {
				t.Fatalf("%d certificates signed for a refused request (%v), want none", len(recs), err)
			}
			if d, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil || d == nil {
				t.Fatalf("the corrected request: %v", err)
			}
		})
	}
}
