package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
	"time"
)

// TestUntrustedPathNotRebuilt: a chain that does not verify costs one path
// build, not one per call. The TLS client chain is the caller's (a leaf and
// any intermediates it likes, named as the trusted CA), and every call on
// its connection is identified before any rate limit: before, each call
// rebuilt the path (up to 100 signature checks by crypto/x509's bound).
// More intermediates than any real PIV path has are refused unbuilt.
func TestUntrustedPathNotRebuilt(t *testing.T) {
	pki := newTestPKI(t, time.Now())
	issue, ca := pki.issue, pki.selfSignedCA
	root, _ := ca("the trusted root")
	fake, fakeKey := ca("the trusted root") // the same name, another key
	cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	authOID, _ := x509.OIDFromASN1OID(PolicyCommonAuthentication)
	card := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "a card of its own making"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{authOID}}, fake, cardKey.Public(), fakeKey)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	v, err := NewVerifier(Options{Roots: roots, OCSPTimeout: time.Second, CRLTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := v.VerifyPIVAuth(ctx, card, []*x509.Certificate{fake}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("call %d: %v, want ErrUntrusted", i+1, err)
		}
	}
	if n := v.pathBuilds.Load(); n != 1 {
		t.Fatalf("5 calls with one untrusted chain built the path %d times, want 1", n)
	}
	many := make([]*x509.Certificate, maxPresentedIntermediates+1)
	for i := range many {
		many[i], _ = ca("the trusted root")
	}
	if _, err := v.VerifyPIVAuth(ctx, card, many); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d intermediates: %v, want ErrMalformed", len(many), err)
	}
	if _, err := v.VerifyDigitalSignature(ctx, card, card, many); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d intermediates with a Digital Signature certificate: %v, want ErrMalformed", len(many), err)
	}
	if n := v.pathBuilds.Load(); n != 1 {
		t.Fatalf("too many intermediates were built into paths (%d builds)", n)
	}
}
